"""`vla-ros replay`, `vla-ros record` and `vla-ros bag {synth,check,report,info}`.

Heavy imports (rclpy, rosbags, matplotlib) happen inside the handlers so `vla-ros --help` stays
fast on a Jetson.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vla_ros.action_space import add_mode_argument
from vla_ros.bag.io import DEFAULT_VERSION, STORAGES, VERSIONS, BagError


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    _add_replay(subparsers)
    _add_record(subparsers)
    bag = subparsers.add_parser("bag", help="rosbag2 tools: synth, check, report, info")
    commands = bag.add_subparsers(dest="bag_command", required=True, metavar="BAG_COMMAND")
    _add_synth(commands)
    _add_check(commands)
    _add_report(commands)
    info = commands.add_parser("info", help="topics, types, counts, QoS and time span of a bag")
    info.add_argument("bag", type=Path)
    info.set_defaults(handler=_handle_info)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _add_replay(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay", help="publish a rosbag2 with its original timing (no ros2 bag needed)"
    )
    parser.add_argument("bag", type=Path, help="rosbag2 directory, .db3 or .mcap file")
    parser.add_argument("--rate", type=_positive, default=1.0, help="playback speed factor")
    parser.add_argument("--loop", action="store_true", help="start over at the end")
    parser.add_argument(
        "--start-offset", type=float, default=0.0, metavar="S", help="skip the first S seconds"
    )
    parser.add_argument("--topics", nargs="+", default=None, help="only these topics")
    parser.add_argument(
        "--remap", nargs="+", default=[], metavar="OLD:=NEW", help="publish OLD as NEW"
    )
    parser.add_argument(
        "--clock",
        nargs="?",
        type=_positive,
        const=40.0,
        default=None,
        metavar="HZ",
        help="publish /clock (bag time) for use_sim_time nodes, default 40 Hz",
    )
    parser.add_argument(
        "--qos-overrides",
        type=Path,
        default=None,
        metavar="YAML",
        help="{topic: {reliability, durability, depth}} instead of the bag's offered QoS",
    )
    parser.add_argument(
        "--wait-for-subscribers",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for a subscriber on every topic before the first message",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_handle_replay)


def _add_format(parser: argparse.ArgumentParser) -> None:
    """How a written bag is stored: the same two options for record and synth."""
    parser.add_argument(
        "--storage", choices=STORAGES, default="sqlite3", help="rosbag2 storage plugin"
    )
    parser.add_argument(
        "--metadata-version",
        type=int,
        choices=VERSIONS,
        default=DEFAULT_VERSION,
        help="rosbag2 metadata version to write",
    )


def _add_record(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("record", help="record live topics to a rosbag2 (raw CDR)")
    parser.add_argument("out", type=Path, help="output rosbag2 directory (must not exist)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--topics", nargs="+", help="topics to record")
    target.add_argument("--all", action="store_true", help="every topic with a publisher")
    parser.add_argument("--exclude", nargs="+", default=[], help="topics to leave out with --all")
    _add_format(parser)
    parser.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="S",
        help="stop S seconds after the first message (a slow start-up does not eat the run)",
    )
    parser.add_argument(
        "--wait",
        type=_positive,
        default=30.0,
        metavar="S",
        help="give up, exit 1, when nothing was recorded within S seconds of wall time",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    parser.add_argument(
        "--use-sim-time",
        action="store_true",
        help="stamp with /clock time; messages before the first /clock are not recorded",
    )
    parser.add_argument("--no-progress", action="store_true", help="no live message counts")
    parser.set_defaults(handler=_handle_record)


def _add_synth(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "synth", help="write a deterministic synthetic camera bag (tests, demo)"
    )
    parser.add_argument("out", type=Path, help="output rosbag2 directory")
    parser.add_argument(
        "--duration", type=_positive, default=10.0, metavar="S", help="seconds of video"
    )
    parser.add_argument("--fps", type=_positive, default=10.0, help="camera frame rate")
    parser.add_argument("--resolution", default="320x240", metavar="WxH", help="frame size")
    parser.add_argument(
        "--images",
        choices=("raw", "compressed", "both"),
        default="both",
        help="Image on /camera/image_raw, CompressedImage (JPEG) on its /compressed, or both",
    )
    parser.add_argument(
        "--encoding", choices=("rgb8", "bgr8"), default="rgb8", help="raw image encoding"
    )
    _add_format(parser)
    parser.add_argument("--seed", type=int, default=0, help="random seed of the scene")
    parser.add_argument(
        "--segments",
        default="static:2,moving:2",
        metavar="KIND:S,...",
        help="repeating pattern of static/moving stretches",
    )
    parser.add_argument(
        "--instruction",
        action="append",
        default=None,
        metavar="T:TEXT",
        help="instruction at T seconds (repeatable; default one English, one Korean)",
    )
    parser.add_argument(
        "--estop",
        action="append",
        default=[],
        metavar="T[:off]",
        help="e-stop engaged (or released with :off) at T seconds (repeatable)",
    )
    parser.add_argument("--scan", action="store_true", help="add /scan (LaserScan)")
    parser.add_argument("--odom", action="store_true", help="add /odom (Odometry)")
    parser.add_argument(
        "--noise",
        type=float,
        default=1.0,
        help="per-pixel sensor noise std (0-64; 0 repeats static frames byte for byte, which "
        "the inference node takes for a frozen camera)",
    )
    parser.add_argument(
        "--pan-speed",
        type=float,
        default=0.25,
        help="image widths per second the view pans while moving (0 = only shapes move)",
    )
    parser.add_argument("--jpeg-quality", type=int, default=85, help="JPEG quality (1-100)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    parser.set_defaults(handler=_handle_synth)


def _add_check(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "check", help="verify recorded commands against the safety invariants"
    )
    parser.add_argument("bag", type=Path, help="run bag with the safety node's outputs")
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        help="parameter file of the run (default: the validator's defaults for --mode)",
    )
    add_mode_argument(parser, default=None, help_extra="; also read from --params or the topics")
    parser.add_argument("--node", default="vla_safety", help="node section in the params file")
    parser.add_argument(
        "--time-tolerance",
        type=float,
        default=None,
        metavar="S",
        help="receive-time jitter allowed for unstamped outputs (default one output period)",
    )
    parser.add_argument(
        "--max-gap",
        type=float,
        default=None,
        metavar="S",
        help="longest silence allowed while moving (default five output periods)",
    )
    parser.add_argument(
        "--min-commands",
        type=int,
        default=None,
        metavar="N",
        help="FAIL with fewer outputs than this (default: one second at output_rate_hz)",
    )
    parser.add_argument(
        "--min-duration",
        type=float,
        default=None,
        metavar="S",
        help="FAIL when the outputs span less than this, by their stamps or by receive time "
        "(default: the time --min-commands outputs take)",
    )
    parser.add_argument(
        "--require",
        nargs="+",
        default=[],
        metavar="TOPIC",
        help="FAIL unless these topics were recorded with at least one message (e.g. "
        "/vla/cmd_raw for the watchdog)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write violations as JSON")
    parser.set_defaults(handler=_handle_check)


def _add_report(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("report", help="summary table and PNG plot of a run bag")
    parser.add_argument("bag", type=Path)
    parser.add_argument("--png", type=Path, default=None, help="default: <bag>_report.png")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary as JSON")
    parser.set_defaults(handler=_handle_report)


@contextmanager
def _ros_context() -> Iterator[Any]:
    """A private rclpy context; SIGTERM behaves like Ctrl-C so bags are closed properly."""
    import rclpy
    from rclpy.context import Context

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, terminate)
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _handle_replay(args: argparse.Namespace) -> int:
    from vla_ros.bag.replay import BagPlayer, ReplayOptions, load_qos_overrides, parse_remaps

    options = ReplayOptions(
        rate=args.rate,
        loop=args.loop,
        start_offset_s=args.start_offset,
        topics=tuple(args.topics) if args.topics else None,
        remap=parse_remaps(args.remap),
        clock=args.clock is not None,
        clock_hz=args.clock or 40.0,
        qos_overrides=load_qos_overrides(args.qos_overrides) if args.qos_overrides else {},
    )
    console = _console()
    with _ros_context() as context, BagPlayer(args.bag, options, context=context) as player:
        info = player.info
        console.print(
            f"replaying {info.path} ({info.count} messages, {info.duration_s:.1f} s, "
            f"{len(player.topics)} topics) at x{options.rate}"
        )
        stop = threading.Event()
        waited = args.wait_for_subscribers
        if waited > 0 and not player.wait_for_subscribers(waited, stop, every_topic=True):
            console.print("[yellow]not every topic has a subscriber; replaying anyway")
        if args.no_progress:
            stats = player.play(stop)
        else:
            stats = _play_with_progress(player, stop, console)
    console.print(
        f"published {stats.total} messages in {stats.wall_s:.2f} s"
        + (f", {stats.loops} loops" if options.loop else "")
        + (" (interrupted)" if stats.interrupted else "")
    )
    return 130 if stats.interrupted else 0


def _play_with_progress(player: Any, stop: threading.Event, console: Any) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]replay"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} msgs"),
        TextColumn("bag {task.fields[bag_s]:.1f} s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("replay", total=player.count_per_pass, bag_s=0.0)

        def update(done: int, per_pass: int, bag_s: float) -> None:
            progress.update(task, completed=done % per_pass if per_pass else done, bag_s=bag_s)

        stats = player.play(stop, progress=update)
        progress.update(task, completed=player.count_per_pass)
    return stats


def _handle_record(args: argparse.Namespace) -> int:
    from rclpy.executors import SingleThreadedExecutor

    from vla_ros.bag.record import BagRecorder

    console = _console()
    interrupted = False
    with _ros_context() as context:
        recorder = BagRecorder(
            args.topics or (),
            args.out,
            context=context,
            storage=args.storage,
            version=args.metadata_version,
            overwrite=args.overwrite,
            all_topics=args.all,
            exclude=args.exclude,
            use_sim_time=args.use_sim_time,
        )
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(recorder.node)
        deadline: float | None = None
        give_up = time.monotonic() + args.wait
        nothing = False
        console.print(f"recording to {args.out} (Ctrl-C to stop)")
        try:
            with console.status("waiting for publishers", spinner="dots") as status:
                while deadline is None or time.monotonic() < deadline:
                    executor.spin_once(timeout_sec=0.1)
                    recorded = any(recorder.stats.counts.values())
                    if deadline is None and args.duration and recorded:
                        deadline = time.monotonic() + args.duration
                    if not recorded and time.monotonic() > give_up:
                        nothing = True
                        break
                    if not args.no_progress:
                        counts = dict(recorder.stats.counts)
                        status.update(
                            f"{sum(counts.values())} messages on {len(counts)} topics"
                            + (f", waiting for {recorder.pending}" if recorder.pending else "")
                        )
        except KeyboardInterrupt:
            interrupted = True
        finally:
            executor.shutdown(timeout_sec=1.0)
            stats = recorder.stop()
    for error in stats.errors:
        console.print(f"[red]error:[/red] {error}")
    total = sum(stats.counts.values())
    console.print(f"wrote {total} messages to {args.out} (dropped {stats.dropped})")
    if stats.before_clock:
        console.print(f"not recorded: {stats.before_clock} messages from before the first /clock")
    if nothing:
        hint = " or no /clock" if args.use_sim_time else ""
        console.print(
            f"[red]error:[/red] nothing was recorded within {args.wait:g} s: no publisher"
            f"{hint} (is the stack running, on this ROS_DOMAIN_ID?)"
        )
        return 1
    if stats.errors:
        return 1
    return 130 if interrupted else 0


def _pairs(items: list[str], what: str) -> list[tuple[float, str]]:
    pairs = []
    for item in items:
        when, sep, rest = item.partition(":")
        try:
            pairs.append((float(when), rest if sep else ""))
        except ValueError as exc:
            raise BagError(f"{what} must look like T:VALUE, got {item!r}") from exc
    return pairs


def _handle_synth(args: argparse.Namespace) -> int:
    from vla_ros.bag.synth import SynthConfig, synthesize

    try:
        width, height = (int(v) for v in args.resolution.lower().split("x"))
    except ValueError as exc:
        raise BagError(f"--resolution must look like 640x480, got {args.resolution!r}") from exc
    pattern = []
    for item in args.segments.split(","):
        kind, _, length = item.partition(":")
        try:
            pattern.append((kind.strip(), float(length)))
        except ValueError as exc:
            raise BagError(f"--segments must look like static:2,moving:2, got {item!r}") from exc
    instructions = None
    if args.instruction is not None:
        instructions = tuple(_pairs(args.instruction, "--instruction"))
    estops = []
    for when, state in _pairs(args.estop, "--estop"):
        if state not in ("", "on", "off"):
            raise BagError(f"--estop state must be on or off, got {state!r}")
        estops.append((when, state != "off"))
    config = SynthConfig(
        duration_s=args.duration,
        fps=args.fps,
        width=width,
        height=height,
        images=args.images,
        encoding=args.encoding,
        segments=tuple(pattern),
        noise_std=args.noise,
        pan_speed=args.pan_speed,
        jpeg_quality=args.jpeg_quality,
        instructions=instructions,
        estops=tuple(estops),
        scan=args.scan,
        odom=args.odom,
        storage=args.storage,
        version=args.metadata_version,
        seed=args.seed,
    )
    timeline = synthesize(args.out, config, overwrite=args.overwrite)
    print(
        f"wrote {args.out}: {timeline.frames} frames, {len(timeline.instructions)} instructions, "
        f"{len(timeline.estops)} e-stop events, topics {sorted(timeline.topics)}"
    )
    return 0


def _handle_check(args: argparse.Namespace) -> int:
    from vla_ros.bag.check import check_bag

    result = check_bag(
        args.bag,
        args.params,
        mode=args.mode,
        node=args.node,
        time_tolerance_s=args.time_tolerance,
        max_gap_s=args.max_gap,
        min_commands=args.min_commands,
        min_duration_s=args.min_duration,
        require=args.require,
    )
    print(result.summary())
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return 0 if result.ok else 1


def _handle_report(args: argparse.Namespace) -> int:
    from vla_ros.bag.report import build_report, plot_report, render_table

    report = build_report(args.bag)
    console = _console()
    console.print(render_table(report))
    png = args.png or args.bag.with_name(f"{args.bag.name}_report.png")
    plot_report(report, png)
    console.print(f"plot written to {png}")
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return 0


def _handle_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from vla_ros.bag.io import bag_info

    info = bag_info(args.bag)
    table = Table(
        title=f"{info.path}: {info.storage}, metadata v{info.version}, "
        f"{info.count} messages, {info.duration_s:.2f} s{info.time_note}"
    )
    for column in ("topic", "type", "count", "offered QoS"):
        table.add_column(column)
    for topic in info.topics:
        qos = "; ".join(
            f"{q.reliability.name.lower()}/{q.durability.name.lower()}/depth {q.depth}"
            for q in topic.offered_qos
        )
        table.add_row(topic.name, topic.msgtype, str(topic.count), qos or "-")
    _console().print(table)
    return 0
