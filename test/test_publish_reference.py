"""`vla-ros publish-reference`: a finished train-demo run -> a checksummed reference directory
whose card says how it was made; unfinished, clock-cut or oversized runs are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vla_ros.cli import main
from vla_ros.learn import reference
from vla_ros.policy.integrity import CHECKSUM_FILE, ModelFileError, check_model_files, file_sha256

COMMAND = "make train-demo TRAIN_DEMO_ARGS='--seed 3'"


def _run(tmp_path: Path, tiny_model_dir: Path, **report_extra: object) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    (run / "model" / "checkpoint-1").mkdir()
    (run / "demos").mkdir()
    episodes = [
        {"scenario": "1box_hori_left", "seed": 1000 + i, "success": i != 2} for i in range(4)
    ]
    (run / "demos" / "demos.json").write_text(json.dumps({"episodes": episodes}))
    row = {
        "run": "eval-event",
        "episodes": 160,
        "success_rate": 0.975,
        "collision_rate": 0.0,
        "compliance_rate": 1.0,
        "vlm_calls_per_frame": 0.17,
        "per_language": {"en": 0.975, "ko": 0.975},
        "intervals_95": {"success_rate": [0.937, 0.99]},
    }
    report = {"seed": 3, "results": [row], "timings_s": {"collect": 600.0}, **report_extra}
    (run / "report.json").write_text(json.dumps(report))
    return run


def test_the_card_names_command_seed_data_rates_and_every_digest(tmp_path, tiny_model_dir):
    out = tmp_path / "reference" / "mobile3"
    code = main(
        [
            "publish-reference",
            str(_run(tmp_path, tiny_model_dir)),
            "--out",
            str(out),
            "--command",
            COMMAND,
        ]
    )
    assert code == 0
    check_model_files(out)
    assert not (out / "checkpoint-1").exists()
    card = (out / "README.md").read_text(encoding="utf-8")
    assert COMMAND in card
    assert "Seed 3" in card
    assert "4 scripted-expert demonstrations" in card
    assert "the 3 successful ones" in card
    assert "seeds 1000-1003" in card
    assert "| eval-event | 160 | 97.5% [93.7%, 99.0%] |" in card
    assert "| collect | 600.0 |" in card
    listed = (out / CHECKSUM_FILE).read_text().splitlines()
    assert f"{file_sha256(out / 'model.safetensors')}  model.safetensors" in listed
    assert f"`model.safetensors` | `{file_sha256(out / 'model.safetensors')}`" in card


def test_a_changed_weight_after_publishing_is_refused(tmp_path, tiny_model_dir):
    out = tmp_path / "ref"
    reference.publish(_run(tmp_path, tiny_model_dir), out, COMMAND)
    (out / "policy.yaml").write_text((out / "policy.yaml").read_text() + "\n")
    with pytest.raises(ModelFileError, match=r"policy\.yaml: altered"):
        check_model_files(out)


def test_a_run_cut_by_the_clock_is_not_published(tmp_path, tiny_model_dir):
    run = _run(tmp_path, tiny_model_dir, cut_by_max_minutes=["train-trunk"])
    with pytest.raises(ValueError, match="not reproducible"):
        reference.publish(run, tmp_path / "ref", COMMAND)
    assert not (tmp_path / "ref").exists()


def test_an_unfinished_run_is_refused_naming_what_is_missing(tmp_path, tiny_model_dir):
    run = _run(tmp_path, tiny_model_dir)
    (run / "report.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"report\.json not found"):
        reference.publish(run, tmp_path / "ref", COMMAND)


def test_an_oversized_model_is_refused_and_nothing_is_left(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(reference, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="more than a reference policy may hold"):
        reference.publish(_run(tmp_path, tiny_model_dir), tmp_path / "ref", COMMAND)
    assert not (tmp_path / "ref").exists()
