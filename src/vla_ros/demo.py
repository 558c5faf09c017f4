"""`vla-ros demo` (what `make demo` runs): the whole stack on a generated model and a synthetic bag.

Synthesises a 30 fps camera bag (static and moving stretches, an English then a Korean
instruction, an e-stop near the end), replays it with `/clock` through camera -> inference ->
safety nodes on real DDS, records what they publish, checks every command against the safety
invariants and prints a summary. Bag time drives the nodes (`use_sim_time`), exactly as a user
replays a recorded robot run.

Then the closed loop: the simulator, camera, inference (the committed reference policy) and
safety nodes drive two held-out episodes, one English and one Korean instruction on opposite
sides, and the demo prints whether the robot did what it was told, with a top-down plot of the
paths and a camera-view animation of the English episode with its predicted path drawn in.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros import action_space as action_spaces
from vla_ros.bringup import StackOptions
from vla_ros.safety.config import twist_vector

LOG_TOPICS = ("/vla/inference_event", "/vla/action_chunk", "/diagnostics")
REFERENCE_MODEL = Path("models/reference/mobile3")
CLOSED_LOOP_SCENARIOS = ("1box_vert_left", "2box_hori_right")
"""Opposite sides; the languages alternate, so the first is English and the second Korean."""
ANIMATION_TOPICS = ("/camera/image_raw", "/vla/predicted_path")
DEMO_INSTRUCTIONS = ("move forward to the red box", "빨간 상자를 피해서 왼쪽으로 천천히 가")
"""The first is given at 0.5 s, the second (Korean) just past the middle of the bag."""


@dataclass
class DemoSummary:
    """What `make demo` prints; also written as JSON next to the recorded bag."""

    frames_in: int = 0
    frames_converted: int = 0
    events: dict[str, int] = field(default_factory=dict)
    inferences: int = 0
    commands_out: int = 0
    moving_commands: int = 0
    nonzero_commands_before_instruction: int = 0
    violations: list[str] = field(default_factory=list)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    run_bag: str = ""
    closed_loop: dict[str, Any] = field(default_factory=dict)
    """The closed-loop stage's numbers; empty when it was not run."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames_in": self.frames_in,
            "frames_converted": self.frames_converted,
            "events": self.events,
            "inferences": self.inferences,
            "commands_out": self.commands_out,
            "moving_commands": self.moving_commands,
            "nonzero_commands_before_instruction": self.nonzero_commands_before_instruction,
            "violations": self.violations,
            "latency_ms": self.latency_ms,
            "run_bag": self.run_bag,
            "closed_loop": self.closed_loop,
        }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": math.nan, "p99": math.nan, "n": 0}
    array = np.asarray(values, dtype=float)
    return {
        "p50": float(np.percentile(array, 50)),
        "p99": float(np.percentile(array, 99)),
        "n": len(values),
    }


def _node_percentiles(
    diagnostics: dict[str, dict[str, str]], node: str, stage: str
) -> dict[str, float]:
    """p50/p99 a node reported in its last /diagnostics status (its own rolling window)."""
    values = diagnostics.get(node, {})
    return {
        "p50": float(values.get(f"{stage}_p50_ms", "nan")),
        "p99": float(values.get(f"{stage}_p99_ms", "nan")),
    }


def run_demo(
    model_dir: Path,
    out_dir: Path,
    mode: str = action_spaces.DEFAULT_MODE,
    duration_s: float = 12.0,
    fps: float = 30.0,
) -> DemoSummary:
    """Synthesise, replay through the stack, record, check; returns the summary."""
    import rclpy
    from rclpy.context import Context

    from vla_ros.bag.harness import run_bag
    from vla_ros.bag.replay import ReplayOptions
    from vla_ros.bag.synth import SynthConfig, synthesize
    from vla_ros.bringup import build_stack, ros_args_for

    outputs = [f"/{topic}" for topic in action_spaces.get(mode).output_topics]
    if not (Path(model_dir) / "policy.yaml").is_file():
        raise FileNotFoundError(
            f"{model_dir}/policy.yaml not found: run `vla-ros make-tiny-model {model_dir}` first"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    input_bag = out_dir / "input"
    run_bag_path = out_dir / "run"
    shutil.rmtree(run_bag_path, ignore_errors=True)
    synth = SynthConfig(
        duration_s=duration_s,
        fps=fps,
        width=640,
        height=480,
        images="compressed",
        segments=(("static", 3.0), ("moving", 3.0)),
        instructions=((0.5, DEMO_INSTRUCTIONS[0]), (duration_s * 0.55, DEMO_INSTRUCTIONS[1])),
        estops=((duration_s - 1.5, True),),
        seed=7,
    )
    synthesize(input_bag, synth, overwrite=True)

    options = StackOptions(mode=mode, model_dir=str(model_dir), compressed=True, use_sim_time=True)
    context = Context()
    rclpy.init(args=ros_args_for(options), context=context)
    try:
        result = run_bag(
            input_bag,
            lambda ctx: build_stack(ctx, options),
            context=context,
            record_topics=[*outputs, *LOG_TOPICS],
            replay=ReplayOptions(clock=True, clock_hz=200.0),
            out_bag=run_bag_path,
            tail_s=1.0,
        )
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
    return summarise(result, synth, run_bag_path, options)


def summarise(result: Any, synth: Any, run_bag_path: Path, options: StackOptions) -> DemoSummary:
    """Turn the recorded messages into the numbers a user wants to see."""
    from vla_ros.bag.check import check_bag

    summary = DemoSummary(run_bag=str(run_bag_path))
    summary.frames_in = sum(
        count
        for topic, count in result.replay.published.items()
        if topic.startswith(synth.image_topic)
    )
    events: Counter[str] = Counter()
    model_ms: list[float] = []
    trigger_ms: list[float] = []
    for message in result.on("/vla/inference_event"):
        event = json.loads(message.msg.data)
        events[event["cause"]] += 1
        model_ms.append(float(event["model_ms"]))
        trigger_ms.append(float(event["latency_ms"]) - float(event["model_ms"]))
    summary.events = dict(events)
    summary.inferences = sum(events.values())
    commands = result.on(f"/{action_spaces.get(options.mode).output_topic}")
    summary.commands_out = len(commands)
    first_instruction_ns = synth.start_ns + int(synth.instructions[0][0] * 1e9)
    for message in commands:
        moving = any(twist_vector(message.msg))
        summary.moving_commands += int(moving)
        stamp = message.stamp_ns if message.stamp_ns is not None else message.receive_ns
        if moving and stamp < first_instruction_ns:
            summary.nonzero_commands_before_instruction += 1
    last_diagnostics: dict[str, dict[str, str]] = {}
    for message in result.on("/diagnostics"):
        for status in message.msg.status:
            values = {kv.key: kv.value for kv in status.values}
            last_diagnostics[status.name.strip("/")] = values
            if "frames_out" in values:
                summary.frames_converted = max(summary.frames_converted, int(values["frames_out"]))
    summary.latency_ms = {
        "camera convert+resize+score": _node_percentiles(last_diagnostics, "vla_camera", "convert"),
        "model (policy.step)": _percentiles(model_ms),
        "trigger->publish overhead": _percentiles(trigger_ms),
        "safety validator tick": _node_percentiles(last_diagnostics, "vla_safety", "tick"),
    }
    check = check_bag(run_bag_path, options.resolved_params_file())
    summary.violations = [str(finding) for finding in check]
    return summary


def run_closed_loop(
    model_dir: Path,
    out_dir: Path,
    scenarios: tuple[str, ...] = CLOSED_LOOP_SCENARIOS,
    seed: int = 0,
    real_time_factor: float = 4.0,
) -> dict[str, Any]:
    """Held-out episodes of the simulator through the real nodes, languages alternating; writes
    summary.json, trajectories.png and episode.gif (the first English episode) in out_dir."""
    from vla_ros.evaluate import EvalOptions, run_eval
    from vla_ros.sim.scenario import resolve_scenarios

    options = EvalOptions(
        scenarios=resolve_scenarios(",".join(scenarios)),
        out=out_dir,
        episodes=1,
        seed_start=seed,
        driver="policy",
        model_dir=str(model_dir),
        trigger="event",
        languages=("en", "ko"),
        real_time_factor=real_time_factor,
        extra_topics=ANIMATION_TOPICS,
    )
    summary = run_eval(options)
    english = next(e for e in summary["episode_results"] if e["language"] == "en")
    scenario = next(s for s in options.scenarios if s.name == english["scenario"])
    animation = animate_episode(Path(english["bag"]), scenario, out_dir / "episode.gif")
    summary["animation"] = str(animation)
    summary["trajectories_png"] = str(out_dir / "trajectories.png")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def animate_episode(bag: Path, scenario: Any, out: Path) -> Path:
    """The episode's camera frames with the predicted path (kept on the floor with odometry as
    the robot drives) and the instruction, as a GIF of at most 5 MB."""
    from vla_ros.bag.io import deserialize, read_messages, stamp_ns
    from vla_ros.core.image import image_msg_to_rgb
    from vla_ros.safety.zones import quaternion_yaw
    from vla_ros.sim import animation

    messages = read_messages(
        bag, ["/camera/image_raw", "/vla/predicted_path", "/odom", "/vla/instruction"]
    )
    frames: list[tuple[int, np.ndarray]] = []
    paths: list[tuple[int, np.ndarray]] = []
    poses: list[tuple[int, animation.Pose2D]] = []
    instruction = ""
    for message in messages:
        msg = deserialize(message.data, message.msgtype, message.topic)
        stamp = stamp_ns(msg) or message.timestamp_ns
        if message.topic == "/camera/image_raw":
            frames.append((stamp, image_msg_to_rgb(msg)))
        elif message.topic == "/vla/predicted_path":
            xy = [(p.pose.position.x, p.pose.position.y) for p in msg.poses]
            paths.append((stamp, np.asarray(xy, dtype=float)))
        elif message.topic == "/odom":
            q = msg.pose.pose.orientation
            yaw = quaternion_yaw(q.x, q.y, q.z, q.w)
            poses.append((stamp, (msg.pose.pose.position.x, msg.pose.pose.position.y, yaw)))
        elif not instruction:
            instruction = msg.data
    if not frames:
        raise ValueError(f"{bag}: no camera frames recorded to animate")
    poses.sort(key=lambda item: item[0])
    paths.sort(key=lambda item: item[0])
    camera, floor_z = animation.mobile_camera(scenario, frames[0][1].shape[0])
    font = animation.caption_font()
    caption = animation.wrap(instruction, 36)
    rendered = []
    path_times = [t for t, _ in paths]
    for stamp, rgb in sorted(frames, key=lambda item: item[0]):
        shown = None
        index = int(np.searchsorted(path_times, stamp, side="right")) - 1
        then = animation.pose_at(poses, paths[index][0]) if index >= 0 else None
        now = animation.pose_at(poses, stamp)
        if then is not None and now is not None:
            shown = animation.rebase(paths[index][1], then, now)
        rendered.append(animation.draw_frame(rgb, caption, shown, camera, floor_z, font))
    return animation.write_gif(rendered, out, fps=10.0)


def closed_loop_problems(closed_loop: dict[str, Any]) -> list[str]:
    """A closed loop in which the robot did not do what it was told is not a pass."""
    problems = []
    for episode in closed_loop.get("episode_results", []):
        name = f"{episode['scenario']} seed {episode['seed']} [{episode['language']}]"
        if episode.get("collision"):
            problems.append(f"closed loop {name}: collision")
        elif not episode.get("success"):
            problems.append(f"closed loop {name}: {episode.get('outcome', 'no success')}")
        if episode.get("safety_violations"):
            problems.append(f"closed loop {name}: {episode['safety_violations']} safety violations")
    return problems


def print_closed_loop(closed_loop: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="closed loop: the reference policy in the simulator", show_header=True)
    for column in ("scenario", "instruction", "outcome", "collision", "side kept", "VLM/frame"):
        table.add_column(column)
    for episode in closed_loop["episode_results"]:
        calls = episode["inferences"] / episode["frames"] if episode["frames"] else 0.0
        table.add_row(
            episode["scenario"],
            episode["language"],
            str(episode["outcome"]),
            "yes" if episode["collision"] else "no",
            "yes" if episode["compliant"] else "no",
            f"{calls:.3f}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"success {closed_loop['success_rate']:.0%}, "
        f"collisions {closed_loop['collision_rate']:.0%}, "
        f"side compliance {closed_loop['compliance_rate']:.0%}, "
        f"VLM calls/frame {closed_loop['vlm_calls_per_frame']:.3f}"
    )
    console.print(
        f"paths: {closed_loop['trajectories_png']}; camera view: {closed_loop['animation']}"
    )


def print_summary(summary: DemoSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="vla_ros demo", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("frames in (bag)", str(summary.frames_in))
    table.add_row("frames converted by the camera node", str(summary.frames_converted))
    table.add_row("events by cause", ", ".join(f"{k}={v}" for k, v in summary.events.items()))
    table.add_row("inferences (VLM calls)", str(summary.inferences))
    if summary.frames_in:
        table.add_row("VLM calls / frame", f"{summary.inferences / summary.frames_in:.3f}")
    table.add_row("commands out (moving)", f"{summary.commands_out} ({summary.moving_commands})")
    table.add_row(
        "motion commands before the first instruction",
        str(summary.nonzero_commands_before_instruction),
    )
    table.add_row("safety invariant violations", str(len(summary.violations)))
    for stage, stats in summary.latency_ms.items():
        table.add_row(f"{stage} p50/p99 ms", f"{stats['p50']:.2f} / {stats['p99']:.2f}")
    table.add_row("recorded run", summary.run_bag)
    console.print(table)
    for violation in summary.violations[:10]:
        console.print(f"[red]violation[/red] {violation}")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the stack on a synthetic bag and summarise")
    parser.add_argument(
        "--model-dir", default="models/tiny", type=Path, help="vla_ros model directory"
    )
    parser.add_argument(
        "--out", default=Path("out/demo"), type=Path, help="directory for the bags and summary"
    )
    action_spaces.add_mode_argument(parser)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of synthetic video")
    parser.add_argument(
        "--closed-loop-model",
        default=REFERENCE_MODEL,
        type=Path,
        help="policy the closed-loop stage drives the simulated robot with (mobile3)",
    )
    parser.add_argument(
        "--no-closed-loop", action="store_true", help="only the bag stage, no simulator"
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    summary = run_demo(args.model_dir, args.out, mode=args.mode, duration_s=args.duration)
    print_summary(summary)
    closed_loop = not args.no_closed_loop and action_spaces.get(args.mode).name == "mobile3"
    if closed_loop:
        if not (args.closed_loop_model / "policy.yaml").is_file():
            raise FileNotFoundError(
                f"{args.closed_loop_model}/policy.yaml not found: the closed loop needs the "
                "reference policy (git checkout models/reference) or --no-closed-loop"
            )
        summary.closed_loop = run_closed_loop(args.closed_loop_model, args.out / "closed_loop")
        print_closed_loop(summary.closed_loop)
    (args.out / "summary.json").write_text(
        json.dumps(summary.as_dict(), indent=2, ensure_ascii=False)
    )
    problems = verdict(summary)
    for problem in problems:
        print(f"vla-ros demo: FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


def verdict(summary: DemoSummary) -> list[str]:
    """Why the run does not show the stack working; empty = it does. A run in which no command
    moved the robot proves nothing, however clean it is."""
    problems = []
    if summary.inferences == 0:
        problems.append("the policy never ran (no inference event)")
    if summary.commands_out == 0:
        problems.append("the safety node published no command")
    elif summary.moving_commands == 0:
        problems.append(f"none of the {summary.commands_out} commands moved the robot")
    if summary.nonzero_commands_before_instruction:
        problems.append(
            f"{summary.nonzero_commands_before_instruction} motion commands before the first "
            "instruction"
        )
    if summary.violations:
        problems.append(f"{len(summary.violations)} safety invariant violations")
    return problems + closed_loop_problems(summary.closed_loop)
