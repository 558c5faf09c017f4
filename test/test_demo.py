"""`make demo` keeps working: the demo on the tiny model, shortened, succeeds and reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vla_ros.cli import main

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]


def test_demo_runs_the_stack_and_writes_a_clean_summary(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "demo"
    # The closed-loop stage has its own test (test_reference_policy.py), on more episodes.
    code = main(
        [
            "demo",
            "--model-dir",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--duration",
            "6",
            "--no-closed-loop",
        ]
    )
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
    assert summary["closed_loop"] == {}


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


def test_a_closed_loop_in_which_the_robot_did_not_do_as_told_is_not_a_pass():
    from vla_ros.demo import DemoSummary, verdict

    def episode(**result):
        base = {"scenario": "1box_vert_left", "seed": 0, "language": "ko", "success": True}
        return {**base, "collision": False, "safety_violations": 0, "outcome": "success", **result}

    moved = DemoSummary(inferences=3, commands_out=100, moving_commands=40)
    moved.closed_loop = {"episode_results": [episode(), episode(language="en")]}
    assert verdict(moved) == []
    moved.closed_loop = {
        "episode_results": [
            episode(success=False, outcome="timeout"),
            episode(success=False, collision=True, outcome="collision", language="en"),
            episode(safety_violations=2),
        ]
    }
    assert verdict(moved) == [
        "closed loop 1box_vert_left seed 0 [ko]: timeout",
        "closed loop 1box_vert_left seed 0 [en]: collision",
        "closed loop 1box_vert_left seed 0 [ko]: 2 safety violations",
    ]
