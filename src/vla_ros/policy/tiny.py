"""A tiny but complete model directory, generated locally in seconds (no download).

Same classes and file layout as google/paligemma-3b-pt-224 plus the vla_ros files: a PaliGemma
with a small SigLIP (224 px, patch 14, so 256 image tokens like the real one) and a tiny MQA
Gemma, random weights, a BPE tokenizer with byte fallback trained here on an English + Korean
instruction corpus (so any text tokenizes without unknown tokens), the SigLIP/PaliGemma
processor configs, `policy.yaml` and a random `policy_head.safetensors`. Deterministic per seed.
It exists to test loading and wiring on machines that cannot fetch the real weights.

Preset `learnable` keeps the same classes and files but is sized to be trained from scratch on a
CPU in minutes (`vla-ros train`): 64 px images in 8 px patches (64 image tokens), a 4-layer
Gemma of width 128, and a matching small LSTM head (about 1.5 M parameters in all).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

from vla_ros.policy.config import HEAD_FILE, PolicyConfig
from vla_ros.policy.types import MOTION_DOF


@dataclass(frozen=True)
class TinyPreset:
    """Sizes of a generated model; `wiring` mimics the real token count, `learnable` trains."""

    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 224
    patch_size: int = 14
    lstm_hidden: int = 32
    lstm_layers: int = 2
    mlp_hidden: tuple[int, ...] = (32, 16, 8)
    random_action_token: bool = True


PRESETS = {
    "wiring": TinyPreset(),
    "learnable": TinyPreset(
        text_hidden=128,
        text_layers=4,
        text_heads=4,
        vision_hidden=96,
        vision_layers=3,
        vision_heads=4,
        image_size=64,
        patch_size=8,
        lstm_hidden=128,
        lstm_layers=2,
        mlp_hidden=(128, 64, 32),
        random_action_token=False,
    ),
}
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
IMAGE_TOKEN = "<image>"
LOCATION_TOKENS = tuple(f"<loc{i:04d}>" for i in range(1024)) + tuple(
    f"<seg{i:03d}>" for i in range(128)
)

_CORPUS_EN = """\
pick up the red cup and put it in the bowl
move forward slowly
turn left and stop in front of the table
go to the kitchen
open the drawer
close the top drawer
push the blue block to the left
lift the green block
place the block on the shelf
rotate the knob clockwise
turn on the light switch
slide the door to the right
drive to the charging station
follow the person in front of you
back up one meter
stop
avoid the obstacle and continue
grasp the handle and pull
put the apple on the plate
stack the yellow block on top of the pink block
move the arm up a little
wipe the table with the sponge
turn right at the corner, then go straight
navigate to the door.
Pick up the bottle!
What is on the table?
""".splitlines()

_CORPUS_KO = """\
빨간 컵을 집어서 그릇에 넣어
앞으로 천천히 이동해
왼쪽으로 돌아서 테이블 앞에서 멈춰
부엌으로 가
서랍을 열어
위쪽 서랍을 닫아
파란 블록을 왼쪽으로 밀어
초록색 블록을 들어 올려
블록을 선반 위에 놓아
손잡이를 시계 방향으로 돌려
불을 켜
문을 오른쪽으로 밀어
충전소로 이동해
앞에 있는 사람을 따라가
뒤로 일 미터 물러나
멈춰
장애물을 피해서 계속 가
손잡이를 잡고 당겨
사과를 접시 위에 올려
노란 블록을 분홍색 블록 위에 쌓아
팔을 조금 위로 움직여
스펀지로 테이블을 닦아
모퉁이에서 오른쪽으로 돈 다음 직진해
문으로 가.
병을 집어!
""".splitlines()


def _train_tokenizer() -> object:
    """A GemmaTokenizer (BPE, byte fallback) trained on the embedded corpus."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    alphabet = [*sorted(set(string.printable) - set(" \t\r\x0b\x0c")), "▁"]
    trainer = trainers.BpeTrainer(
        vocab_size=1200, min_frequency=2, initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(_CORPUS_EN + _CORPUS_KO, trainer)
    trained = json.loads(bpe.to_str())["model"]

    vocab: dict[str, int] = {}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for token, _ in sorted(trained["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    for token in (*LOCATION_TOKENS, IMAGE_TOKEN):
        vocab[token] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]

    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.add_tokens(list(LOCATION_TOKENS))
    return tokenizer


def _preprocessor_config(image_size: int, patch_size: int) -> dict[str, object]:
    return {
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_seq_length": (image_size // patch_size) ** 2,
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "PaliGemmaProcessor",
        "resample": 3,
        "rescale_factor": 1.0 / 255.0,
        "size": {"height": image_size, "width": image_size},
    }


def make_tiny_model(
    out_dir: str | Path, action_space: str = "mobile3", seed: int = 0, preset: str = "wiring"
) -> Path:
    """Write a complete, loadable, random tiny model directory and return its path."""
    if action_space not in MOTION_DOF:
        raise ValueError(f"action_space must be one of {sorted(MOTION_DOF)}, got {action_space!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    sizes = PRESETS[preset]
    import torch
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    from vla_ros.policy.backbone import quiet_progress
    from vla_ros.policy.head import LSTMPolicyHead, save_head_weights

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    vocab_size = len(tokenizer)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": sizes.vision_hidden,
            "intermediate_size": 2 * sizes.vision_hidden,
            "num_hidden_layers": sizes.vision_layers,
            "num_attention_heads": sizes.vision_heads,
            "image_size": sizes.image_size,
            "patch_size": sizes.patch_size,
            "vision_use_head": False,
        },
        text_config={
            "model_type": "gemma",
            "hidden_size": sizes.text_hidden,
            "intermediate_size": 2 * sizes.text_hidden,
            "num_hidden_layers": sizes.text_layers,
            "num_attention_heads": sizes.text_heads,
            "num_key_value_heads": 1,
            "head_dim": sizes.text_hidden // sizes.text_heads,
            "vocab_size": vocab_size,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        image_token_index=image_token_id,
        vocab_size=vocab_size,
        projection_dim=sizes.text_hidden,
        hidden_size=sizes.text_hidden,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        vlm = PaliGemmaForConditionalGeneration(config)
        policy = PolicyConfig.create(
            action_space,
            hidden_size=sizes.text_hidden,
            lstm_hidden=sizes.lstm_hidden,
            lstm_layers=sizes.lstm_layers,
            mlp_hidden=sizes.mlp_hidden,
            model_id=f"vla_ros/tiny-{action_space}" + ("" if preset == "wiring" else f"-{preset}"),
        )
        head = LSTMPolicyHead.from_config(policy)
        # Wiring: random rather than RoboVLMs' zero init, so a loader that drops the token is
        # noticed. Learnable: RoboVLMs' zero init, the training starting point.
        action_token = (
            torch.randn(sizes.text_hidden) * 0.5
            if sizes.random_action_token
            else torch.zeros(sizes.text_hidden)
        )
    finally:
        torch.random.set_rng_state(generator_state)

    with quiet_progress():
        vlm.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    (out / "preprocessor_config.json").write_text(
        json.dumps(_preprocessor_config(sizes.image_size, sizes.patch_size), indent=2) + "\n",
        encoding="utf-8",
    )
    policy.save(out)
    save_head_weights(out / HEAD_FILE, action_token, head)
    return out
