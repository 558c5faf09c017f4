"""Import a RoboVLMs PaliGemma + LSTM checkpoint ("policy head, continuous, post history").

RoboVLMs trains with PyTorch Lightning (+ DeepSpeed) and saves a torch file whose `state_dict` (or,
for a raw DeepSpeed model-states file, `module`) holds the `BaseRoboVLM` under the prefix `model.`:

- `model.backbone.*`: the `PaliGemmaForConditionalGeneration` of transformers 4.44, whose names
  differ from the installed transformers (see `backbone_key_to_hf`);
- `model.act_head.rnn.*`: `nn.LSTM` weights (`weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`,
  `bias_hh_l{k}`), input = the backbone hidden size;
- `model.act_head.actions.mlp.{0,2,4,6}.*`: `MLPTanhHead`, out = chunk * (action_dim - 1);
- `model.act_head.gripper.mlp.{0,2,4,6}.*`: `MLPSigmoidHead`, out = chunk gripper logits;
- `model.action_token`: the learnable ACT embedding (backbone hidden size).

The RoboVLMs training config (JSON) supplies what the tensors cannot: `window_size` and
`fwd_pred_next_n` at the top level (RoboVLMs passes these to the head, overriding the placeholder
values inside `act_head`), `act_head` (`type` "LSTMDecoder", `hidden_size`, `num_layers`,
`action_dim`, `action_space` "continuous", `down_sample`, `latent`, `history_type`) and the
normalization `norm_action`, `norm_min`, `norm_max`. Everything that both describe is cross-checked,
so a config that does not belong to the checkpoint fails here instead of producing garbage actions.

How the imported tensors are used at run time (embedding scaling, causal attention) is
described in `vla_ros.policy.backbone`.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from vla_ros import action_space as action_spaces
from vla_ros.policy.backbone import quiet_progress
from vla_ros.policy.config import HEAD_FILE, POLICY_FILE, PolicyConfig
from vla_ros.policy.types import MOTION_DOF

log = logging.getLogger(__name__)

DEEPSPEED_MODEL_STATES = "mp_rank_00_model_states.pt"
# Wrappers that Lightning, DeepSpeed and DDP put in front of the LightningModule's own names.
_WRAPPER_PREFIXES = ("_forward_module.", "module.")
_LIGHTNING_PREFIX = "model."
_BACKBONE = "backbone."
_ACT_HEAD = "act_head."
_ACTION_TOKEN = "action_token"
# Training-only parts of a RoboVLMs model that do not take part in action inference.
_TRAINING_ONLY = ("fwd_head.", "static_image_tokens", "hand_image_tokens", "clip_norm_head.")

# transformers 4.44 PaliGemma names -> installed (5.x) names. The installed library's own
# checkpoint conversion does the same in two stages: "llava" for the outer model
# (language_model.lm_head -> lm_head, language_model -> model.language_model, vision_tower and
# multi_modal_projector under model.), then "LlavaModel" (language_model.model -> language_model)
# and SigLIP's PrefixChange that drops `vision_model.`. Names from transformers 4.52-4.57
# (model.vision_tower.vision_model.*) and current names are accepted too.
_BACKBONE_RENAMES = (
    (re.compile(r"^language_model\.lm_head\."), "lm_head."),
    (re.compile(r"^language_model\.model\."), "model.language_model."),
    (re.compile(r"^vision_tower\.vision_model\."), "model.vision_tower."),
    (re.compile(r"^multi_modal_projector\."), "model.multi_modal_projector."),
    (re.compile(r"^model\.vision_tower\.vision_model\."), "model.vision_tower."),
    (
        re.compile(r"^(model\.(language_model|vision_tower|multi_modal_projector)\.|lm_head\.)"),
        r"\1",
    ),
)
_TIED_LM_HEAD = "lm_head.weight"

_COPY_SKIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
_COPY_SKIP_NAMES = {POLICY_FILE, HEAD_FILE, "config.json", "model.safetensors.index.json"}


@dataclass(frozen=True)
class RoboVLMsConfig:
    """The parts of a RoboVLMs training config that an importer needs."""

    path: Path
    window: int
    chunk: int
    lstm_hidden: int | None
    lstm_layers: int
    action_dim: int | None
    norm_min: tuple[float, ...] | float
    norm_max: tuple[float, ...] | float
    name: str


def read_robovlms_config(path: str | Path) -> RoboVLMsConfig:
    """Parse and check a RoboVLMs config JSON; unsupported recipes fail with the field's name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RoboVLMs config {path} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")

    def positive_int(value: Any, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{path}: {field} must be a positive integer, got {value!r}")
        return value

    for field in ("window_size", "fwd_pred_next_n", "act_head"):
        if field not in raw:
            raise ValueError(f"{path}: required field {field!r} is missing")
    head = raw["act_head"]
    if not isinstance(head, dict):
        raise ValueError(f"{path}: act_head must be an object, got {head!r}")
    head_type = head.get("type")
    if head_type != "LSTMDecoder":
        raise ValueError(
            f"{path}: act_head.type {head_type!r} is not supported (only 'LSTMDecoder', the "
            "'policy head, continuous, post history' recipe)"
        )
    expectations = {
        "action_space": ("continuous",),
        "history_type": ("post",),
        "down_sample": ("none", "pooling"),
        "latent": (1,),
        "with_history": (True,),
        "early_return": (False,),
    }
    for field, allowed in expectations.items():
        if field in head and head[field] not in allowed:
            raise ValueError(
                f"{path}: act_head.{field}={head[field]!r} is not supported (expected one of "
                f"{list(allowed)})"
            )
    for field in ("use_hand_rgb", "use_vision_resampler", "use_state"):
        if raw.get(field):
            raise ValueError(
                f"{path}: {field}=true is not supported (vla_ros feeds one camera and no state)"
            )

    hidden = head.get("hidden_size")
    action_dim = head.get("action_dim")
    if raw.get("norm_action", False):
        norm_min = _bounds(raw.get("norm_min"), path, "norm_min")
        norm_max = _bounds(raw.get("norm_max"), path, "norm_max")
    else:
        norm_min, norm_max = -1.0, 1.0
    return RoboVLMsConfig(
        path=path,
        window=positive_int(raw["window_size"], "window_size"),
        chunk=positive_int(raw["fwd_pred_next_n"], "fwd_pred_next_n"),
        lstm_hidden=None if hidden is None else positive_int(hidden, "act_head.hidden_size"),
        lstm_layers=positive_int(head.get("num_layers", 4), "act_head.num_layers"),
        action_dim=None if action_dim is None else positive_int(action_dim, "act_head.action_dim"),
        norm_min=norm_min,
        norm_max=norm_max,
        name=path.stem,
    )


def _bounds(value: Any, path: Path, field: str) -> tuple[float, ...] | float:
    numbers = value if isinstance(value, list) else [value]
    if not numbers or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and abs(v) < float("inf")
        for v in numbers
    ):
        raise ValueError(
            f"{path}: {field} must be a finite number or a list of them, got {value!r}"
        )
    return tuple(float(v) for v in numbers) if isinstance(value, list) else float(value)


def read_checkpoint(ckpt: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a RoboVLMs checkpoint into {name: tensor} with wrapper and `model.` prefixes removed.

    Accepts a Lightning file (`state_dict`), a DeepSpeed model-states file or checkpoint directory
    (`module`), or a bare state dict. The file is unpickled with `weights_only=True`, which refuses
    arbitrary code; Lightning files whose `hyper_parameters` hold custom objects need
    `allow_pickle=True`, which must only be used on files from a trusted source.
    """
    path = _checkpoint_file(Path(ckpt))
    try:
        loaded = torch.load(
            path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
        )
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused is None:
            raise ValueError(f"{path}: not a readable torch checkpoint") from exc
        if not allow_pickle:
            raise ValueError(
                f"{path}: holds a pickled {refused.group(1)}, which weights_only loading refuses. "
                "Only if the file comes from a trusted source, import it with allow_pickle=True "
                "(vla-ros import-robovlms --allow-pickle)"
            ) from exc
        loaded = _load_pickled(path)
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable torch checkpoint: {exc}") from exc

    state = loaded
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "module"):
            if isinstance(loaded.get(key), Mapping):
                state = loaded[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{path}: no state dict found (expected 'state_dict' or 'module')")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: state dict entry {key!r} is not a tensor")
        tensors[_strip_prefixes(str(key))] = value
    if any(key.startswith(_LIGHTNING_PREFIX + _BACKBONE) for key in tensors):
        tensors = {
            key[len(_LIGHTNING_PREFIX) :] if key.startswith(_LIGHTNING_PREFIX) else key: value
            for key, value in tensors.items()
        }
    return tensors


def _load_pickled(path: Path) -> Any:
    """Full unpickling, for trusted files only; any failure (a missing class, say) is reported."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot be unpickled: {exc!r}") from exc


def _checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        for candidate in (
            path / "checkpoint" / DEEPSPEED_MODEL_STATES,
            path / DEEPSPEED_MODEL_STATES,
        ):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"checkpoint directory {path} has no {DEEPSPEED_MODEL_STATES} (a DeepSpeed checkpoint "
            "is expected when a directory is given)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                stripped = True
    return key


def backbone_key_to_hf(key: str) -> str:
    """A PaliGemma weight name as RoboVLMs saved it (transformers 4.44) -> the installed name."""
    for pattern, replacement in _BACKBONE_RENAMES:
        if pattern.match(key):
            return pattern.sub(replacement, key, count=1)
    raise ValueError(f"backbone tensor {key!r} is not a PaliGemma weight name this importer knows")


def import_checkpoint(
    ckpt: str | Path,
    config_json: str | Path,
    backbone_dir: str | Path,
    out_dir: str | Path,
    action_space: str | None = None,
    *,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Convert a RoboVLMs checkpoint into a vla_ros model directory and return its path.

    `backbone_dir` is a Hugging Face PaliGemma directory; its config, tokenizer and preprocessor
    are kept and its weights replaced by the checkpoint's. The action space is arm7 when the
    checkpoint has a gripper head and an action head of chunk*6 outputs, mobile3 when the action
    head has chunk*3 (a gripper head is then dropped); `action_space` forces one and is checked.
    The directory is built next to `out_dir` and moved into place only when complete.
    """
    rv_config = read_robovlms_config(config_json)
    backbone_dir = Path(backbone_dir)
    out_dir = Path(out_dir)
    if not (backbone_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{backbone_dir / 'config.json'} does not exist: backbone_dir must be a Hugging Face "
            "PaliGemma directory"
        )
    if out_dir.resolve() == backbone_dir.resolve():
        raise ValueError(f"out_dir {out_dir} must differ from backbone_dir")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"out_dir {out_dir} exists and is not empty (pass overwrite=True)")
    if action_space is not None and action_space not in MOTION_DOF:
        raise ValueError(f"action_space must be one of {sorted(MOTION_DOF)}, got {action_space!r}")

    source = _checkpoint_file(Path(ckpt))
    state = read_checkpoint(source, allow_pickle=allow_pickle)
    backbone, head_raw, action_token = _split(state, source)
    hf_config = _backbone_config(backbone_dir)
    head, head_fields, space = _convert_head(
        head_raw,
        action_token,
        int(hf_config.text_config.hidden_size),
        rv_config,
        action_space,
        source,
    )
    model = _backbone_model(hf_config, backbone_dir, backbone, source)
    dof = MOTION_DOF[space]
    policy = PolicyConfig.create(
        space,
        int(hf_config.text_config.hidden_size),
        window=rv_config.window,
        chunk=rv_config.chunk,
        action_min=_per_axis(rv_config.norm_min, dof, rv_config.path, "norm_min"),
        action_max=_per_axis(rv_config.norm_max, dof, rv_config.path, "norm_max"),
        model_id=f"robovlms/{rv_config.name}",
        extra={
            "imported_from": {
                "checkpoint": source.name,
                "robovlms_config": rv_config.path.name,
                "backbone": backbone_dir.name,
            }
        },
        **head_fields,
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _copy_backbone_files(backbone_dir, staging)
        with quiet_progress():
            model.save_pretrained(staging)
        policy.save(staging)
        save_file(head, str(staging / HEAD_FILE), metadata={"format": "pt"})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "imported %s (%s, window %d, chunk %d, LSTM %dx%d, MLP %s) into %s",
        source.name,
        space,
        policy.window,
        policy.chunk,
        policy.lstm_layers,
        policy.lstm_hidden,
        list(policy.mlp_hidden),
        out_dir,
    )
    return out_dir


def _split(
    state: dict[str, torch.Tensor], source: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    backbone = {k[len(_BACKBONE) :]: v for k, v in state.items() if k.startswith(_BACKBONE)}
    head = {k[len(_ACT_HEAD) :]: v for k, v in state.items() if k.startswith(_ACT_HEAD)}
    unknown = sorted(
        key
        for key in state
        if not key.startswith((_BACKBONE, _ACT_HEAD, *_TRAINING_ONLY)) and key != _ACTION_TOKEN
    )
    if unknown:
        raise ValueError(
            f"{source}: unsupported tensors {', '.join(unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''} (not a PaliGemma + LSTMDecoder RoboVLMs model)"
        )
    ignored = sorted(key for key in state if key.startswith(_TRAINING_ONLY))
    if ignored:
        log.info("%s: ignoring %d training-only tensors (%s ...)", source, len(ignored), ignored[0])
    for name, part in (("model.backbone.*", backbone), ("model.act_head.*", head)):
        if not part:
            raise ValueError(f"{source}: no {name} tensors: not a RoboVLMs checkpoint")
    if _ACTION_TOKEN not in state:
        raise ValueError(f"{source}: missing key model.{_ACTION_TOKEN}")
    return backbone, head, state[_ACTION_TOKEN]


def _backbone_config(backbone_dir: Path) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(backbone_dir)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{backbone_dir / 'config.json'}: not a usable model config: {exc}"
        ) from exc
    if config.model_type != "paligemma":
        raise ValueError(
            f"{backbone_dir / 'config.json'}: model_type {config.model_type!r} is not 'paligemma'"
        )
    return config


def _backbone_model(
    config: Any, backbone_dir: Path, tensors: dict[str, torch.Tensor], source: Path
) -> Any:
    """The installed PaliGemma class holding the checkpoint's tensors, every name and shape checked.

    Built on the meta device and filled by assignment, so a 3B model costs no extra copy.
    """
    from transformers import PaliGemmaForConditionalGeneration

    with torch.device("meta"):
        model = PaliGemmaForConditionalGeneration(config)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight

    renamed: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        try:
            name = backbone_key_to_hf(key)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc} (key model.backbone.{key})") from exc
        if name not in expected:
            raise ValueError(
                f"{source}: model.backbone.{key} (-> {name}) does not exist in the PaliGemma "
                f"described by {backbone_dir / 'config.json'}"
            )
        if value.shape != expected[name]:
            raise ValueError(
                f"{source}: model.backbone.{key} has shape {list(value.shape)}, "
                f"{backbone_dir / 'config.json'} needs {list(expected[name])} for {name}"
            )
        renamed[name] = value
    if tied:
        renamed.pop(_TIED_LM_HEAD, None)
    missing = sorted(set(expected) - set(renamed) - ({_TIED_LM_HEAD} if tied else set()))
    if missing:
        raise ValueError(
            f"{source}: backbone tensors missing for {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)} in all)"
        )
    model.load_state_dict(renamed, strict=False, assign=True)
    if tied:
        model.tie_weights()
    return model


def _convert_head(
    raw: dict[str, torch.Tensor],
    action_token: torch.Tensor,
    hidden_size: int,
    rv_config: RoboVLMsConfig,
    action_space: str | None,
    source: Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """RoboVLMs `LSTMDecoder` tensors -> `policy_head.safetensors` tensors and policy.yaml sizes."""
    if tuple(action_token.shape) != (hidden_size,):
        raise ValueError(
            f"{source}: model.{_ACTION_TOKEN} has shape {list(action_token.shape)}, the backbone "
            f"hidden size is {hidden_size}"
        )
    rnn, lstm_hidden, lstm_layers = _lstm(raw, hidden_size, rv_config, source)
    motion, mlp_hidden, motion_out = _mlp(raw, "actions", lstm_hidden, source)
    has_gripper = any(key.startswith("gripper.") for key in raw)
    gripper: dict[str, torch.Tensor] = {}
    if has_gripper:
        gripper, gripper_hidden, gripper_out = _mlp(raw, "gripper", lstm_hidden, source)
        if gripper_hidden != mlp_hidden:
            raise ValueError(
                f"{source}: gripper MLP sizes {list(gripper_hidden)} differ from the action MLP "
                f"sizes {list(mlp_hidden)}"
            )
        if gripper_out != rv_config.chunk:
            raise ValueError(
                f"{source}: model.act_head.gripper outputs {gripper_out} logits, "
                f"{rv_config.path.name} says fwd_pred_next_n={rv_config.chunk}"
            )
    known = {f"rnn.{k}" for k in rnn} | {f"actions.mlp.{k}" for k in motion}
    known |= {f"gripper.mlp.{k}" for k in gripper}
    unexpected = sorted(set(raw) - known)
    if unexpected:
        raise ValueError(
            f"{source}: unsupported head tensors model.act_head.{unexpected[0]}"
            f"{' ...' if len(unexpected) > 1 else ''}"
        )

    if motion_out % rv_config.chunk:
        raise ValueError(
            f"{source}: model.act_head.actions outputs {motion_out} values, not a multiple of "
            f"fwd_pred_next_n={rv_config.chunk} from {rv_config.path.name}"
        )
    per_step = motion_out // rv_config.chunk
    if rv_config.action_dim is not None and per_step != rv_config.action_dim - 1:
        raise ValueError(
            f"{source}: model.act_head.actions outputs {per_step} values per step, "
            f"{rv_config.path.name} act_head.action_dim={rv_config.action_dim} needs "
            f"{rv_config.action_dim - 1}"
        )
    found = action_spaces.find(per_step, has_gripper) or action_spaces.find(
        per_step, not has_gripper
    )
    if found is None:
        supported = ", ".join(f"{action_spaces.get(n).dof} ({n})" for n in action_spaces.names())
        raise ValueError(
            f"{source}: model.act_head.actions outputs {per_step} values per step; only "
            f"{supported} are supported"
        )
    detected = found.name
    if action_spaces.get(detected).gripper and not has_gripper:
        raise ValueError(f"{source}: a 6-DOF action head needs model.act_head.gripper.* (arm7)")
    if action_space is not None and action_space != detected:
        raise ValueError(
            f"action_space {action_space!r} does not match the checkpoint {source.name}: its "
            f"action head outputs {per_step} values per step ({detected})"
        )

    head = {_ACTION_TOKEN: action_token}
    head.update({f"head.rnn.{k}": v for k, v in rnn.items()})
    head.update({f"head.motion.{k}": v for k, v in motion.items()})
    if action_spaces.get(detected).gripper:
        head.update({f"head.gripper.{k}": v for k, v in gripper.items()})
    for key, value in head.items():
        if not torch.isfinite(value).all():
            raise ValueError(f"{source}: tensor for {key} contains NaN or Inf")
    fields = {"lstm_hidden": lstm_hidden, "lstm_layers": lstm_layers, "mlp_hidden": mlp_hidden}
    return {k: v.detach().contiguous().clone() for k, v in head.items()}, fields, detected


def _lstm(
    raw: dict[str, torch.Tensor], input_size: int, rv_config: RoboVLMsConfig, source: Path
) -> tuple[dict[str, torch.Tensor], int, int]:
    if "rnn.weight_hh_l0" not in raw:
        raise ValueError(f"{source}: missing key model.act_head.rnn.weight_hh_l0")
    if raw["rnn.weight_hh_l0"].ndim != 2:
        raise ValueError(
            f"{source}: model.act_head.rnn.weight_hh_l0 has shape "
            f"{list(raw['rnn.weight_hh_l0'].shape)}, expected a matrix"
        )
    hidden = int(raw["rnn.weight_hh_l0"].shape[1])
    layers = 1 + max(
        int(match.group(1)) for key in raw if (match := re.match(r"^rnn\.\w+_l(\d+)$", key))
    )
    if rv_config.lstm_hidden is not None and rv_config.lstm_hidden != hidden:
        raise ValueError(
            f"{source}: model.act_head.rnn has hidden size {hidden}, {rv_config.path.name} says "
            f"act_head.hidden_size={rv_config.lstm_hidden}"
        )
    if layers != rv_config.lstm_layers:
        raise ValueError(
            f"{source}: model.act_head.rnn has {layers} layers, {rv_config.path.name} says "
            f"act_head.num_layers={rv_config.lstm_layers}"
        )
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(layers):
        shapes = {
            f"weight_ih_l{layer}": (4 * hidden, input_size if layer == 0 else hidden),
            f"weight_hh_l{layer}": (4 * hidden, hidden),
            f"bias_ih_l{layer}": (4 * hidden,),
            f"bias_hh_l{layer}": (4 * hidden,),
        }
        for name, shape in shapes.items():
            tensors[name] = _tensor(raw, f"rnn.{name}", shape, source)
    return tensors, hidden, layers


def _mlp(
    raw: dict[str, torch.Tensor], name: str, in_features: int, source: Path
) -> tuple[dict[str, torch.Tensor], tuple[int, ...], int]:
    """An `nn.Sequential` of Linear/ReLU pairs: Linear weights at indices 0, 2, 4, ..."""
    prefix = f"{name}.mlp."
    indices = sorted(
        {
            int(match.group(1))
            for key in raw
            if (match := re.match(rf"^{re.escape(prefix)}(\d+)\.(weight|bias)$", key))
        }
    )
    if not indices:
        raise ValueError(f"{source}: missing key model.act_head.{prefix}0.weight")
    if indices != list(range(0, 2 * len(indices), 2)) or len(indices) < 2:
        raise ValueError(
            f"{source}: model.act_head.{prefix}* has Linear layers at {indices}, expected "
            "0, 2, 4, 6 (Linear-ReLU-...-Linear)"
        )
    tensors: dict[str, torch.Tensor] = {}
    width = in_features
    sizes: list[int] = []
    for index in indices:
        weight_key = f"{prefix}{index}.weight"
        if weight_key not in raw:
            raise ValueError(f"{source}: missing key model.act_head.{weight_key}")
        out = int(raw[weight_key].shape[0])
        tensors[f"{index}.weight"] = _tensor(raw, weight_key, (out, width), source)
        tensors[f"{index}.bias"] = _tensor(raw, f"{prefix}{index}.bias", (out,), source)
        sizes.append(out)
        width = out
    return tensors, tuple(sizes[:-1]), sizes[-1]


def _tensor(
    raw: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], source: Path
) -> torch.Tensor:
    if key not in raw:
        raise ValueError(f"{source}: missing key model.act_head.{key}")
    value = raw[key]
    if tuple(value.shape) != shape:
        raise ValueError(
            f"{source}: model.act_head.{key} has shape {list(value.shape)}, expected {list(shape)}"
        )
    return value


def _per_axis(
    value: tuple[float, ...] | float, dof: int, path: Path, field: str
) -> tuple[float, ...]:
    """RoboVLMs gives one bound for all axes or a list per axis, possibly including the gripper."""
    if isinstance(value, tuple):
        if len(value) == dof + 1:
            value = value[:dof]
        if len(value) != dof:
            raise ValueError(f"{path}: {field} lists {len(value)} values, the head has {dof} axes")
        return value
    return (value,) * dof


def _copy_backbone_files(backbone_dir: Path, target: Path) -> None:
    """Tokenizer, processor and other metadata files; weights come from the checkpoint."""
    for item in sorted(backbone_dir.iterdir()):
        if (
            item.is_file()
            and not item.name.startswith(".")
            and item.name not in _COPY_SKIP_NAMES
            and not item.name.endswith(_COPY_SKIP_SUFFIXES)
        ):
            shutil.copy2(item, target / item.name)
