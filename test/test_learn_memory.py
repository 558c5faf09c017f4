"""The analytic LoRA memory model: its parameter formulas match the real transformers classes."""

from __future__ import annotations

import pytest

from vla_ros.learn.memory import PaliGemmaSizes, lora_peak_memory


def _sizes_of(model_dir) -> PaliGemmaSizes:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    vision, text = config.vision_config, config.text_config
    return PaliGemmaSizes(
        vision_layers=vision.num_hidden_layers,
        vision_hidden=vision.hidden_size,
        vision_ffn=vision.intermediate_size,
        patch=vision.patch_size,
        image_size=vision.image_size,
        text_layers=text.num_hidden_layers,
        text_hidden=text.hidden_size,
        text_ffn=text.intermediate_size,
        heads=text.num_attention_heads,
        kv_heads=text.num_key_value_heads,
        head_dim=text.head_dim,
        vocab=text.vocab_size,
        lstm_hidden=128,
        lstm_layers=2,
        mlp_hidden=(128, 64, 32),
    )


def test_parameter_counts_match_the_real_classes(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, PaliGemmaForConditionalGeneration

    from vla_ros.policy.head import LSTMPolicyHead
    from vla_ros.policy.tiny import make_tiny_model

    model_dir = make_tiny_model(tmp_path / "m", preset="learnable")
    sizes = _sizes_of(model_dir)
    vlm = PaliGemmaForConditionalGeneration(AutoConfig.from_pretrained(str(model_dir)))
    inner = vlm.model

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(inner.vision_tower) == sizes.vision_params()
    assert count(inner.language_model) == sizes.text_params()
    assert count(inner.multi_modal_projector) == sizes.projector_params()
    head = LSTMPolicyHead(sizes.text_hidden, 10, 3, False, 128, 2, (128, 64, 32))
    assert count(head) == sizes.head_params()
    targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    lora = get_peft_model(vlm, LoraConfig(r=8, target_modules=targets))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert trainable == sizes.lora_params(8)


def test_real_3b_estimate_and_checkpointing_fit_24_gb():
    default = lora_peak_memory()
    assert default["frozen_params_billion"] == pytest.approx(2.92, abs=0.01)
    assert default["total"] > 24  # RoboVLMs' batch 4 without checkpointing does not fit
    assert lora_peak_memory(batch=2)["total"] < 24
    assert lora_peak_memory(gradient_checkpointing=True)["total"] < 12
