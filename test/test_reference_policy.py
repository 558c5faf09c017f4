"""The committed reference policy: complete, checksummed, loadable by every tool, and still
doing what it was trained for closed loop through the real nodes.

The closed-loop test is the guard on learned behaviour: a change anywhere on the path from the
camera to the command (image conversion, trigger, codec, inference core, safety node) that
breaks it fails here, on held-out seeds, both languages and both sides.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from vla_ros.cli import main
from vla_ros.policy.integrity import CHECKSUM_FILE, ModelFileError, check_model_files, file_sha256

REFERENCE = Path(__file__).resolve().parents[1] / "models" / "reference" / "mobile3"
GUARD_SCENARIOS = ("1box_vert_left", "1box_vert_right", "2box_hori_left", "2box_hori_right")
"""Both sides twice; the languages alternate per episode, so each side gets EN and KO."""


def test_the_reference_policy_is_small_complete_and_checksummed():
    check_model_files(REFERENCE)
    files = [path for path in REFERENCE.iterdir() if path.is_file()]
    assert sum(path.stat().st_size for path in files) <= 10 * 1024 * 1024
    listed = {
        line.split("  ", 1)[1]: line.split("  ", 1)[0]
        for line in (REFERENCE / CHECKSUM_FILE).read_text().splitlines()
    }
    assert set(listed) == {p.name for p in files} - {CHECKSUM_FILE, "README.md"}
    card = (REFERENCE / "README.md").read_text(encoding="utf-8")
    for name in ("model.safetensors", "policy_head.safetensors"):
        digest = file_sha256(REFERENCE / name)
        assert listed[name] == digest
        assert re.search(rf"`{re.escape(name)}` \| `{digest}`", card), name
    for section in ("How it was made", "Closed-loop evaluation", "Licence", "not trained for"):
        assert section in card
    assert "make train-demo" in card


def test_an_altered_reference_copy_is_refused_naming_the_file(tmp_path: Path):
    copy = Path(shutil.copytree(REFERENCE, tmp_path / "mobile3"))
    data = bytearray((copy / "policy_head.safetensors").read_bytes())
    data[-5] ^= 0x10
    (copy / "policy_head.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"policy_head\.safetensors: altered"):
        check_model_files(copy)


@pytest.mark.usefixtures("torch_one_thread")
def test_policy_info_export_and_onnxruntime_load_it_unchanged(tmp_path: Path, capsys):
    from vla_ros.policy.model import VLAPolicy

    assert main(["policy-info", str(REFERENCE)]) == 0
    assert "mobile3" in capsys.readouterr().out
    copy = Path(shutil.copytree(REFERENCE, tmp_path / "mobile3"))
    assert main(["export", str(copy), "--text-buckets", "32"]) == 0
    frame = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    instruction = "Go around the box on the left and drive to the cup"
    eager = VLAPolicy.from_pretrained(copy).step(frame, instruction)
    ort = VLAPolicy.from_pretrained(copy, backend="onnxruntime").step(frame, instruction)
    np.testing.assert_allclose(ort.motion, eager.motion, atol=1e-3)


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.usefixtures("torch_one_thread")
def test_the_reference_policy_follows_the_instruction_closed_loop(tmp_path: Path):
    from vla_ros.demo import closed_loop_problems, run_closed_loop

    out = tmp_path / "closed_loop"
    summary = run_closed_loop(REFERENCE, out, scenarios=GUARD_SCENARIOS, seed=0)
    episodes = summary["episode_results"]
    assert [(e["scenario"], e["language"]) for e in episodes] == [
        ("1box_vert_left", "en"),
        ("1box_vert_right", "ko"),
        ("2box_hori_left", "en"),
        ("2box_hori_right", "ko"),
    ]
    assert closed_loop_problems(summary) == [], json.dumps(episodes, indent=1)[:4000]
    assert all(e["compliant"] for e in episodes)
    assert summary["episodes_with_foreign_publishers"] == 0
    assert 0 < summary["vlm_calls_per_frame"] <= 0.3
    assert (out / "trajectories.png").stat().st_size > 1000
    gif = out / "episode.gif"
    assert gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    assert gif.stat().st_size <= 5 * 1024 * 1024
