"""Per-frame FLOP accounting of the policy's inference path.

The backbone runs on the `meta` device (shapes only, no memory, no arithmetic) under
`torch.utils.flop_counter.FlopCounterMode`, so the count covers exactly the code `VLAPolicy.step`
runs, at any model size. `analytic_frame_flops` gives the same numbers from the config alone as a
cross-check. The LSTM head is counted analytically (aten's fused LSTM has no FLOP formula).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from vla_ros.policy.config import PolicyConfig

DEFAULT_TEXT_TOKENS = 20
"""`<eos>` + a typical short instruction + `\\n`."""


def paligemma_3b_224_config() -> Any:
    """The architecture of google/paligemma-3b-pt-224 (SigLIP-So400m/14 @224 + Gemma-2B)."""
    from transformers import PaliGemmaConfig

    return PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "vision_use_head": False,
        },
        text_config={
            "model_type": "gemma",
            "hidden_size": 2048,
            "intermediate_size": 16384,
            "num_hidden_layers": 18,
            "num_attention_heads": 8,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "vocab_size": 257216,
        },
        image_token_index=257152,
        vocab_size=257216,
        projection_dim=2048,
        hidden_size=2048,
        pad_token_id=0,
    )


def _load_config(config: Any) -> Any:
    if config is None:
        return paligemma_3b_224_config()
    if isinstance(config, str | Path):
        from transformers import PaliGemmaConfig

        path = Path(config)
        if path.is_file():
            path = path.parent
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path / 'config.json'} is missing")
        return PaliGemmaConfig.from_pretrained(str(path))
    return config


def meta_backbone(config: Any = None) -> Any:
    """A `PaliGemmaBackbone` whose weights live on the meta device (free at any size)."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    from vla_ros.policy.backbone import PaliGemmaBackbone

    with torch.device("meta"):
        vlm = PaliGemmaForConditionalGeneration(_load_config(config))
    return PaliGemmaBackbone(vlm.eval())


def head_flops(policy: PolicyConfig) -> float:
    """Multiply-adds x2 of one head call in steady state (window mode re-runs `window` steps)."""
    lstm_step = 0.0
    width = policy.hidden_size
    for _ in range(policy.lstm_layers):
        lstm_step += 2.0 * 4 * policy.lstm_hidden * (width + policy.lstm_hidden)
        width = policy.lstm_hidden
    steps = policy.window if policy.history_mode == "window" else 1
    mlp = 0.0
    outputs = [policy.chunk * policy.motion_dof] + ([policy.chunk] if policy.has_gripper else [])
    for out in outputs:
        sizes = [policy.lstm_hidden, *policy.mlp_hidden, out]
        mlp += sum(2.0 * a * b for a, b in itertools.pairwise(sizes))
    return steps * lstm_step + mlp


def count_flops(backbone: Any, text_tokens: int = DEFAULT_TEXT_TOKENS) -> dict[str, float]:
    """Count the vision and decoder FLOPs of one frame through `backbone` (any device)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if text_tokens < 3:
        raise ValueError(f"text_tokens must be >= 3 (<eos>, instruction, \\n), got {text_tokens}")
    size = backbone.image_size
    device = backbone.device
    pixels = torch.zeros(1, 3, size, size, device=device, dtype=backbone.dtype)
    text_ids = torch.full((text_tokens,), 2, dtype=torch.long, device=device)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as vision_counter:
            image_embeds = backbone.encode_image(pixels)
        with FlopCounterMode(display=False) as decoder_counter:
            backbone.feature(image_embeds, text_ids)
    return {
        "vision": float(vision_counter.get_total_flops()),
        "decoder": float(decoder_counter.get_total_flops()),
        "tokens": float(backbone.num_image_tokens + text_tokens + 1),
    }


def analytic_frame_flops(
    config: Any = None, text_tokens: int = DEFAULT_TEXT_TOKENS
) -> dict[str, float]:
    """The same per-frame FLOPs from the architecture alone (2 FLOPs per multiply-add)."""
    config = _load_config(config)
    vc, tc = config.vision_config, config.text_config
    n = (vc.image_size // vc.patch_size) ** 2
    d = vc.hidden_size
    vision = 2.0 * n * 3 * vc.patch_size**2 * d
    vision += vc.num_hidden_layers * (
        2.0 * n * 4 * d * d + 2.0 * 2 * n * n * d + 2.0 * 2 * n * d * vc.intermediate_size
    )
    vision += 2.0 * n * d * tc.hidden_size
    length = n + text_tokens + 1
    h = tc.hidden_size
    head_dim = getattr(tc, "head_dim", None) or h // tc.num_attention_heads
    q_width = tc.num_attention_heads * head_dim
    kv_width = tc.num_key_value_heads * head_dim
    per_layer = 2.0 * length * h * (2 * q_width + 2 * kv_width)
    per_layer += 2.0 * 2 * length * length * q_width
    per_layer += 2.0 * 3 * length * h * tc.intermediate_size
    return {
        "vision": vision,
        "decoder": tc.num_hidden_layers * per_layer,
        "lm_head_avoided": 2.0 * length * h * tc.vocab_size,
        "tokens": float(length),
    }


def frame_flops(
    config: Any = None,
    text_tokens: int = DEFAULT_TEXT_TOKENS,
    policy: PolicyConfig | None = None,
) -> dict[str, float]:
    """FLOPs of one `VLAPolicy.step`: vision, decoder, head, total (+ the LM head we skip).

    `config`: a PaliGemmaConfig, a model directory / config.json, or None for paligemma-3b-pt-224.
    `lm_head_avoided` is what computing the logits for every position would have added.
    """
    config = _load_config(config)
    counted = count_flops(meta_backbone(config), text_tokens)
    analytic = analytic_frame_flops(config, text_tokens)
    head = head_flops(policy) if policy is not None else 0.0
    return {
        "vision": counted["vision"],
        "decoder": counted["decoder"],
        "head": head,
        "total": counted["vision"] + counted["decoder"] + head,
        "lm_head_avoided": analytic["lm_head_avoided"],
        "tokens": counted["tokens"],
    }
