"""make_tiny_model (HF-loadable, English+Korean tokenizer, deterministic), hub offline path, CLI."""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.policy import cli as policy_cli
from vla_ros.policy.config import HEAD_FILE, POLICY_FILE, PolicyConfig
from vla_ros.policy.tiny import IMAGE_TOKEN, make_tiny_model

HANGUL = st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3)
ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
JAMO_AND_PUNCT = st.sampled_from([*list("ㄱㅏ。、？！…—“”"), "\t", "é", "ß", "日"])


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def digest(directory) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


def test_directory_layout(tiny_model_dir, tiny_arm_model_dir):
    expected = {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        POLICY_FILE,
        HEAD_FILE,
    }
    assert expected <= {p.name for p in tiny_model_dir.iterdir()}
    assert PolicyConfig.load(tiny_model_dir).action_space == "mobile3"
    arm = PolicyConfig.load(tiny_arm_model_dir)
    assert arm.action_space == "arm7"
    assert arm.hidden_size == 64
    assert arm.model_id == "vla_ros/tiny-arm7"


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_loads_with_the_hf_processor_and_model_offline(tiny_model_dir):
    from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    processor = PaliGemmaProcessor.from_pretrained(str(tiny_model_dir))
    model = PaliGemmaForConditionalGeneration.from_pretrained(str(tiny_model_dir)).eval()
    assert type(processor.tokenizer).__name__ == "GemmaTokenizer"
    assert type(processor.image_processor).__name__.startswith("SiglipImageProcessor")
    frame = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    inputs = processor(images=frame, text="<image>빨간 컵을 집어", return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 224, 224)
    image_id = model.config.image_token_index
    assert processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == image_id
    assert int((inputs["input_ids"] == image_id).sum()) == 256
    assert int(inputs["input_ids"].max()) < model.config.text_config.vocab_size
    with torch.inference_mode():
        out = model(**{k: v for k, v in inputs.items() if k != "labels"})
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], len(processor.tokenizer))
    assert torch.isfinite(out.logits).all()


def test_special_tokens(tokenizer):
    for token in ("<pad>", "<eos>", "<bos>", "<unk>", IMAGE_TOKEN, "<loc0000>", "<seg127>"):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert ids == [tokenizer.convert_tokens_to_ids(token)], token
    assert tokenizer.eos_token == "<eos>"
    assert tokenizer.bos_token == "<bos>"
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.convert_tokens_to_ids("\n") != tokenizer.unk_token_id


@settings(max_examples=40, deadline=None)
@given(text=st.text(st.one_of(HANGUL, ASCII, JAMO_AND_PUNCT), min_size=1, max_size=40))
def test_any_english_or_korean_text_has_no_unknown_tokens(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    special_free = all(s not in text for s in ("<", ">"))
    if special_free:
        assert tokenizer.decode(ids) == text


def test_common_instructions_use_learned_pieces(tokenizer):
    for text in ("pick up the red cup", "빨간 컵을 집어서 그릇에 넣어"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) < len(text.encode("utf-8")) / 2
        assert all(not t.startswith("<0x") for t in tokenizer.convert_ids_to_tokens(ids))


def test_deterministic_per_seed(tmp_path, tiny_model_dir):
    again = make_tiny_model(tmp_path / "again", "mobile3", seed=0)
    assert digest(again) == digest(tiny_model_dir)
    other = make_tiny_model(tmp_path / "other", "mobile3", seed=5)
    different = digest(other)
    assert different["model.safetensors"] != digest(tiny_model_dir)["model.safetensors"]
    assert different[HEAD_FILE] != digest(tiny_model_dir)[HEAD_FILE]
    assert different["tokenizer.json"] == digest(tiny_model_dir)["tokenizer.json"]


def test_does_not_disturb_the_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny_model(tmp_path / "m", "arm7", seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_rejects_unknown_action_space(tmp_path):
    with pytest.raises(ValueError, match="action_space must be one of"):
        make_tiny_model(tmp_path / "x", "hexapod")


# --- hub: only the offline path can be exercised here ----------------------------------------


def test_fetch_model_offline_gives_clear_instructions(tmp_path, monkeypatch):
    from vla_ros.policy.hub import fetch_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as info:
        fetch_model(tmp_path / "real")
    message = str(info.value)
    for needle in ("HF_HUB_OFFLINE", "network", "licence", "HF_TOKEN", "5.9 GB"):
        assert needle in message
    assert not (tmp_path / "real").exists()


def test_fetch_model_connection_error_becomes_runtime_error(tmp_path, monkeypatch):
    import huggingface_hub

    from vla_ros.policy import hub

    def unreachable(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("connection refused")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "DOWNLOAD_BYTES", 1.0)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(RuntimeError, match=r"cannot reach the Hugging Face hub.*HF_TOKEN"):
        hub.fetch_model(tmp_path / "real", action_space="arm7")
    with pytest.raises(ValueError, match="action_space must be one of"):
        hub.fetch_model(tmp_path / "real", action_space="boat")


def test_fetch_model_writes_policy_yaml_after_a_download(
    tmp_path, monkeypatch, caplog, tiny_model_dir
):
    """The success path, with the hub replaced by a copy of the tiny backbone files."""
    import logging
    import shutil

    import huggingface_hub

    from vla_ros.policy import hub

    def fake_download(repo_id, *, revision, token, local_dir, allow_patterns):
        assert repo_id == "google/paligemma-3b-pt-224"
        assert "*.safetensors" in allow_patterns
        for path in tiny_model_dir.iterdir():
            if path.name not in (POLICY_FILE, HEAD_FILE):
                shutil.copy(path, local_dir)
        return local_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "DOWNLOAD_BYTES", 1.0)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    with caplog.at_level(logging.WARNING, logger="vla_ros.policy.hub"):
        out = hub.fetch_model(tmp_path / "real", action_space="arm7", revision="abc")
    config = PolicyConfig.load(out)
    assert config.action_space == "arm7"
    assert config.hidden_size == 64
    assert config.model_id == "google/paligemma-3b-pt-224@abc"
    assert not (out / HEAD_FILE).exists()
    assert "import-robovlms" in caplog.text


# --- CLI -------------------------------------------------------------------------------------


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="vla-ros")
    policy_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_make_tiny_model_and_policy_info(tmp_path, capsys):
    out = tmp_path / "cli_model"
    assert run_cli(["make-tiny-model", str(out), "--mode", "arm", "--seed", "2"]) == 0
    assert PolicyConfig.load(out).action_space == "arm7"
    assert run_cli(["policy-info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "vla_ros/tiny-arm7" in printed
    assert "total per frame" in printed
    assert "LM head (skipped)" in printed
    assert "277" in printed


def test_cli_parses_fetch_and_import_arguments():
    parser = argparse.ArgumentParser(prog="vla-ros")
    policy_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    fetch = parser.parse_args(["fetch-model", "--init-head", "--mode", "arm7"])
    assert fetch.init_head
    assert fetch.repo_id == "google/paligemma-3b-pt-224"
    imp = parser.parse_args(
        ["import-robovlms", "x.ckpt", "--config", "c.json", "--backbone", "b", "--out", "o"]
    )
    assert imp.mode is None
    assert not imp.allow_pickle
    with pytest.raises(SystemExit):
        parser.parse_args(["make-tiny-model", "o", "--mode", "hexapod"])


def test_cli_fetch_offline_is_a_runtime_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="offline"):
        run_cli(["fetch-model", "--out", str(tmp_path / "m")])
