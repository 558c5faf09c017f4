"""A mid-size model directory: PaliGemma-3B widths with only a few layers (benchmarks, export).

SigLIP So400m widths (1152, MLP 4304, 16 heads, 224 px / patch 14 -> 256 tokens) and Gemma-2B
widths (2048, MLP 16384, MQA 8 x 256), RoboVLMs' head (LSTM 2048 -> 1024 x 4), random weights and
the tiny model's tokenizer. Per layer it costs what a 3B layer costs, so backend speed ratios
measured on it carry over to the full model far better than the tiny model's; with 2 + 2 layers
it is ~1 GB in fp32 and exports in seconds.
"""

from __future__ import annotations

from pathlib import Path

from vla_ros.policy.config import HEAD_FILE, PolicyConfig


def make_wide_model(
    out_dir: str | Path,
    vision_layers: int = 2,
    text_layers: int = 2,
    action_space: str = "mobile3",
    seed: int = 0,
) -> Path:
    """Write a loadable mid-size model directory (random weights) and return its path."""
    import torch
    from transformers import AutoTokenizer, PaliGemmaForConditionalGeneration

    from vla_ros.policy.backbone import quiet_progress
    from vla_ros.policy.flops import paligemma_3b_224_config
    from vla_ros.policy.head import LSTMPolicyHead, save_head_weights
    from vla_ros.policy.tiny import make_tiny_model

    out = make_tiny_model(out_dir, action_space, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    config = paligemma_3b_224_config()
    config.vision_config.num_hidden_layers = vision_layers
    config.text_config.num_hidden_layers = text_layers
    vocab = len(tokenizer)
    config.text_config.vocab_size = vocab
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(config.text_config, name, getattr(tokenizer, name))
    config.pad_token_id = tokenizer.pad_token_id
    policy = PolicyConfig.create(
        action_space,
        hidden_size=config.text_config.hidden_size,
        model_id=f"vla_ros/wide-{vision_layers}v{text_layers}t-{action_space}",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vlm = PaliGemmaForConditionalGeneration(config)
        head = LSTMPolicyHead.from_config(policy)
        action_token = torch.randn(config.text_config.hidden_size) * 0.5
    for stale in out.glob("model*.safetensors*"):
        stale.unlink()
    with quiet_progress():
        vlm.save_pretrained(str(out))
    policy.save(out)
    save_head_weights(out / HEAD_FILE, action_token, head)
    return out
