"""RoboVLMs checkpoint import: a generated checkpoint in RoboVLMs' exact key layout goes through
`import_checkpoint`, and the imported `VLAPolicy` must match an independent step-by-step
computation from the raw checkpoint tensors."""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_ros.policy.config import HEAD_FILE, PolicyConfig
from vla_ros.policy.robovlms import backbone_key_to_hf, import_checkpoint, read_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")

WINDOW = 3
CHUNK = 4
LSTM_HIDDEN = 24
LSTM_LAYERS = 2
MLP_HIDDEN = (20, 16, 12)
NORM_MIN, NORM_MAX = -0.4, 0.9
INSTRUCTION = "  pick up the red cup and put it in the bowl "


def to_hf444(name: str) -> str:
    """Installed transformers PaliGemma name -> the transformers 4.44 name RoboVLMs saved."""
    for new, old in (
        ("model.language_model.", "language_model.model."),
        ("model.vision_tower.", "vision_tower.vision_model."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("lm_head.", "language_model.lm_head."),
    ):
        if name.startswith(new):
            return old + name[len(new) :]
    raise AssertionError(f"unexpected installed name {name}")


def robovlms_config(**changes: object) -> dict:
    """A config in the shape of RoboVLMs' finetune_paligemma_cont-lstm-post_* JSON files."""
    config = {
        "robovlm_name": "RoboPaligemma",
        "model": "paligemma",
        "window_size": WINDOW,
        "fwd_pred_next_n": CHUNK,
        "use_hand_rgb": False,
        "use_vision_resampler": False,
        "act_head": {
            "type": "LSTMDecoder",
            "hidden_size": LSTM_HIDDEN,
            "num_layers": LSTM_LAYERS,
            "action_dim": 7,
            "down_sample": "none",
            "latent": 1,
            # RoboVLMs overrides these two with the top-level values.
            "fwd_pred_next_n": 1,
            "window_size": 1,
            "action_space": "continuous",
            "with_history": True,
            "history_type": "post",
        },
        "fwd_head": None,
        "vlm": {"type": "PaliGemmaForConditionalGeneration", "name": "paligemma"},
        "norm_action": True,
        "norm_min": NORM_MIN,
        "norm_max": NORM_MAX,
    }
    for key, value in changes.items():
        if key.startswith("act_head."):
            config["act_head"][key.split(".", 1)[1]] = value
        else:
            config[key] = value
    return config


def random_mlp(prefix: str, sizes: list[int], gen: torch.Generator) -> dict[str, torch.Tensor]:
    tensors = {}
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        weight = torch.randn(fan_out, fan_in, generator=gen) * (1.5 / math.sqrt(fan_in))
        tensors[f"{prefix}.{2 * layer}.weight"] = weight
        tensors[f"{prefix}.{2 * layer}.bias"] = torch.randn(fan_out, generator=gen) * 0.1
    return tensors


@dataclass
class Source:
    root: Path
    backbone_dir: Path
    ckpt: Path
    config: Path
    state: dict[str, torch.Tensor]
    reference: object  # the perturbed HF model in installed names, eager attention


@pytest.fixture(scope="module")
def source(tiny_arm_model_dir, tmp_path_factory) -> Source:
    from transformers import PaliGemmaForConditionalGeneration

    root = tmp_path_factory.mktemp("robovlms")
    reference = PaliGemmaForConditionalGeneration.from_pretrained(
        tiny_arm_model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        # The checkpoint's backbone differs from backbone_dir's, so importing must replace it.
        for param in reference.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    hidden = reference.config.text_config.hidden_size

    state = {
        f"model.backbone.{to_hf444(key)}": value.clone()
        for key, value in reference.state_dict().items()
    }
    lstm = torch.nn.LSTM(hidden, LSTM_HIDDEN, num_layers=LSTM_LAYERS, batch_first=True)
    with torch.no_grad():
        for param in lstm.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    state.update({f"model.act_head.rnn.{k}": v.clone() for k, v in lstm.state_dict().items()})
    sizes = [LSTM_HIDDEN, *MLP_HIDDEN]
    state.update(random_mlp("model.act_head.actions.mlp", [*sizes, CHUNK * 6], gen))
    state.update(random_mlp("model.act_head.gripper.mlp", [*sizes, CHUNK], gen))
    state["model.action_token"] = torch.randn(hidden, generator=gen)

    ckpt = root / "epoch=4-step=1000.ckpt"
    torch.save(
        {
            "epoch": 4,
            "global_step": 1000,
            "state_dict": state,
            "hyper_parameters": {"configs": robovlms_config()},
        },
        ckpt,
    )
    config = root / "finetune_paligemma_cont-lstm-post_tiny.json"
    config.write_text(json.dumps(robovlms_config()), encoding="utf-8")
    return Source(root, tiny_arm_model_dir, ckpt, config, state, reference)


@pytest.fixture(scope="module")
def imported(source) -> Path:
    return import_checkpoint(source.ckpt, source.config, source.backbone_dir, source.root / "out")


def write_variant(source: Source, name: str, state: dict | None = None, **config_changes) -> tuple:
    """A modified copy of the checkpoint and/or config, for the error cases."""
    ckpt = source.ckpt
    if state is not None:
        ckpt = source.root / f"{name}.ckpt"
        torch.save({"state_dict": state}, ckpt)
    config = source.config
    if config_changes:
        config = source.root / f"{name}.json"
        config.write_text(json.dumps(robovlms_config(**config_changes)), encoding="utf-8")
    return ckpt, config


# --- the imported directory -------------------------------------------------------------------


def test_imported_directory_has_policy_yaml_and_exact_head_keys(source, imported):
    from safetensors.torch import load_file

    names = {p.name for p in imported.iterdir()}
    assert {"config.json", "model.safetensors", "policy.yaml", HEAD_FILE} <= names
    assert {"tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"} <= names
    assert not list(source.root.glob(".out.*")), "staging directory left behind"

    config = PolicyConfig.load(imported)
    assert config.action_space == "arm7"
    assert config.hidden_size == source.reference.config.text_config.hidden_size
    assert (config.window, config.chunk) == (WINDOW, CHUNK)
    assert (config.lstm_hidden, config.lstm_layers) == (LSTM_HIDDEN, LSTM_LAYERS)
    assert config.mlp_hidden == MLP_HIDDEN
    assert config.action_min == (NORM_MIN,) * 6
    assert config.action_max == (NORM_MAX,) * 6
    assert config.history_mode == "window"
    assert config.model_id == "robovlms/finetune_paligemma_cont-lstm-post_tiny"

    head = load_file(str(imported / HEAD_FILE))
    expected = {"action_token"}
    for layer in range(LSTM_LAYERS):
        expected |= {
            f"head.rnn.{w}_l{layer}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        }
    for part in ("motion", "gripper"):
        expected |= {f"head.{part}.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")}
    assert set(head) == expected
    assert torch.equal(head["action_token"], source.state["model.action_token"])
    assert torch.equal(
        head["head.rnn.weight_hh_l1"], source.state["model.act_head.rnn.weight_hh_l1"]
    )
    assert torch.equal(
        head["head.motion.6.bias"], source.state["model.act_head.actions.mlp.6.bias"]
    )
    assert torch.equal(
        head["head.gripper.4.weight"], source.state["model.act_head.gripper.mlp.4.weight"]
    )
    tokenizer = (imported / "tokenizer.json").read_bytes()
    assert tokenizer == (source.backbone_dir / "tokenizer.json").read_bytes()


def test_every_backbone_tensor_lands_under_its_installed_name(source, imported):
    from transformers import PaliGemmaForConditionalGeneration

    loaded = PaliGemmaForConditionalGeneration.from_pretrained(imported, dtype=torch.float32)
    original = PaliGemmaForConditionalGeneration.from_pretrained(
        source.backbone_dir, dtype=torch.float32
    )
    expected = source.reference.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key
        assert not torch.equal(value, original.state_dict()[key]), (
            f"{key} kept backbone_dir's weights"
        )


def test_backbone_names_map_from_every_transformers_layout(source):
    installed = list(source.reference.state_dict())
    for key in installed:
        assert backbone_key_to_hf(to_hf444(key)) == key
        assert backbone_key_to_hf(key) == key
    assert (
        backbone_key_to_hf("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight")
        == "model.vision_tower.encoder.layers.0.mlp.fc1.weight"
    )
    assert backbone_key_to_hf("language_model.lm_head.weight") == "lm_head.weight"
    with pytest.raises(ValueError, match=r"text_tower\.layers\.0\.weight"):
        backbone_key_to_hf("text_tower.layers.0.weight")


@pytest.mark.parametrize("layout", ["bare", "deepspeed_module", "deepspeed_dir"])
def test_checkpoint_containers_all_yield_the_same_tensors(source, layout):
    if layout == "bare":
        path = source.root / "bare.pt"
        torch.save(source.state, path)
    elif layout == "deepspeed_module":
        path = source.root / "module.pt"
        torch.save({"module": {f"_forward_module.{k}": v for k, v in source.state.items()}}, path)
    else:
        path = source.root / "ds.ckpt"
        (path / "checkpoint").mkdir(parents=True, exist_ok=True)
        torch.save({"module": source.state}, path / "checkpoint" / "mp_rank_00_model_states.pt")
    tensors = read_checkpoint(path)
    assert set(tensors) == {k.removeprefix("model.") for k in source.state}
    assert torch.equal(tensors["action_token"], source.state["model.action_token"])


# --- numerical equivalence with an independent computation ------------------------------------


def lstm_layer_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = gates.chunk(4)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class ReferenceHead:
    """RoboVLMs' LSTMDecoder inference memory, written with plain tensor ops."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.s = {k.removeprefix("model.act_head."): v for k, v in state.items()}
        self.history: list[torch.Tensor] = []
        self.carried: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _zero(self):
        zero = torch.zeros(LSTM_HIDDEN)
        return [(zero, zero) for _ in range(LSTM_LAYERS)]

    def _advance(self, x, state):
        new = []
        for layer, (h, c) in enumerate(state):
            p = {
                n: self.s[f"rnn.{n}_l{layer}"]
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            }
            h, c = lstm_layer_step(
                x, h, c, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
            )
            new.append((h, c))
            x = h
        return x, new

    def _mlp(self, name, x):
        for index in (0, 2, 4, 6):
            x = x @ self.s[f"{name}.mlp.{index}.weight"].T + self.s[f"{name}.mlp.{index}.bias"]
            if index != 6:
                x = torch.relu(x)
        return x

    def step(self, feature):
        self.history.append(feature)
        if len(self.history) <= WINDOW:
            out, self.carried = self._advance(feature, self.carried or self._zero())
        else:
            self.history.pop(0)
            self.carried = None
            state = self._zero()
            for past in self.history:
                out, state = self._advance(past, state)
        motion = torch.tanh(self._mlp("actions", out)).reshape(CHUNK, 6)
        return motion, self._mlp("gripper", out)


@functools.cache
def text_and_image_processors(backbone_dir: Path) -> tuple:
    from transformers import AutoImageProcessor, AutoTokenizer

    return AutoTokenizer.from_pretrained(backbone_dir), AutoImageProcessor.from_pretrained(
        backbone_dir
    )


def reference_feature(
    source: Source,
    image: np.ndarray,
    instruction: str,
    causal: bool = True,
    perturb_tail: bool = False,
) -> torch.Tensor:
    """The ACT feature as RoboVLMs computed it on transformers 4.44, rebuilt by hand."""
    vlm = source.reference
    hidden = vlm.config.text_config.hidden_size
    tokenizer, processor = text_and_image_processors(source.backbone_dir)
    ids = tokenizer(
        tokenizer.eos_token + instruction.strip() + "\n", add_special_tokens=False
    ).input_ids
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        table = vlm.model.language_model.embed_tokens.weight  # 4.44: an unscaled nn.Embedding
        text = table[torch.tensor(ids)]
        vision = vlm.model.vision_tower(pixel_values=pixels).last_hidden_state
        image_embeds = vlm.model.multi_modal_projector(vision)[0] / math.sqrt(hidden)
        act = source.state["model.action_token"].unsqueeze(0)
        sequence = torch.cat([text[:1], image_embeds, text[1:-1], act, text[-1:]])
        sequence = sequence.unsqueeze(0) * math.sqrt(hidden)  # 4.44 Gemma's input normalizer
        if perturb_tail:
            sequence[0, -1] = 50.0 * torch.randn(hidden, generator=torch.Generator().manual_seed(0))
        length = sequence.shape[1]
        mask = torch.zeros(1, 1, length, length)
        if causal:
            mask = mask.masked_fill(
                torch.ones(length, length, dtype=torch.bool).triu(1), torch.finfo(torch.float32).min
            )
        out = vlm.model.language_model(
            inputs_embeds=sequence,
            attention_mask=mask,
            position_ids=torch.arange(1, length + 1).unsqueeze(0),
        ).last_hidden_state
    return out[0, length - 2]


def frames(count: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def test_reference_feature_is_causal_and_sensitive(source):
    """The reference must be able to fail: it sees the image, and only causal attention keeps
    the token after ACT from changing the feature."""
    image = frames(1, 224)[0]
    causal = reference_feature(source, image, "open the drawer")
    tail = reference_feature(source, image, "open the drawer", perturb_tail=True)
    torch.testing.assert_close(causal, tail, rtol=0, atol=1e-6)
    both_ways = reference_feature(source, image, "open the drawer", causal=False)
    both_ways_tail = reference_feature(
        source, image, "open the drawer", causal=False, perturb_tail=True
    )
    # Random tiny weights attend almost uniformly, so one token moves the feature only ~1e-4;
    # that is still 100x the float32 noise the comparisons below allow.
    assert (both_ways - both_ways_tail).abs().max() > 1e-4
    assert (causal - both_ways).abs().max() > 1e-4
    other_image = reference_feature(source, frames(2, 224)[1], "open the drawer")
    assert not torch.allclose(causal, other_image, atol=1e-3)


def test_imported_policy_reproduces_the_independent_computation(source, imported):
    from vla_ros.policy.model import VLAPolicy

    policy = VLAPolicy.from_pretrained(imported)
    assert policy.spec.action_space == "arm7"
    head = ReferenceHead(source.state)
    span = NORM_MAX - NORM_MIN
    images = frames(WINDOW + 2, policy.spec.image_size)  # fills the window, then slides it twice
    for index, image in enumerate(images):
        chunk = policy.step(image, INSTRUCTION)
        feature = reference_feature(source, image, INSTRUCTION)
        torch.testing.assert_close(policy.features[-1], feature, rtol=0, atol=1e-5)
        motion, logits = head.step(feature)
        expected_si = ((motion + 1.0) / 2.0 * span + NORM_MIN).numpy()
        prob = torch.sigmoid(logits).numpy()
        np.testing.assert_allclose(chunk.motion, expected_si, atol=1e-4, err_msg=f"frame {index}")
        np.testing.assert_allclose(chunk.gripper_prob, prob, atol=1e-4, err_msg=f"frame {index}")
        np.testing.assert_array_equal(chunk.gripper, (prob > 0.5).astype(float))
        assert chunk.motion.shape == (CHUNK, 6)
    # The window really slid: the last two frames used re-runs over the last WINDOW features.
    assert len(policy.features) == WINDOW

    policy.reset()
    head = ReferenceHead(source.state)
    chunk = policy.step(images[-1], INSTRUCTION)
    motion, _ = head.step(reference_feature(source, images[-1], INSTRUCTION))
    np.testing.assert_allclose(
        chunk.motion, ((motion + 1) / 2 * span + NORM_MIN).numpy(), atol=1e-4
    )


def test_mobile3_checkpoint_drops_the_gripper_head(source, tmp_path):
    from vla_ros.policy.model import VLAPolicy

    gen = torch.Generator().manual_seed(11)
    state = {k: v for k, v in source.state.items() if ".actions.mlp.6." not in k}
    state["model.act_head.actions.mlp.6.weight"] = torch.randn(
        CHUNK * 3, MLP_HIDDEN[-1], generator=gen
    )
    state["model.act_head.actions.mlp.6.bias"] = torch.zeros(CHUNK * 3)
    ckpt, config = write_variant(source, "mobile", state, **{"act_head.action_dim": 4})

    out = import_checkpoint(ckpt, config, source.backbone_dir, tmp_path / "mobile")
    policy_config = PolicyConfig.load(out)
    assert policy_config.action_space == "mobile3"
    assert policy_config.action_min == (NORM_MIN,) * 3
    from safetensors.torch import load_file

    assert not any(key.startswith("head.gripper.") for key in load_file(str(out / HEAD_FILE)))
    chunk = VLAPolicy.from_pretrained(out).step(frames(1, 224)[0], "go to the kitchen")
    assert chunk.motion.shape == (CHUNK, 3)
    assert chunk.gripper is None
    assert np.all((chunk.motion >= NORM_MIN) & (chunk.motion <= NORM_MAX))

    explicit = import_checkpoint(ckpt, config, source.backbone_dir, tmp_path / "m2", "mobile3")
    assert PolicyConfig.load(explicit).action_space == "mobile3"
    with pytest.raises(ValueError, match=r"action_space 'arm7' does not match"):
        import_checkpoint(ckpt, config, source.backbone_dir, tmp_path / "m3", "arm7")


def test_bfloat16_checkpoint_imports_and_runs(source, tmp_path):
    from transformers import PaliGemmaForConditionalGeneration

    from vla_ros.policy.model import VLAPolicy

    state = {key: value.to(torch.bfloat16) for key, value in source.state.items()}
    ckpt, config = write_variant(source, "bf16", state)
    out = import_checkpoint(ckpt, config, source.backbone_dir, tmp_path / "bf16")
    loaded = PaliGemmaForConditionalGeneration.from_pretrained(out)
    assert loaded.dtype == torch.bfloat16
    chunk = VLAPolicy.from_pretrained(out).step(frames(1, 224)[0], "열린 서랍을 닫아")
    assert np.all(np.isfinite(chunk.motion))
    assert np.all((chunk.motion >= NORM_MIN) & (chunk.motion <= NORM_MAX))


# --- refusals ---------------------------------------------------------------------------------


def without(state: dict, key: str) -> dict:
    assert key in state
    return {k: v for k, v in state.items() if k != key}


def replaced(state: dict, key: str, value: torch.Tensor) -> dict:
    assert key in state
    return {**state, key: value}


BAD_CHECKPOINTS = {
    "missing_lstm_weight": (
        lambda s: without(s, "model.act_head.rnn.weight_hh_l1"),
        r"missing key model\.act_head\.rnn\.weight_hh_l1",
    ),
    "missing_gripper_bias": (
        lambda s: without(s, "model.act_head.gripper.mlp.6.bias"),
        r"missing key model\.act_head\.gripper\.mlp\.6\.bias",
    ),
    "missing_action_token": (
        lambda s: without(s, "model.action_token"),
        r"missing key model\.action_token",
    ),
    "missing_backbone_tensor": (
        lambda s: without(s, "model.backbone.language_model.model.layers.1.mlp.down_proj.weight"),
        r"missing for model\.language_model\.layers\.1\.mlp\.down_proj\.weight",
    ),
    "wrong_mlp_shape": (
        lambda s: replaced(s, "model.act_head.actions.mlp.2.weight", torch.zeros(16, 21)),
        r"model\.act_head\.actions\.mlp\.2\.weight has shape \[16, 21\], expected \[16, 20\]",
    ),
    "wrong_backbone_shape": (
        lambda s: replaced(
            s,
            "model.backbone.multi_modal_projector.linear.weight",
            s["model.backbone.multi_modal_projector.linear.weight"].T.contiguous(),
        ),
        r"model\.backbone\.multi_modal_projector\.linear\.weight has shape",
    ),
    "wrong_action_token_size": (
        lambda s: replaced(s, "model.action_token", torch.zeros(5)),
        r"model\.action_token has shape \[5\]",
    ),
    "unknown_module": (
        lambda s: {**s, "model.vision_resampler.latents": torch.zeros(4, 4)},
        r"unsupported tensors vision_resampler\.latents",
    ),
    "unknown_backbone_tensor": (
        lambda s: {**s, "model.backbone.language_model.model.extra.weight": torch.zeros(2)},
        r"model\.backbone\.language_model\.model\.extra\.weight .* does not exist",
    ),
    "mlp_layer_gap": (
        lambda s: {k: v for k, v in s.items() if ".actions.mlp.4." not in k},
        r"actions\.mlp\.\* has Linear layers at \[0, 2, 6\]",
    ),
    "non_finite_head": (
        lambda s: replaced(s, "model.act_head.actions.mlp.0.bias", torch.full((20,), math.nan)),
        r"head\.motion\.0\.bias contains NaN",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoints_are_refused_naming_the_key(source, tmp_path, case):
    mutate, message = BAD_CHECKPOINTS[case]
    ckpt, config = write_variant(source, case, mutate(source.state))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        import_checkpoint(ckpt, config, source.backbone_dir, out)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))


BAD_CONFIGS = {
    "gpt_head": ({"act_head.type": "GPTDecoder"}, r"act_head\.type 'GPTDecoder' is not supported"),
    "discrete": ({"act_head.action_space": "discrete"}, r"act_head\.action_space='discrete'"),
    "pre_history": ({"act_head.history_type": "pre"}, r"act_head\.history_type='pre'"),
    "hand_camera": ({"use_hand_rgb": True}, r"use_hand_rgb=true is not supported"),
    "chunk_mismatch": ({"fwd_pred_next_n": 5}, r"outputs 4 logits, .* fwd_pred_next_n=5"),
    "lstm_size": ({"act_head.hidden_size": 1024}, r"hidden size 24, .* act_head\.hidden_size=1024"),
    "lstm_layers": ({"act_head.num_layers": 4}, r"2 layers, .* act_head\.num_layers=4"),
    "action_dim": ({"act_head.action_dim": 4}, r"act_head\.action_dim=4 needs 3"),
    "window": ({"window_size": 0}, r"window_size must be a positive integer"),
    "norm": ({"norm_min": "low"}, r"norm_min must be a finite number"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_configs_that_do_not_fit_are_refused(source, tmp_path, case):
    changes, message = BAD_CONFIGS[case]
    ckpt, config = write_variant(source, case, **changes)
    with pytest.raises(ValueError, match=message):
        import_checkpoint(ckpt, config, source.backbone_dir, tmp_path / "out")


def test_per_axis_bounds_drop_the_gripper_entry(source, tmp_path):
    bounds = [-0.1, -0.2, -0.3, -0.4, -0.5, -0.6, -1.0]
    ckpt, config = write_variant(source, "per_axis", norm_min=bounds, norm_max=[-b for b in bounds])
    out = import_checkpoint(ckpt, config, source.backbone_dir, tmp_path / "out")
    assert PolicyConfig.load(out).action_min == tuple(bounds[:6])
    assert PolicyConfig.load(out).action_max == tuple(-b for b in bounds[:6])
    ckpt, config = write_variant(source, "no_norm", norm_action=False)
    out = import_checkpoint(ckpt, config, source.backbone_dir, tmp_path / "raw")
    assert PolicyConfig.load(out).action_min == (-1.0,) * 6


def test_missing_files_are_named(source, tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        import_checkpoint(source.ckpt, missing, source.backbone_dir, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        import_checkpoint(
            tmp_path / "missing.ckpt", source.config, source.backbone_dir, tmp_path / "o"
        )
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        import_checkpoint(source.ckpt, source.config, tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"mp_rank_00_model_states\.pt"):
        import_checkpoint(tmp_path, source.config, source.backbone_dir, tmp_path / "out")


def test_unreadable_inputs_are_refused(source, tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match=r"garbage\.ckpt: not a readable torch checkpoint"):
        import_checkpoint(garbage, source.config, source.backbone_dir, tmp_path / "out")
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        import_checkpoint(source.ckpt, broken, source.backbone_dir, tmp_path / "out")
    no_state = tmp_path / "no_state.ckpt"
    torch.save({"epoch": 1}, no_state)
    with pytest.raises(ValueError, match="state dict entry 'epoch' is not a tensor"):
        import_checkpoint(no_state, source.config, source.backbone_dir, tmp_path / "out")


def test_wrong_action_space_is_refused(source, tmp_path):
    with pytest.raises(ValueError, match=r"action_space 'mobile3' does not match"):
        import_checkpoint(
            source.ckpt, source.config, source.backbone_dir, tmp_path / "o", "mobile3"
        )
    with pytest.raises(ValueError, match="action_space must be one of"):
        import_checkpoint(source.ckpt, source.config, source.backbone_dir, tmp_path / "o", "arm6")
    state = {k: v for k, v in source.state.items() if ".gripper." not in k}
    ckpt, config = write_variant(source, "no_gripper", state)
    with pytest.raises(ValueError, match=r"6-DOF action head needs model\.act_head\.gripper"):
        import_checkpoint(ckpt, config, source.backbone_dir, tmp_path / "o")


def test_pickled_hyper_parameters_need_explicit_trust(source, tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": source.state, "hyper_parameters": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        read_checkpoint(path)
    assert "action_token" in read_checkpoint(path, allow_pickle=True)


def test_existing_output_is_kept_unless_overwrite(source, imported, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="not empty"):
        import_checkpoint(source.ckpt, source.config, source.backbone_dir, out)
    assert (out / "keep.txt").exists()
    with pytest.raises(ValueError, match="must differ from backbone_dir"):
        import_checkpoint(source.ckpt, source.config, source.backbone_dir, source.backbone_dir)
    import_checkpoint(source.ckpt, source.config, source.backbone_dir, out, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert (out / HEAD_FILE).read_bytes() == (imported / HEAD_FILE).read_bytes()
    shutil.rmtree(out)
