"""`bag report` and the bag CLI verbs that need no running ROS graph."""

from __future__ import annotations

import argparse
import json

import pytest
from rich.console import Console

from vla_ros.bag.io import BagError, BagWriter, bag_info, serialize
from vla_ros.bag.report import build_report, plot_report, render_table

START_NS = 1_760_000_000_000_000_000


def _event(cause: str, latency: float, model: float, count: int) -> str:
    return json.dumps(
        {
            "cause": cause,
            "frame_stamp": START_NS / 1e9,
            "latency_ms": latency,
            "model_ms": model,
            "count": count,
        }
    )


def write_run(path):
    from geometry_msgs.msg import Twist
    from std_msgs.msg import Bool, String

    with BagWriter(path) as bag:
        for topic, msgtype in (
            ("/robot1/cmd_vel", "geometry_msgs/msg/Twist"),
            ("/robot1/vla/cmd_raw", "geometry_msgs/msg/Twist"),
            ("/robot1/vla/inference_event", "std_msgs/msg/String"),
            ("/robot1/vla/estop", "std_msgs/msg/Bool"),
        ):
            bag.add_topic(topic, msgtype)
        for k in range(50):
            t = START_NS + k * 20_000_000
            twist = Twist()
            twist.linear.x = min(0.3, 0.02 * k)
            twist.angular.z = -0.1 if k > 25 else 0.0
            bag.write("/robot1/cmd_vel", t, serialize(twist))
            if k % 2 == 0:
                bag.write("/robot1/vla/cmd_raw", t, serialize(twist))
        events = [
            ("instruction", 80.0, 60.0),
            ("scene_change", 90.0, 61.0),
            ("scene_change", 100.0, 62.0),
        ]
        for k, (cause, latency, model) in enumerate(events):
            data = serialize(String(data=_event(cause, latency, model, k + 1)))
            bag.write("/robot1/vla/inference_event", START_NS + k * 300_000_000, data)
        bag.write(
            "/robot1/vla/inference_event", START_NS + 950_000_000, serialize(String(data="{oops"))
        )
        bag.write("/robot1/vla/estop", START_NS + 500_000_000, serialize(Bool(data=True)))


def test_report_summarises_commands_events_and_latency(tmp_path):
    write_run(tmp_path / "run")
    report = build_report(tmp_path / "run")
    summary = report.to_dict()
    assert summary["action_space"] == "mobile3"
    assert (summary["commands"], summary["raw_commands"]) == (50, 25)
    assert summary["peak_abs_command"] == pytest.approx([0.3, 0.0, 0.1])
    assert summary["causes"] == {"instruction": 1, "scene_change": 2}
    assert summary["malformed_events"] == 1
    assert summary["latency_ms"]["p50"] == pytest.approx(90.0)
    assert summary["latency_ms"]["max"] == pytest.approx(100.0)
    assert summary["model_ms"]["count"] == 3
    assert summary["estop_changes"] == 1
    console = Console(record=True, width=140)
    console.print(render_table(report))
    text = console.export_text()
    for needle in ("/robot1/cmd_vel", "scene_change=2", "malformed events", "90.0 / "):
        assert needle in text


def test_plot_is_a_png(tmp_path):
    write_run(tmp_path / "run")
    png = plot_report(build_report(tmp_path / "run"), tmp_path / "out" / "run.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000


def test_report_of_a_bag_without_outputs_still_works(tmp_path):
    from vla_ros.bag.synth import SynthConfig, synthesize

    synthesize(tmp_path / "cam", SynthConfig(duration_s=1.0, width=16, height=16))
    report = build_report(tmp_path / "cam")
    assert report.action_space is None
    assert report.to_dict()["events"] == 0
    assert plot_report(report, tmp_path / "cam.png").is_file()


def _parser():
    from vla_ros.bag.cli import add_commands

    parser = argparse.ArgumentParser(prog="vla-ros")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(*argv: str) -> int:
    args = _parser().parse_args(list(argv))
    return args.handler(args)


def test_cli_synth_info_report(tmp_path, capsys):
    bag = tmp_path / "demo"
    assert (
        _run(
            *("bag", "synth", str(bag), "--duration", "2", "--resolution", "32x24"),
            *("--estop", "1.0", "--estop", "1.5:off", "--scan", "--storage", "mcap"),
            *("--instruction", "0.1:go", "--instruction", "1.2:멈춰", "--segments", "moving:1"),
        )
        == 0
    )
    info = bag_info(bag)
    assert info.storage == "mcap"
    assert {t.name for t in info.topics} >= {"/scan", "/vla/estop", "/vla/instruction"}
    assert _run("bag", "info", str(bag)) == 0
    assert _run("bag", "report", str(bag), "--json", str(tmp_path / "r.json")) == 0
    assert (tmp_path / "demo_report.png").is_file()
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["estop_changes"] == 2
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("--resolution", "big"), "resolution"),
        (("--estop", "soon"), "--estop"),
        (("--estop", "1:maybe"), "on or off"),
        (("--segments", "static:x"), "segments"),
    ],
)
def test_cli_synth_bad_arguments_are_clear(tmp_path, argv, needle):
    with pytest.raises(BagError, match=needle):
        _run("bag", "synth", str(tmp_path / "x"), *argv)


def test_cli_replay_of_a_missing_bag_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _run("replay", str(tmp_path / "nowhere"))
