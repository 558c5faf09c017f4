"""PaliGemmaBackbone: causal attention, 4.44 scaling, ACT feature, text cache, preprocessing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_ros.policy.backbone import (
    MAX_TEXT_TOKENS,
    ImagePreprocessing,
    PaliGemmaBackbone,
)

SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def backbone(tiny_model_dir):
    model = PaliGemmaBackbone.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.action_token.copy_(
            torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(0))
        )
    return model


@pytest.fixture(scope="module")
def hf_processor(tiny_model_dir):
    from transformers import PaliGemmaProcessor

    return PaliGemmaProcessor.from_pretrained(str(tiny_model_dir))


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def frame_sequence(backbone, instruction="pick up the red cup", seed=0):
    with torch.inference_mode():
        pixels = backbone.preprocess(random_image(224, 224, seed))
        return backbone.sequence(backbone.encode_image(pixels), backbone.text_ids(instruction))


def test_sequence_layout_and_scaling(backbone):
    ids = backbone.text_ids("go to the kitchen")
    with torch.inference_mode():
        image = backbone.encode_image(backbone.preprocess(random_image(224, 224)))
        embeds, act = backbone.sequence(image, ids)
    n, h = backbone.num_image_tokens, backbone.hidden_size
    assert embeds.shape == (1, 1 + n + (len(ids) - 2) + 1 + 1, h)
    assert act == embeds.shape[1] - 2
    table = backbone.language_model.embed_tokens.weight
    norm = math.sqrt(h)
    # 4.44 semantics: raw table rows and the image (already / sqrt(h)) and ACT, all * sqrt(h).
    torch.testing.assert_close(embeds[0, 0], table[ids[0]] * norm)
    torch.testing.assert_close(embeds[0, 1 : 1 + n], image[0] * norm)
    torch.testing.assert_close(embeds[0, 1 + n : act], table[ids[1:-1]] * norm)
    torch.testing.assert_close(embeds[0, act], backbone.action_token * norm)
    torch.testing.assert_close(embeds[0, -1], table[ids[-1]] * norm)
    # Net effect equals transformers 5.x's own embedding module (which scales internally).
    torch.testing.assert_close(embeds[0, 0], backbone.language_model.embed_tokens(ids[:1])[0])


def test_image_features_divided_exactly_once(backbone):
    pixels = backbone.preprocess(random_image(224, 224))
    with torch.inference_mode():
        ours = backbone.encode_image(pixels)
        hf = backbone.vlm.model.get_image_features(pixels).pooler_output
    # transformers 5.x does not divide: ours is HF's projector output / sqrt(hidden), once.
    torch.testing.assert_close(ours * math.sqrt(backbone.hidden_size), hf)
    assert not torch.allclose(ours, hf)


@SETTINGS
@given(cut=st.integers(0, 400), seed=st.integers(0, 1000))
def test_a_later_token_cannot_change_an_earlier_output(backbone, cut, seed):
    embeds, _ = frame_sequence(backbone)
    cut = cut % embeds.shape[1]
    changed = embeds.clone()
    noise = torch.randn(changed[:, cut:].shape, generator=torch.Generator().manual_seed(seed))
    changed[:, cut:] += noise * 5.0
    with torch.inference_mode():
        before = backbone.decode(embeds)
        after = backbone.decode(changed)
    torch.testing.assert_close(after[:, :cut], before[:, :cut], atol=1e-6, rtol=1e-6)
    assert (after[:, cut:] - before[:, cut:]).abs().max() > 1e-3


def test_act_feature_ignores_the_trailing_newline(backbone):
    embeds, act = frame_sequence(backbone)
    changed = embeds.clone()
    changed[0, -1] = -changed[0, -1] + 3.0
    with torch.inference_mode():
        assert torch.allclose(backbone.decode(embeds)[0, act], backbone.decode(changed)[0, act])


def test_transformers_default_would_attend_both_ways(tiny_model_dir, backbone):
    """Why force_causal exists: the stock 5.x PaliGemma Gemma attends bidirectionally here."""
    from transformers import PaliGemmaForConditionalGeneration

    stock = PaliGemmaForConditionalGeneration.from_pretrained(str(tiny_model_dir)).eval()
    assert stock.config.text_config.use_bidirectional_attention is True
    embeds, _ = frame_sequence(backbone)
    cut = 100
    changed = embeds.clone()
    changed[:, cut:] = torch.randn(
        changed[:, cut:].shape, generator=torch.Generator().manual_seed(1)
    )
    positions = torch.arange(1, embeds.shape[1] + 1).unsqueeze(0)
    with torch.inference_mode():
        a = stock.model.language_model(inputs_embeds=embeds, position_ids=positions)
        b = stock.model.language_model(inputs_embeds=changed, position_ids=positions)
        ours_a, ours_b = backbone.decode(embeds), backbone.decode(changed)
    stock_change = (a.last_hidden_state[:, :cut] - b.last_hidden_state[:, :cut]).abs().max()
    ours_change = (ours_a[:, :cut] - ours_b[:, :cut]).abs().max()
    assert stock_change > 1e-3
    assert ours_change < 1e-6


def test_feature_equals_hf_token_path_with_act_as_a_vocab_token(tiny_model_dir):
    """Cross-check the whole sequence construction against transformers' own input_ids path.

    With the action token set to a vocabulary row (unscaled, as RoboVLMs' word embedding), our
    4.44-style sequence must equal HF 5.x embedding `[<eos>] <image>*256 [text] [that token] [\\n]`.
    """
    from transformers import PaliGemmaForConditionalGeneration

    vlm = PaliGemmaForConditionalGeneration.from_pretrained(str(tiny_model_dir)).eval()
    model = PaliGemmaBackbone(vlm, backbone_tokenizer(tiny_model_dir))
    token = 300
    with torch.no_grad():
        model.action_token.copy_(model.language_model.embed_tokens.weight[token])
    ids = model.text_ids("빨간 컵을 집어")
    pixels = model.preprocess(random_image(224, 224, seed=3))
    image_id = vlm.config.image_token_index
    input_ids = torch.cat(
        [
            ids[:1],
            torch.full((model.num_image_tokens,), image_id),
            ids[1:-1],
            torch.tensor([token]),
            ids[-1:],
        ]
    ).unsqueeze(0)
    lm_head_calls = []
    vlm.lm_head.register_forward_hook(lambda *args: lm_head_calls.append(1))
    with torch.inference_mode():
        ours = model(pixels, ids)
        hf = vlm.model(input_ids=input_ids, pixel_values=pixels).last_hidden_state[0, -2]
    torch.testing.assert_close(ours, hf, atol=1e-4, rtol=1e-4)
    assert lm_head_calls == []


def backbone_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def test_text_ids_layout_and_korean(backbone):
    tokenizer = backbone.tokenizer
    for text in (
        "  pick up the red cup  ",
        "빨간 컵을 집어서 그릇에 넣어",
        "move 🤖 zebra, then STOP!",
    ):
        ids = backbone.text_ids(text).tolist()
        assert ids[0] == tokenizer.eos_token_id
        assert tokenizer.convert_ids_to_tokens(ids[-1]) == "\n"
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids[1:-1]) == text.strip()


def test_same_instruction_is_tokenized_once(backbone, monkeypatch):
    calls = []
    original = type(backbone.tokenizer).__call__

    def counting(self, *args, **kwargs):
        calls.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(backbone.tokenizer), "__call__", counting)
    first = backbone.text_ids("open the drawer slowly")
    again = backbone.text_ids("  open the drawer slowly\n")
    assert len(calls) == 1
    assert again is first
    backbone.text_ids("close the drawer")
    assert len(calls) == 2


def test_too_long_instruction_is_refused(backbone):
    with pytest.raises(ValueError, match=f"at most {MAX_TEXT_TOKENS} are supported"):
        backbone.text_ids("go " * 400)


def hf_pixels(processor, image):
    out = processor.image_processor(images=image, return_tensors="pt")
    return out["pixel_values"]


def test_preprocessing_matches_hf_processor_at_native_size(backbone, hf_processor):
    image = random_image(224, 224, seed=5)
    torch.testing.assert_close(
        backbone.preprocess(image), hf_pixels(hf_processor, image), atol=1e-6, rtol=1e-6
    )


@SETTINGS
@given(
    height=st.integers(8, 320),
    width=st.integers(8, 320),
    seed=st.integers(0, 1000),
    strided=st.booleans(),
)
def test_preprocessing_matches_hf_processor_any_size(
    backbone, hf_processor, height, width, seed, strided
):
    image = random_image(height, width * (2 if strided else 1), seed)
    if strided:
        image = image[:, ::2]
    ours = backbone.preprocess(image)
    assert ours.shape == (1, 3, 224, 224)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, hf_pixels(hf_processor, image), atol=1e-5, rtol=1e-5)


def test_preprocessing_accepts_read_only_frames(backbone, recwarn):
    image = random_image(224, 224, seed=2)
    frozen = np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(224, 224, 3)
    assert not frozen.flags.writeable
    assert torch.equal(backbone.preprocess(frozen), backbone.preprocess(image))
    assert not [w for w in recwarn if "not writable" in str(w.message)]


def test_preprocessor_config_is_read(tmp_path, tiny_model_dir):
    config = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    loaded = ImagePreprocessing.from_file(tiny_model_dir / "preprocessor_config.json")
    assert loaded.size == config["size"]["height"] == 224
    assert loaded.image_mean == tuple(config["image_mean"])
    assert loaded.resample == config["resample"]
    scale, offset = loaded.affine()
    assert np.allclose(scale * 255 + offset, 1.0)
    assert np.allclose(offset, -1.0)

    bad = tmp_path / "preprocessor_config.json"
    bad.write_text(json.dumps(config | {"size": {"height": 224, "width": 256}}))
    with pytest.raises(ValueError, match="only square"):
        ImagePreprocessing.from_file(bad)
    bad.write_text(json.dumps(config | {"image_mean": 0.25, "image_std": [0.5, 0.5, 0.5]}))
    assert ImagePreprocessing.from_file(bad).image_mean == (0.25, 0.25, 0.25)
    bad.write_text(json.dumps(config | {"image_std": [0.5, 0.5]}))
    with pytest.raises(ValueError, match="image_std must be 1 or 3 finite numbers"):
        ImagePreprocessing.from_file(bad)
    bad.write_text(json.dumps(config | {"image_std": [0.5, 0.0, 0.5]}))
    with pytest.raises(ValueError, match="image_std must be > 0"):
        ImagePreprocessing.from_file(bad)
    bad.write_text(json.dumps(config | {"image_mean": "grey"}))
    with pytest.raises(ValueError, match="image_mean must be 1 or 3 numbers"):
        ImagePreprocessing.from_file(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ImagePreprocessing.from_file(bad)
    with pytest.raises(FileNotFoundError, match="preprocessing is unknown"):
        ImagePreprocessing.from_file(tmp_path / "absent.json")


def test_preprocessor_size_must_match_the_vision_tower(backbone):
    with pytest.raises(ValueError, match=r"does not match config\.json vision_config\.image_size"):
        PaliGemmaBackbone(backbone.vlm, backbone.tokenizer, ImagePreprocessing(size=256))


def test_rejects_a_model_that_is_not_paligemma():
    with pytest.raises(
        ValueError, match="expected a transformers PaliGemmaForConditionalGeneration"
    ):
        PaliGemmaBackbone(torch.nn.Linear(2, 2))
