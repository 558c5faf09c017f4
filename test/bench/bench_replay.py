"""Replay timing fidelity: how closely `vla-ros replay` reproduces a bag's message timing.

    python test/bench/bench_replay.py --out out/bench [--duration 3]

Synthesises a 30 fps 1280x720 camera bag (raw rgb8, 2.7 MB per frame, and JPEG), replays it
with `BagPlayer` at rate 1 and receives it in a separate process (real DDS between processes):
raw frames best effort as recorded and forced reliable, JPEG as recorded. Reports, per
scenario, medians and p99 of:
- publish lateness: when the player published vs when the bag says it should have;
- inter-message timing error: |arrival gap - bag gap| between consecutive messages at the
  subscriber, the jitter a consumer actually sees;
and how many messages arrived (gaps are measured only between messages consecutive in the bag,
identified by their header stamps). Prints a table and writes replay.json to --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vla_ros import bench

os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

RAW = ("/camera/image_raw", "sensor_msgs/msg/Image")
JPEG = ("/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage")
SCENARIOS = (
    ("raw 720p best-effort", *RAW, False),
    ("raw 720p reliable", *RAW, True),
    ("jpeg 720p best-effort", *JPEG, False),
)


def receive(topic: str, msgtype: str, out: Path, reliable: bool, idle_s: float) -> int:
    """Receiver process: arrival time of every message until `idle_s` without one."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from vla_ros.bag.io import message_class

    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_receiver", context=context)
    arrivals: list[tuple[float, int]] = []

    def on_bytes(data: bytes) -> None:
        # CDR: 4-byte encapsulation header, then header.stamp (int32 sec, uint32 nanosec).
        sec = int.from_bytes(data[4:8], "little", signed=True)
        nanosec = int.from_bytes(data[8:12], "little")
        arrivals.append((time.monotonic(), sec * 1_000_000_000 + nanosec))

    qos = QoSProfile(
        depth=50,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
    )
    node.create_subscription(message_class(msgtype), topic, on_bytes, qos, raw=True)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    print("ready", flush=True)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        if arrivals and time.monotonic() - arrivals[-1][0] > idle_s:
            break
    out.write_text(json.dumps(arrivals), encoding="utf-8")
    node.destroy_node()
    rclpy.shutdown(context=context)
    return 0


def _stats(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    array = np.abs(np.asarray(values_ms))
    return {
        "p50": float(np.percentile(array, 50)),
        "p99": float(np.percentile(array, 99)),
        "max": float(array.max()),
    }


def run_scenario(
    bag: Path, topic: str, msgtype: str, reliable: bool, work: Path
) -> dict[str, object]:
    import rclpy
    from rclpy.context import Context
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from vla_ros.bag.io import read_messages
    from vla_ros.bag.replay import BagPlayer, ReplayOptions

    arrivals_file = work / "arrivals.json"
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receive", topic, msgtype, str(arrivals_file)]
        + (["--reliable"] if reliable else []),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        receiver.stdout.readline()
        context = Context()
        rclpy.init(context=context)
        try:
            overrides = (
                {topic: QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)}
                if reliable
                else {}
            )
            options = ReplayOptions(topics=(topic,), qos_overrides=overrides)
            with BagPlayer(bag, options, context=context) as player:
                player.wait_for_subscribers(20.0, every_topic=True)
                stats = player.play()
        finally:
            rclpy.shutdown(context=context)
        receiver.wait(timeout=90)
    finally:
        if receiver.poll() is None:
            receiver.kill()
    arrivals = json.loads(arrivals_file.read_text(encoding="utf-8"))
    stamps = [m.timestamp_ns for m in read_messages(bag, [topic])]
    index = {stamp: k for k, stamp in enumerate(stamps)}
    lateness = [(actual - due) * 1e3 for _, due, actual in stats.timing]
    errors = []
    for (t0, s0), (t1, s1) in itertools.pairwise(arrivals):
        if index.get(s1, -1) == index.get(s0, -2) + 1:
            errors.append((t1 - t0 - (s1 - s0) / 1e9) * 1e3)
    return {
        "messages": len(stamps),
        "received": len(arrivals),
        "consecutive_pairs": len(errors),
        "publish_lateness_ms": _stats(lateness),
        "inter_message_error_ms": _stats(errors),
        "wall_s": stats.wall_s,
        "bag_s": (stamps[-1] - stamps[0]) / 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of 30 fps video")
    parser.add_argument("--receive", nargs=3, metavar=("TOPIC", "TYPE", "FILE"), help="internal")
    parser.add_argument("--reliable", action="store_true", help="internal")
    args = parser.parse_args(argv)
    started = bench.conditions()
    if args.receive:
        topic, msgtype, out = args.receive
        return receive(topic, msgtype, Path(out), args.reliable, idle_s=1.5)

    from rich.console import Console
    from rich.table import Table

    from vla_ros.bag.synth import SynthConfig, synthesize

    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    work = Path(tempfile.mkdtemp(prefix="bench_replay_"))
    try:
        bag = work / "camera720p"
        started = time.perf_counter()
        synthesize(
            bag,
            SynthConfig(duration_s=args.duration, fps=30.0, width=1280, height=720, images="both"),
        )
        synth_s = time.perf_counter() - started
        for name, topic, msgtype, reliable in SCENARIOS:
            results[name] = run_scenario(bag, topic, msgtype, reliable, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"replay timing fidelity, 30 fps, {args.duration:g} s (medians / p99)")
    for column in (
        "scenario",
        "received",
        "publish late p50 ms",
        "p99",
        "inter-msg err p50 ms",
        "p99",
        "max",
    ):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for name, row in results.items():
        late, err = row["publish_lateness_ms"], row["inter_message_error_ms"]
        table.add_row(
            name,
            f"{row['received']}/{row['messages']}",
            f"{late['p50']:.3f}",
            f"{late['p99']:.3f}",
            f"{err['p50']:.3f}",
            f"{err['p99']:.3f}",
            f"{err['max']:.3f}",
        )
    Console(width=120).print(table)
    report = {
        "fps": 30.0,
        "resolution": [1280, 720],
        "duration_s": args.duration,
        "synth_s": synth_s,
        "scenarios": results,
    }
    path = args.out / "replay.json"
    bench.write_report(path, report, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
