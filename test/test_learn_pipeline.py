"""`vla-ros train-demo`: the stages it runs and the report it writes from the eval summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vla_ros.cli import build_parser
from vla_ros.learn import pipeline
from vla_ros.policy.config import PolicyConfig


def _summary(success: float) -> dict:
    return {
        "episodes": 8,
        "success_rate": success,
        "collision_rate": 0.0,
        "compliance_rate": 1.0,
        "vlm_calls_per_frame": 0.15,
        "scenarios": {"1box_hori_left": {"success_rate": success}},
        "languages": {"en": {"success_rate": success}, "ko": {"success_rate": 1.0}},
    }


def test_report_rows_come_from_the_sim_summaries(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(_summary(0.875)))
    row = pipeline._row("eval-event", path)
    assert row["success_rate"] == 0.875
    assert row["per_scenario"] == {"1box_hori_left": 0.875}
    assert row["per_language"] == {"en": 0.875, "ko": 1.0}
    training = {
        "model": {
            "steps": 10,
            "seconds": 5.0,
            "samples_per_s": 100.0,
            "initial_val_loss": 0.5,
            "val_loss": 0.1,
            "val_nrmse": 0.2,
        }
    }
    text = pipeline._markdown({"timings_s": {"train": 5.0}, "results": [row], "training": training})
    assert "| eval-event | 8 | 87.5% | 0.0% | 100.0% | 0.150 | en 87.5%, ko 100.0% |" in text
    assert "| train | 5.0 |" in text
    assert "0.5000 -> 0.1000" in text


def _fake_stages(tmp_path, calls, cut=()):
    """Each stage's outputs, without running it; stages in `cut` stop on the clock."""

    def fake_run(name, argv, timings, log):
        calls.append((name, argv))
        timings[name] = 0.0
        if name == "init":
            (tmp_path / "model-init").mkdir()
            PolicyConfig(
                action_space="mobile3",
                hidden_size=8,
                window=6,
                action_min=(-1.0,) * 3,
                action_max=(1.0,) * 3,
                action_scale=(1.0,) * 3,
            ).save(tmp_path / "model-init")
        if name == "collect":
            episodes = [
                {"bag": str(tmp_path / "demos" / name), "success": ok}
                for name, ok in (("ok_a", True), ("crashed", False), ("ok_b", True))
            ]
            (tmp_path / "demos").mkdir()
            (tmp_path / "demos" / "demos.json").write_text(json.dumps({"episodes": episodes}))
        if name.startswith("eval"):
            out = tmp_path / name
            out.mkdir(parents=True, exist_ok=True)
            (out / "summary.json").write_text(json.dumps(_summary(1.0)))
        if name.startswith("train"):
            out = Path(argv[argv.index("--out") + 1]) / "training"
            out.mkdir(parents=True, exist_ok=True)
            summary = {"steps": 5, "planned_steps": 10, "stopped_by": "epochs", "seconds": 1.0}
            summary.update(samples_per_s=1.0, initial_val_loss=1.0, val_loss=0.5, val_nrmse=0.1)
            if name in cut:
                summary["stopped_by"] = "max_minutes"
            (out / "summary.json").write_text(json.dumps(summary))

    return fake_run


def test_stages_use_held_out_seeds_and_the_raw_command(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "_run", _fake_stages(tmp_path, calls))
    args = build_parser().parse_args(
        [
            "train-demo",
            "--out",
            str(tmp_path),
            "--eval-episodes",
            "2",
            "--ablation",
            "--lidar-guard",
        ]
    )
    assert args.handler(args) == 0
    names = [name for name, _ in calls]
    assert names == [
        "init",
        "collect",
        "dataset",
        "train-probe",
        "train-trunk",
        "train",
        "train-step-history",
        "eval-event",
        "eval-every-frame",
        "eval-step-history-event",
        "eval-event-lidar-guard",
    ]
    argv = dict(calls)
    assert argv["collect"][argv["collect"].index("--seeds") + 1] == str(pipeline.TRAIN_SEED_START)
    assert argv["eval-event"][argv["eval-event"].index("--seeds") + 1] == "0"
    # Held-out episodes alternate English and Korean instructions.
    assert all(argv[name][argv[name].index("--language") + 1] == "both" for name in names[7:])
    # Behind the safety node's lidar guard too: the policy's collisions vs the stack's.
    assert "--params-overlay" not in argv["eval-event"]
    guard = argv["eval-event-lidar-guard"]
    assert Path(guard[guard.index("--params-overlay") + 1]).is_file()
    assert "/vla/cmd_expert" in argv["dataset"]
    bags = [a for a in argv["dataset"] if a.startswith(str(tmp_path / "demos"))]
    assert [bag.rsplit("/", 1)[-1] for bag in bags] == ["ok_a", "ok_b"]

    def value(stage, flag):
        return argv[stage][argv[stage].index(flag) + 1]

    # The head is fitted on the random trunk first (so the trunk does not collapse to the mean),
    # the trunk then learns from it on single frames; both head stages start from the trunk at
    # the init's window.
    assert (value("train-probe", "--recipe"), value("train-probe", "--window")) == ("head", "1")
    assert value("train-probe", "--init") == str(tmp_path / "model-init")
    assert (value("train-trunk", "--recipe"), value("train-trunk", "--window")) == ("full", "1")
    assert value("train-trunk", "--init") == str(tmp_path / "model-probe")
    for stage in ("train", "train-step-history"):
        assert value(stage, "--recipe") == "head"
        assert value(stage, "--init") == str(tmp_path / "model-trunk")
        assert value(stage, "--window") == "6"
    assert value("train", "--history") == "event"
    assert value("train-step-history", "--history") == "step"
    assert (tmp_path / "report.md").is_file()


def test_by_default_only_the_model_and_its_two_evals_are_made(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "_run", _fake_stages(tmp_path, calls))
    args = build_parser().parse_args(["train-demo", "--out", str(tmp_path), "--eval-episodes", "2"])
    assert args.handler(args) == 0
    names = [name for name, _ in calls]
    assert names[-3:] == ["train", "eval-event", "eval-every-frame"]
    assert "train-step-history" not in names
    # The reference card's command line (--no-ablation) still parses to the same run.
    again = build_parser().parse_args(["train-demo", "--out", str(tmp_path), "--no-ablation"])
    assert (again.ablation, again.lidar_guard) == (False, False)
    assert (tmp_path / "report.json").is_file()


def test_budgets_are_epochs_and_the_clock_is_only_a_guard_that_is_reported(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "_run", _fake_stages(tmp_path / "a", calls))
    args = build_parser().parse_args(["train-demo", "--out", str(tmp_path / "a")])
    assert args.handler(args) == 0
    trains = {name: argv for name, argv in calls if name.startswith("train")}
    assert trains, "no training stage ran"
    for name, argv in trains.items():
        assert "--max-minutes" not in argv, f"{name} stops on the clock by default"
        assert argv[argv.index("--seed") + 1] == "0"
        assert "--epochs" in argv
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["cut_by_max_minutes"] == []

    calls.clear()
    out = tmp_path / "b"
    monkeypatch.setattr(pipeline, "_run", _fake_stages(out, calls, cut=("train-trunk",)))
    argv = ["train-demo", "--out", str(out), "--max-minutes", "7", "--seed", "2"]
    args = build_parser().parse_args(argv)
    assert args.handler(args) == pipeline.CUT_EXIT
    for name, stage in calls:
        if name.startswith("train"):
            assert stage[stage.index("--max-minutes") + 1] == "7.0"
            assert stage[stage.index("--seed") + 1] == "2"
    init = dict(calls)["init"]
    assert init[init.index("--seed") + 1] == "2"
    report = json.loads((out / "report.json").read_text())
    assert report["cut_by_max_minutes"] == ["model-trunk"]
    assert "Cut by --max-minutes: model-trunk" in (out / "report.md").read_text()


def test_training_stages_are_configurations_recorded_as_the_command_that_makes_each(
    tmp_path, monkeypatch
):
    import shlex

    from vla_ros.learn.config import TrainConfig

    calls = []
    monkeypatch.setattr(pipeline, "_run", _fake_stages(tmp_path, calls))
    args = build_parser().parse_args(["train-demo", "--out", str(tmp_path), "--ablation"])
    assert args.handler(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    expected = dict(pipeline._training_configs(args, tmp_path, 6))
    assert list(expected) == ["train-probe", "train-trunk", "train", "train-step-history"]
    for name, config in expected.items():
        words = shlex.split(report["commands"][name])
        assert words[:2] == ["vla-ros", "train"]
        assert dict(calls)[name] == words[1:]
        parsed = build_parser().parse_args(words[1:])
        assert TrainConfig.from_args(parsed) == config, name
        assert f"- {name}: `vla-ros train " in (tmp_path / "report.md").read_text()
    assert report["commands"]["eval-event"].startswith("vla-ros sim eval ")


def test_a_training_option_out_of_range_stops_train_demo_before_the_demonstrations(
    tmp_path, monkeypatch
):
    calls = []
    monkeypatch.setattr(pipeline, "_run", _fake_stages(tmp_path, calls))
    args = build_parser().parse_args(["train-demo", "--out", str(tmp_path), "--trunk-lr", "-1"])
    with pytest.raises(ValueError, match="lr must be > 0"):
        args.handler(args)
    assert [name for name, _ in calls] == ["init"]
