"""Ctrl-C / SIGTERM stop: signal a real `safety_node` or `vla-ros bringup` while commands flow and
check that the last message on every robot output topic is zero, N times each.

    python test/bench/bench_stop.py --reps 20 --model-dir models/tiny --out out/bench

`safety_node` is driven through its `vla` input (with /vla/active true), bringup through its
`teleop` input (its own inference node holds /vla/active false without an instruction). Each trial:
start the process, publish a non-zero command at 50 Hz until the output carries it, send the
signal, wait for the process to exit, drain the subscription, look at the last message.
`--src DIR` runs another source tree (e.g. a checkout of the code before a fix).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vla_ros import bench

os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


@dataclass
class Trial:
    target: str
    signal: str
    last_zero: bool
    outputs: int
    moving_before_signal: bool
    exit_code: int | None
    stop_s: float
    detail: str = ""


def _command(target: str, mode: str, model_dir: str | None) -> list[str]:
    if target == "safety_node":
        code = "import sys; from vla_ros.nodes.safety_node import main; sys.exit(main())"
        return [sys.executable, "-c", code, "--ros-args", "-p", f"mode:={mode}"]
    if model_dir is None:
        raise ValueError("bringup needs --model-dir")
    code = "import sys; from vla_ros.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, "bringup", "--mode", mode, "--model-dir", model_dir]


def trial(
    target: str,
    sig: str,
    mode: str = "mobile",
    model_dir: str | None = None,
    src: str | None = None,
    start_timeout_s: float = 90.0,
) -> Trial:
    """One start -> commands -> signal -> exit -> check."""
    import rclpy
    from geometry_msgs.msg import Twist, TwistStamped
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import Bool

    from vla_ros.transport import COMMAND_QOS, LATCHED_QOS

    arm = mode in ("arm", "arm7")
    node_mode = {"mobile": "mobile3", "arm": "arm7"}.get(mode, mode)
    stack_mode = {"mobile3": "mobile", "arm7": "arm"}.get(mode, mode)
    argv = _command(target, node_mode if target == "safety_node" else stack_mode, model_dir)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    context = Context()
    rclpy.init(context=context)
    node = Node("stop_trial_peer", context=context)
    outputs: list[float] = []
    lock = threading.Lock()
    msg_type = TwistStamped if arm else Twist
    out_topic = "servo_node/delta_twist_cmds" if arm else "cmd_vel"
    if target == "safety_node":
        in_topic = "vla/arm_cmd_raw" if arm else "vla/cmd_raw"
    else:
        in_topic = "teleop/delta_twist_cmds" if arm else "teleop/cmd_vel"

    def on_output(msg: Twist | TwistStamped) -> None:
        twist = getattr(msg, "twist", msg)
        with lock:
            outputs.append(abs(twist.linear.x) + abs(twist.angular.z))

    node.create_subscription(msg_type, out_topic, on_output, COMMAND_QOS)
    publisher = node.create_publisher(msg_type, in_topic, COMMAND_QOS)
    if target == "safety_node":
        node.create_publisher(Bool, "vla/active", LATCHED_QOS).publish(Bool(data=True))

    def send() -> None:
        msg = msg_type()
        twist = getattr(msg, "twist", msg)
        twist.linear.x = 0.2
        if arm:
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.header.frame_id = "base_link"
        publisher.publish(msg)

    node.create_timer(0.02, send)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin_for(seconds: float, until: object = None) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
            if until is not None and until():  # type: ignore[operator]
                return True
        return False

    result = Trial(target, sig, False, 0, False, None, 0.0)
    try:

        def moving() -> bool:
            with lock:
                return len(outputs) >= 5 and outputs[-1] > 0.15

        result.moving_before_signal = spin_for(start_timeout_s, moving)
        if not result.moving_before_signal:
            result.detail = "never moving before the signal"
            return result
        spin_for(0.1)
        signalled = time.monotonic()
        process.send_signal(SIGNALS[sig])
        while process.poll() is None and time.monotonic() - signalled < 20.0:
            executor.spin_once(timeout_sec=0.02)
        result.stop_s = time.monotonic() - signalled
        if process.poll() is None:
            process.kill()
            result.detail = "did not exit within 20 s"
        result.exit_code = process.wait(timeout=10)
        # Drain: whatever was sent before the exit arrives within a few hundred ms.
        count = -1
        while True:
            with lock:
                if len(outputs) == count:
                    break
                count = len(outputs)
            spin_for(0.3)
        with lock:
            result.outputs = len(outputs)
            result.last_zero = bool(outputs) and outputs[-1] == 0.0
        if not result.last_zero:
            errors = process.stderr.read() if process.stderr else ""
            result.detail = f"last output {outputs[-1]:.3f}; " + " | ".join(
                line for line in errors.splitlines() if "zero" in line or "context" in line
            )
        return result
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        result.stop_s = round(result.stop_s, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--targets", nargs="+", default=["safety_node", "bringup"])
    parser.add_argument("--mode", default="mobile", choices=["mobile", "arm"])
    parser.add_argument("--model-dir", help="model directory for bringup (vla-ros make-tiny-model)")
    parser.add_argument("--src", help="PYTHONPATH of another source tree to test")
    parser.add_argument("--out", type=Path, help="directory for stop.json")
    args = parser.parse_args(argv)
    started = bench.conditions()
    trials: list[Trial] = []
    for target in args.targets:
        for sig in SIGNALS:
            for _ in range(args.reps):
                outcome = trial(target, sig, args.mode, args.model_dir, args.src)
                trials.append(outcome)
                mark = "zero" if outcome.last_zero else "MOVING"
                print(f"{target:<12} {sig:<8} {mark:<7} {outcome.stop_s:6.2f} s {outcome.detail}")
    print("\nlast output zero / trials:")
    summary = {}
    for target in args.targets:
        for sig in SIGNALS:
            group = [t for t in trials if t.target == target and t.signal == sig]
            zero = sum(t.last_zero for t in group)
            summary[f"{target}/{sig}"] = {"zero": zero, "trials": len(group)}
            print(f"  {target:<12} {sig:<8} {zero}/{len(group)}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {"summary": summary, "trials": [asdict(t) for t in trials]}
        bench.write_report(args.out / "stop.json", payload, started)
    return 0 if all(t.last_zero for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
