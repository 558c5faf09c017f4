"""Per-frame FLOPs of the real paligemma-3b-pt-224 inference path, counted on the meta device."""

from __future__ import annotations

import pytest
import torch

from vla_ros.policy.config import PolicyConfig
from vla_ros.policy.flops import (
    analytic_frame_flops,
    count_flops,
    frame_flops,
    head_flops,
    meta_backbone,
    paligemma_3b_224_config,
)

TERA = 1e12


@pytest.fixture(scope="module")
def real_backbone():
    return meta_backbone(paligemma_3b_224_config())


def test_real_architecture_on_meta(real_backbone):
    assert real_backbone.device.type == "meta"
    assert real_backbone.hidden_size == 2048
    assert real_backbone.num_image_tokens == 256
    text = real_backbone.vlm.config.text_config
    assert (text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        18,
        8,
        1,
    )
    assert text.head_dim == 256
    assert text.vocab_size == 257216
    vision = real_backbone.vlm.config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.intermediate_size) == (
        1152,
        27,
        4304,
    )


def test_real_frame_is_about_1_33_tflop_without_lm_head(real_backbone):
    calls = []
    hook = real_backbone.vlm.lm_head.register_forward_hook(lambda *args: calls.append(1))
    try:
        counted = count_flops(real_backbone, text_tokens=20)
    finally:
        hook.remove()
    assert counted["tokens"] == 256 + 20 + 1
    assert counted["vision"] / TERA == pytest.approx(0.22, rel=0.03)
    assert counted["decoder"] / TERA == pytest.approx(1.1, rel=0.03)
    total = counted["vision"] + counted["decoder"]
    assert total / TERA == pytest.approx(1.33, rel=0.02)
    assert calls == [], "the LM head must never run in the inference path"

    lm_head = analytic_frame_flops(text_tokens=20)["lm_head_avoided"]
    assert lm_head / TERA == pytest.approx(0.29, rel=0.03)
    # The counter does see an LM head when one runs: what we skip is real and ~0.3 TFLOP.
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        real_backbone.vlm.lm_head(torch.empty(1, 277, 2048, device="meta"))
    assert counter.get_total_flops() == pytest.approx(lm_head)
    assert total < 1.33 * TERA * 1.02 < total + 0.9 * lm_head


@pytest.mark.parametrize("text_tokens", [3, 20, 57])
def test_counter_agrees_with_the_analytic_formula(real_backbone, text_tokens):
    counted = count_flops(real_backbone, text_tokens=text_tokens)
    analytic = analytic_frame_flops(text_tokens=text_tokens)
    assert counted["vision"] == pytest.approx(analytic["vision"], rel=0.01)
    assert counted["decoder"] == pytest.approx(analytic["decoder"], rel=0.01)


def test_head_flops_formula():
    policy = PolicyConfig.create("arm7", hidden_size=2048)
    lstm = 2 * 4 * 1024 * (2048 + 1024) + 3 * 2 * 4 * 1024 * 2048
    mlp_trunk = 2 * (1024 * 1024 + 1024 * 512 + 512 * 256)
    mlp = 2 * mlp_trunk + 2 * 256 * 60 + 2 * 256 * 10
    assert head_flops(policy) == pytest.approx(8 * lstm + mlp)
    stateful = PolicyConfig.create("mobile3", hidden_size=2048, history_mode="stateful")
    assert head_flops(stateful) == pytest.approx(lstm + mlp_trunk + 2 * 256 * 30)


def test_frame_flops_of_a_model_directory(tiny_model_dir):
    policy = PolicyConfig.load(tiny_model_dir)
    flops = frame_flops(tiny_model_dir, policy=policy)
    assert flops["vision"] > 0
    assert flops["decoder"] > 0
    assert flops["head"] > 0
    assert flops["total"] == pytest.approx(flops["vision"] + flops["decoder"] + flops["head"])
    assert flops["total"] < 1e9
    assert frame_flops(tiny_model_dir / "config.json")["vision"] == flops["vision"]


def test_frame_flops_bad_arguments(tmp_path, real_backbone):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        frame_flops(tmp_path)
    with pytest.raises(ValueError, match="text_tokens must be >= 3"):
        count_flops(real_backbone, text_tokens=2)
