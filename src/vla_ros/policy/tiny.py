"""A tiny but complete model directory, generated locally in seconds (no download).

Same classes and file layout as google/paligemma-3b-pt-224 plus the vla_ros files: a PaliGemma
with a small SigLIP (224 px, patch 14, so 256 image tokens like the real one) and a tiny MQA
Gemma, random weights, a BPE tokenizer with byte fallback trained here on an English + Korean
instruction corpus (so any text tokenizes without unknown tokens), the SigLIP/PaliGemma
processor configs, `policy.yaml` and a random `policy_head.safetensors`. Deterministic per seed.
It exists to test loading and wiring on machines that cannot fetch the real weights.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from vla_ros.policy.config import HEAD_FILE, PolicyConfig
from vla_ros.policy.types import MOTION_DOF

TEXT_HIDDEN = 64
VISION_HIDDEN = 32
IMAGE_SIZE = 224
PATCH_SIZE = 14
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


def _preprocessor_config() -> dict[str, object]:
    return {
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_seq_length": (IMAGE_SIZE // PATCH_SIZE) ** 2,
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "PaliGemmaProcessor",
        "resample": 3,
        "rescale_factor": 1.0 / 255.0,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    }


def make_tiny_model(out_dir: str | Path, action_space: str = "mobile3", seed: int = 0) -> Path:
    """Write a complete, loadable, random tiny model directory and return its path."""
    if action_space not in MOTION_DOF:
        raise ValueError(f"action_space must be one of {sorted(MOTION_DOF)}, got {action_space!r}")
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
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": 2 * VISION_HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "vision_use_head": False,
        },
        text_config={
            "model_type": "gemma",
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 2 * TEXT_HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": TEXT_HIDDEN // 4,
            "vocab_size": vocab_size,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        image_token_index=image_token_id,
        vocab_size=vocab_size,
        projection_dim=TEXT_HIDDEN,
        hidden_size=TEXT_HIDDEN,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        vlm = PaliGemmaForConditionalGeneration(config)
        policy = PolicyConfig.create(
            action_space,
            hidden_size=TEXT_HIDDEN,
            lstm_hidden=32,
            lstm_layers=2,
            mlp_hidden=(32, 16, 8),
            model_id=f"vla_ros/tiny-{action_space}",
        )
        head = LSTMPolicyHead.from_config(policy)
        # Random rather than RoboVLMs' zero init, so a loader that drops the token is noticed.
        action_token = torch.randn(TEXT_HIDDEN) * 0.5
    finally:
        torch.random.set_rng_state(generator_state)

    with quiet_progress():
        vlm.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    (out / "preprocessor_config.json").write_text(
        json.dumps(_preprocessor_config(), indent=2) + "\n", encoding="utf-8"
    )
    policy.save(out)
    save_head_weights(out / HEAD_FILE, action_token, head)
    return out
