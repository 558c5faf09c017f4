"""`vla-ros faults drill`: the analysis of a trial, and a short drill through real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vla_ros.cli import main
from vla_ros.faults import ZERO, Sample, Trial, analyse, summarise


def _trial(speeds: list[float], fault: str = "camera-stop", **times: float) -> Trial:
    """Samples every 0.1 s from t = 0; the fault from 1.0 s to 2.0 s unless given."""
    samples = [Sample(round(0.1 * i, 1), v) for i, v in enumerate(speeds)]
    return Trial(fault, times.get("onset", 1.0), times.get("cleared", 2.0), samples)


def test_time_to_zero_is_when_the_output_stays_zero_not_its_first_dip():
    moving, dip = [0.3] * 10, [0.3, 0.0, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    result = analyse(_trial(moving + dip + [0.0] * 5))
    assert result["time_to_zero_s"] == pytest.approx(0.4)
    assert result["moving_before_onset"] is True
    assert result["peak_after_onset"] == 0.3
    assert result["distance_after_onset"] == pytest.approx(0.3 * 0.1 * 3)
    never = analyse(_trial(moving + [0.3] * 11))
    assert never["time_to_zero_s"] is None
    table = summarise([result, never])["camera-stop"]
    assert table["never_zero"] == 1
    assert table["time_to_zero_max_s"] is None
    assert table["meets_zero_target"] is False


def test_a_silent_output_leaves_the_last_command_in_force():
    """A stalled /clock silences the output: the base keeps the last command until the
    steady-clock guard's zero arrives, and that is the time to zero, not the onset."""
    moving = [0.3] * 10
    trial = _trial(moving, "clock-stall", cleared=3.0)
    trial.samples.append(Sample(2.0, 0.0))
    result = analyse(trial)
    assert result["time_to_zero_s"] == pytest.approx(1.0)
    assert result["distance_after_onset"] == pytest.approx(0.3 * 1.0)
    assert result["peak_after_onset"] == 0.3
    silent = analyse(_trial(moving, "clock-stall", cleared=3.0))
    assert silent["time_to_zero_s"] is None, "silence with a moving command in force"


def test_a_restart_that_drives_before_a_new_instruction_is_counted():
    speeds = [0.3] * 10 + [0.0] * 20 + [0.2] * 3 + [0.0] * 7 + [0.3] * 10
    trial = _trial(speeds, "kill-inference", cleared=2.5)
    trial.restart_s, trial.instruction_again_s = 2.5, 4.0
    result = analyse(trial)
    assert result["resumed_without_instruction"] is True
    assert summarise([result])["kill-inference"]["resumes_without_instruction"] == 1
    held = [0.3] * 10 + [0.0] * 30 + [0.3] * 10
    trial = _trial(held, "kill-inference", cleared=2.5)
    trial.restart_s, trial.instruction_again_s = 2.5, 4.0
    result = analyse(trial)
    assert result["resumed_without_instruction"] is False
    assert result["moving_again_after_s"] == pytest.approx(4.0 - 2.5, abs=0.11)
    assert all(s.speed <= ZERO for s in trial.samples if 1.0 < s.t < 4.0)


def test_bad_arguments_are_usage_errors(tmp_path, tiny_model_dir):
    assert main(["faults", "drill", "--model-dir", str(tmp_path), "--repeats", "1"]) == 2
    argv = ["faults", "drill", "--model-dir", str(tiny_model_dir)]
    assert main([*argv, "--faults", "meteor"]) == 2
    assert main([*argv, "--repeats", "0"]) == 2


@pytest.mark.ros
@pytest.mark.slow
def test_a_short_drill_through_real_processes_stops_and_does_not_resume_alone(
    tiny_model_dir: Path, tmp_path: Path
):
    """Ordering, not timing: after each fault the output went to zero before the fault ended
    (a frozen camera too, though its stamps stay fresh; a stalled /clock too, though no ROS timer
    fires), drove again once it cleared, and the restarted inference node drove again only after
    a new instruction."""
    import os

    out = tmp_path / "drill"
    argv = ["faults", "drill", "--model-dir", str(tiny_model_dir), "--out", str(out)]
    domain = os.environ.get("ROS_DOMAIN_ID")
    faults = "kill-inference,camera-stop,camera-freeze,clock-stall"
    assert main([*argv, "--faults", faults, "--repeats", "1"]) == 0
    assert os.environ.get("ROS_DOMAIN_ID") == domain, "the drill leaked its domain"
    report = json.loads((out / "faults.json").read_text(encoding="utf-8"))
    assert "conditions" in report
    for trial in report["trials"]:
        assert trial["moving_before_onset"], trial
        assert trial["time_to_zero_s"] is not None, trial
        assert trial["moving_again_after_s"] is not None, trial
    kill = next(t for t in report["trials"] if t["fault"] == "kill-inference")
    assert kill["resumed_without_instruction"] is False
    assert (out / "kill-inference.png").is_file()
    assert (out / "camera-stop.png").is_file()
    assert (out / "clock-stall.png").is_file()
    assert {t["fault"] for t in report["trials"]} == set(faults.split(","))
