"""Safety validator cost: pure-logic microseconds per call, and latency through DDS.

    python test/bench/bench_safety.py --out out/bench

DDS runs the real `safety_node` console script in its own process (arm7, stamped output) and
measures, at the default 50 Hz and at 1 kHz:
- added latency: output stamp (the validator's decision time) -> arrival at a subscriber, i.e.
  what the node adds besides waiting for its fixed-rate tick (target p99 <= 1 ms);
- end to end: input publish -> first output carrying it (commands are published on arrival,
  rate-limited to the output rate, so there is no tick wait; target p99 <= 2 ms).
Prints a table of medians/percentiles and writes safety.json to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import timeit
from pathlib import Path

import numpy as np

os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

from vla_ros import bench
from vla_ros.safety.config import SafetyConfig
from vla_ros.safety.invariants import TraceSample, check_trace
from vla_ros.safety.validator import SafetyValidator

ZONE = (0.35, 0.25, 0.35, -0.25, -0.25, -0.25, -0.25, 0.25)
SLOW = (0.8, 0.4, 0.8, -0.4, -0.4, -0.4, -0.4, 0.4)
FOOT = (0.2, 0.18, 0.2, -0.18, -0.2, -0.18, -0.2, 0.18)


def _per_call_us(function: object, number: int) -> float:
    """Median over 5 repeats of the mean cost of one call, in microseconds."""
    runs = timeit.repeat(function, number=number, repeat=5)  # type: ignore[arg-type]
    return float(np.median(runs)) / number * 1e6


def bench_logic() -> dict[str, float]:
    t = [100.0]

    def submit_and_step(validator: SafetyValidator, motion: tuple[float, ...], frame: str | None):
        def call() -> None:
            t[0] += 0.02
            validator.submit_command(motion, t[0] if frame else None, frame, t[0])
            validator.step(t[0])

        return call

    plain = SafetyValidator(SafetyConfig.for_mode("mobile3"))
    submit_only = SafetyValidator(SafetyConfig.for_mode("mobile3"))
    zones = SafetyValidator(
        SafetyConfig.for_mode(
            "mobile3",
            stop_zone=ZONE,
            slowdown_zone=SLOW,
            footprint=FOOT,
            time_to_collision_s=1.5,
        )
    )
    ranges = [3.0 + math.sin(k / 7.0) for k in range(720)]

    def zone_call() -> None:
        t[0] += 0.02
        zones.update_scan(ranges, -math.pi, math.pi / 360, 0.05, 10.0, t[0], t[0])
        zones.submit_command((0.4, 0.0, 0.2), None, None, t[0])
        zones.step(t[0])

    arm = SafetyValidator(
        SafetyConfig.for_mode(
            "arm7",
            workspace_min=(-0.6, -0.6, 0.0),
            workspace_max=(0.6, 0.6, 1.0),
            workspace_sphere_center=(0.0, 0.0, 0.3),
            workspace_sphere_radius=0.85,
        )
    )

    def arm_call() -> None:
        t[0] += 0.02
        arm.update_pose((0.1, 0.2, 0.5), t[0], "base_link", t[0])
        arm.submit_command((0.1, 0.0, -0.1, 0.0, 0.2, 0.0), t[0], "base_link", t[0])
        arm.step(t[0])

    def submit_call() -> None:
        t[0] += 0.001
        submit_only.submit_command((0.3, 0.0, 0.1), None, None, t[0])

    samples = [TraceSample(k * 0.02, (0.1, 0.0, 0.0), False, k * 0.02) for k in range(1000)]
    config = SafetyConfig.for_mode("mobile3")
    return {
        "submit_command_us": _per_call_us(submit_call, 5000),
        "mobile_submit_step_us": _per_call_us(submit_and_step(plain, (0.3, 0.0, 0.1), None), 2000),
        "mobile_scan_zones_720pts_us": _per_call_us(zone_call, 100),
        "arm_workspace_step_us": _per_call_us(arm_call, 2000),
        "check_trace_per_sample_us": _per_call_us(lambda: check_trace(config, samples), 3) / 1000,
    }


def _safety_process(rate: float) -> subprocess.Popen:
    executable = shutil.which("safety_node") or str(Path(sys.executable).parent / "safety_node")
    params = {
        "mode": "arm7",
        "output_rate_hz": rate,
        "max_accel": "[100.0,100.0,100.0,100.0,100.0,100.0]",
        "max_decel": "[100.0,100.0,100.0,100.0,100.0,100.0]",
    }
    args = [executable, "--ros-args", "--log-level", "warn"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _hop_process(rate: float) -> subprocess.Popen:
    """A bare publisher of stamped twists in its own process: the DDS floor to compare with."""
    args = [sys.executable, __file__, "--hop-publisher", str(rate)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def hop_publisher(rate: float) -> int:
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node

    from vla_ros.transport import COMMAND_QOS

    rclpy.init()
    node = Node("safety_bench_hop")
    publisher = node.create_publisher(TwistStamped, "servo_node/delta_twist_cmds", COMMAND_QOS)

    def tick() -> None:
        msg = TwistStamped()
        msg.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(msg)

    node.create_timer(1.0 / rate, tick)
    with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
        rclpy.spin(node)
    return 0


def bench_dds(rate: float, inputs: int, bare: bool) -> dict[str, float]:
    """Through the safety node (bare=False) or from a bare publisher (bare=True)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from geometry_msgs.msg import TwistStamped
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import Bool

    from vla_ros.transport import COMMAND_QOS, LATCHED_QOS

    process = _hop_process(rate) if bare else _safety_process(rate)
    context = Context()
    rclpy.init(context=context)
    node = Node("safety_bench", context=context)
    clock = node.get_clock()
    delivery: list[float] = []
    arrivals: list[tuple[float, float]] = []
    status: dict[str, str] = {}

    def on_output(msg: TwistStamped) -> None:
        now = clock.now().nanoseconds
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        delivery.append((now - stamp) * 1e-6)
        arrivals.append((msg.twist.linear.x, now))

    def on_status(msg: DiagnosticStatus) -> None:
        status.update({kv.key: kv.value for kv in msg.values})

    node.create_subscription(TwistStamped, "servo_node/delta_twist_cmds", on_output, COMMAND_QOS)
    node.create_subscription(DiagnosticStatus, "vla_safety/status", on_status, LATCHED_QOS)
    publisher = node.create_publisher(TwistStamped, "vla/arm_cmd_raw", COMMAND_QOS)
    active = node.create_publisher(Bool, "vla/active", LATCHED_QOS)  # enables the vla input
    active.publish(Bool(data=True))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: _spin(executor, stop), daemon=True)
    spinner.start()
    sent: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + 30.0
        while len(arrivals) < 5 or not (bare or publisher.get_subscription_count()):
            if time.monotonic() > deadline:
                raise RuntimeError("the publisher under test did not come up within 30 s")
            time.sleep(0.05)
        delivery.clear()
        for k in range(inputs):
            value = 0.01 * (1 + k % 20)
            msg = TwistStamped()
            now = clock.now()
            msg.header.stamp = now.to_msg()
            msg.header.frame_id = "base_link"
            msg.twist.linear.x = value
            publisher.publish(msg)
            sent.append((value, now.nanoseconds))
            time.sleep(0.03)
        time.sleep(1.2)  # one more status period
    finally:
        stop.set()
        spinner.join()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        process.terminate()
        process.wait(timeout=10)
    result = {
        "rate_hz": rate,
        "outputs": float(len(delivery)),
        "delivery_p50_ms": float(np.percentile(delivery, 50)),
        "delivery_p99_ms": float(np.percentile(delivery, 99)),
    }
    if bare:
        return result
    end_to_end = []
    for (value, t_sent), (_, t_next) in zip(sent, [*sent[1:], (0.0, 2**63)], strict=True):
        carried = [t for v, t in arrivals if t_sent <= t < t_next and abs(v - value) < 1e-9]
        if carried:
            end_to_end.append((carried[0] - t_sent) * 1e-6)
    result.update(
        {
            "node_tick_p50_ms": float(status.get("tick_p50_ms", "nan")),
            "node_tick_p99_ms": float(status.get("tick_p99_ms", "nan")),
            "end_to_end_p50_ms": float(np.percentile(end_to_end, 50)),
            "end_to_end_p99_ms": float(np.percentile(end_to_end, 99)),
            "inputs_reflected": float(len(end_to_end)),
        }
    )
    return result


def _spin(executor: object, stop: threading.Event) -> None:
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="directory for safety.json")
    parser.add_argument("--inputs", type=int, default=200, help="commands per DDS run")
    parser.add_argument("--hop-publisher", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    started = bench.conditions()
    if args.hop_publisher:
        return hop_publisher(args.hop_publisher)
    if args.out is None:
        parser.error("--out is required")
    logic = bench_logic()
    runs = []
    for rate in (50.0, 1000.0):
        run = bench_dds(rate, args.inputs, bare=False)
        floor = bench_dds(rate, args.inputs // 2, bare=True)
        run["bare_hop_p50_ms"] = floor["delivery_p50_ms"]
        run["bare_hop_p99_ms"] = floor["delivery_p99_ms"]
        run["added_p50_ms"] = run["node_tick_p50_ms"] + max(
            0.0, run["delivery_p50_ms"] - run["bare_hop_p50_ms"]
        )
        run["added_p99_ms"] = run["node_tick_p99_ms"] + max(
            0.0, run["delivery_p99_ms"] - run["bare_hop_p99_ms"]
        )
        runs.append(run)
    print("pure logic (median of 5 repeats, per call)")
    for name, value in logic.items():
        print(f"  {name:<32} {value:10.2f} us")
    header = (
        "rate",
        "tick p50/p99",
        "delivery p50/p99",
        "bare hop p50/p99",
        "added p50/p99",
        "e2e p50/p99",
    )
    print("\nDDS, arm7, ms: " + " | ".join(header))
    for run in runs:
        cells = [
            f"{run['rate_hz']:.0f} Hz",
            f"{run['node_tick_p50_ms']:.3f}/{run['node_tick_p99_ms']:.3f}",
            f"{run['delivery_p50_ms']:.3f}/{run['delivery_p99_ms']:.3f}",
            f"{run['bare_hop_p50_ms']:.3f}/{run['bare_hop_p99_ms']:.3f}",
            f"{run['added_p50_ms']:.3f}/{run['added_p99_ms']:.3f}",
            f"{run['end_to_end_p50_ms']:.2f}/{run['end_to_end_p99_ms']:.2f}",
        ]
        print("  " + " | ".join(cells))
    met = all(run["added_p99_ms"] <= 1.0 for run in runs)
    ratio = runs[0]["end_to_end_p50_ms"] / max(runs[1]["end_to_end_p50_ms"], 1e-9)
    print(
        f"\nadded p99 <= 1 ms: {'yes' if met else 'NO'}; "
        f"e2e p50 ratio 50 Hz / 1 kHz: {ratio:.1f}x (about 1 when no tick wait is left)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"logic_us": logic, "dds": runs, "added_p99_target_met": met, "e2e_ratio": ratio}
    bench.write_report(args.out / "safety.json", result, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
