"""Truncated or corrupt model files: one line naming the file, exit code 2, a typed error.

Each case damages one file of a real generated tiny model the way a broken download or copy does.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from vla_ros.cli import main
from vla_ros.policy.integrity import ModelFileError, check_model_files


def truncate(fraction: float) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return damage


def overwrite(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def flip_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[10:14] = b"\xff\xfe\x00\x01"
    path.write_bytes(bytes(data))


def append(extra: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(path.read_bytes() + extra)


CASES = [
    ("model.safetensors", truncate(0.5), "truncated"),
    ("model.safetensors", truncate(0.0), "truncated"),
    ("model.safetensors", flip_header, "corrupt safetensors header"),
    ("model.safetensors", append(b"junk"), "trailing bytes"),
    ("policy_head.safetensors", truncate(0.9), "truncated"),
    ("policy_head.safetensors", overwrite(b"\x10\x00\x00\x00\x00\x00\x00\x00{}"), "truncated"),
    ("tokenizer.json", truncate(0.5), "not valid JSON"),
    ("tokenizer.json", overwrite(b"{}"), "not a valid tokenizers file"),
    ("config.json", overwrite(b'{"model_type": "paligemma"}'), "text_config is missing"),
    ("config.json", overwrite(b"\x89PNG\r\n"), "not UTF-8"),
    ("config.json", overwrite(b"[1, 2]"), "JSON object"),
    ("preprocessor_config.json", truncate(0.3), "not valid JSON"),
    ("policy.yaml", overwrite(b"action_space: [\n  mobile3\nhidden: {"), "not valid YAML"),
    ("policy.yaml", overwrite(b"action_space: hexapod\nhidden_size: 64\n"), "action_space"),
]


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_a_good_model_passes(tiny_model_dir: Path):
    check_model_files(tiny_model_dir)


@pytest.mark.parametrize(
    ("name", "damage", "problem"), CASES, ids=lambda c: getattr(c, "__name__", c)
)
def test_damaged_file_is_named_on_one_line(model_copy: Path, name, damage, problem, capsys):
    from vla_ros.policy.model import VLAPolicy

    damage(model_copy / name)
    with pytest.raises(ModelFileError) as raised:
        VLAPolicy.from_pretrained(model_copy)
    message = str(raised.value)
    assert name in message
    assert problem in message
    assert "\n" not in message
    assert main(["policy-info", str(model_copy)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("vla-ros policy-info: error: ")
    assert name in lines[0]
    assert problem in lines[0]


@pytest.mark.ros
def test_bringup_refuses_a_truncated_model_with_exit_code_2(model_copy: Path, capsys):
    truncate(0.5)(model_copy / "model.safetensors")
    assert main(["bringup", "--model-dir", str(model_copy)]) == 2
    out = capsys.readouterr().out
    assert "model.safetensors: truncated" in out


def test_make_tiny_model_refuses_a_non_empty_directory(tmp_path: Path, capsys):
    target = tmp_path / "tiny"
    target.mkdir()
    (target / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["make-tiny-model", str(target)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (target / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert main(["make-tiny-model", str(target), "--overwrite", "--mode", "arm"]) == 0
    assert not (target / "notes.txt").exists()
    check_model_files(target)
    assert main(["make-tiny-model", str(tmp_path / "fresh")]) == 0


def test_a_misspelled_policy_field_is_refused_but_metadata_is_kept(model_copy: Path):
    """`chunkk: 4` would leave the chunk at its default without a word; `trained:` is a record."""
    from vla_ros.policy.config import POLICY_FILE, PolicyConfig

    path = model_copy / POLICY_FILE
    text = path.read_text(encoding="utf-8")
    path.write_text(text + "trained: {steps: 3}\n", encoding="utf-8")
    assert PolicyConfig.load(model_copy).extra["trained"] == {"steps": 3}
    path.write_text(text + "chunkk: 4\n", encoding="utf-8")
    typo = r"'chunkk' is not a policy field \(did you mean 'chunk'\?\)"
    with pytest.raises(ValueError, match=typo):
        PolicyConfig.load(model_copy)


def flip_tensor_byte(path: Path) -> None:
    """A bit flipped inside tensor data: structurally still valid safetensors."""
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


def edit_policy_yaml(path: Path) -> None:
    """A valid-looking edit: the velocity bounds widened by hand."""
    path.write_text(path.read_text().replace("- 0.65", "- 0.95"))


@pytest.mark.parametrize(
    ("name", "damage", "problem"),
    [
        ("model.safetensors", flip_tensor_byte, "altered"),
        ("policy_head.safetensors", flip_tensor_byte, "altered"),
        ("policy.yaml", edit_policy_yaml, "altered"),
        ("generation_config.json", lambda path: path.unlink(), "missing"),
    ],
    ids=["backbone-bit", "head-bit", "policy-yaml-edit", "listed-file-removed"],
)
def test_a_checksummed_directory_names_an_altered_or_missing_file(
    model_copy: Path, name, damage, problem
):
    from vla_ros.policy.integrity import write_checksums
    from vla_ros.policy.model import VLAPolicy

    write_checksums(model_copy)
    check_model_files(model_copy)
    damage(model_copy / name)
    with pytest.raises(ModelFileError) as raised:
        VLAPolicy.from_pretrained(model_copy)
    message = str(raised.value)
    assert f"{name}:" in message
    assert problem in message
    assert "\n" not in message


def test_the_checksum_file_is_sha256sum_format(model_copy: Path):
    import subprocess

    from vla_ros.policy.integrity import CHECKSUM_FILE, write_checksums

    write_checksums(model_copy)
    listed = [
        line.split("  ", 1)[1] for line in (model_copy / CHECKSUM_FILE).read_text().splitlines()
    ]
    assert "model.safetensors" in listed
    assert "policy.yaml" in listed
    assert CHECKSUM_FILE not in listed
    if shutil.which("sha256sum"):
        done = subprocess.run(
            ["sha256sum", "--check", "--quiet", CHECKSUM_FILE], cwd=model_copy, check=False
        )
        assert done.returncode == 0
    (model_copy / CHECKSUM_FILE).write_text("not a checksum line\n")
    with pytest.raises(ModelFileError, match=f"{CHECKSUM_FILE}: line 1"):
        check_model_files(model_copy)
