"""`make demo` keeps working: the demo on the tiny model, shortened, succeeds and reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vla_ros.cli import main

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]


def test_demo_runs_the_stack_and_writes_a_clean_summary(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "demo"
    code = main(["demo", "--model-dir", str(tiny_model_dir), "--out", str(out), "--duration", "6"])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert code == 0, summary
    assert summary["frames_in"] == 180
    assert 0 < summary["inferences"] < summary["frames_in"] / 5
    assert summary["events"].get("start") == 1
    assert summary["commands_out"] > 0
    assert summary["moving_commands"] > 0
    assert summary["nonzero_commands_before_instruction"] == 0
    assert summary["violations"] == []
    assert (out / "run" / "metadata.yaml").is_file()


def test_a_run_in_which_nothing_moved_is_not_a_pass():
    from vla_ros.demo import DemoSummary, verdict

    moved = DemoSummary(inferences=3, commands_out=100, moving_commands=40)
    assert verdict(moved) == []
    still = DemoSummary(inferences=3, commands_out=100, moving_commands=0)
    assert verdict(still) == ["none of the 100 commands moved the robot"]
    assert "the policy never ran" in verdict(DemoSummary())[0]
    early = DemoSummary(inferences=1, commands_out=5, moving_commands=5)
    early.nonzero_commands_before_instruction = 2
    assert verdict(early) == ["2 motion commands before the first instruction"]
