"""`vla-ros faults drill`: the stack's own parts failing while the robot moves, measured.

The camera, inference and safety nodes run as separate processes, as `vla.launch.py` starts them
on a robot, with the shipped parameter file and a real model. A driver process plays the camera
(a moving pattern at 10 Hz) and the operator (the instruction), and sits between the inference
node and the safety node (the policy's command goes through it), so a fault is injected from
outside: the production nodes have no test-only code. For each fault, once `/cmd_vel` has been
moving for a second, the fault starts; the drill records every command at the robot output and
reports how long the stack took to command zero, how far and how fast it still drove, and, after
a killed inference node restarts, whether the robot moved again before anyone gave a new
instruction (it must not).

Faults: `kill-inference` (SIGKILL, restart 3 s later, as launch `respawn` would), `camera-stop`
(no frames for 2 s), `camera-freeze` (the same image with new stamps for 2 s), `cmd-delay`
(policy commands 300 ms late for 3 s), `cmd-loss` (half of them dropped for 3 s),
`instruction-spam` (10 alternating instructions per second for 3 s), `scan-dropout` and
`clock-stall`. Those two get a stack of their own. `scan-dropout` runs behind the safety node's
lidar guard (`config/mobile_lidar_guard.yaml` over the base file; without it no node reads the
lidar): the driver publishes a clear `/scan` at 10 Hz and stops it for 2 s. For `clock-stall` the
nodes run on sim time (`use_sim_time`) with the driver as the simulator: it publishes `/clock` at
200 Hz, 1:1 with wall time, and stamps its frames with it; the stall stops both for 2 s, as a
frozen simulator does, and time then goes on from where it stopped. Times are wall-clock on this
machine: the summary records its load (`vla_ros.bench.conditions`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAULTS = (
    "kill-inference",
    "camera-stop",
    "camera-freeze",
    "cmd-delay",
    "cmd-loss",
    "instruction-spam",
    "scan-dropout",
    "clock-stall",
)
FAULT_S = {
    "camera-stop": 2.0,
    "camera-freeze": 2.0,
    "kill-inference": 3.0,
    "clock-stall": 2.0,
    "scan-dropout": 2.0,
}
"""How long each fault lasts (3 s where not listed); a killed node restarts at its end."""
ZERO = 1e-3
"""A command with no component above this counts as zero."""
INSTRUCTIONS = ("go to the red box", "빨간 상자를 피해서 왼쪽으로 가")
CAMERA_HZ = 10.0
POLICY_CMD_TOPIC = "vla/cmd_raw_policy"
"""Where the inference node publishes in the drill; the driver forwards it to vla/cmd_raw."""
TARGET_ZERO_S = 0.5
"""Zero at the robot within this long of a fault that takes the policy's inputs away."""
INPUT_FAULTS = ("kill-inference", "camera-stop", "camera-freeze", "clock-stall", "scan-dropout")
"""Faults that take away an input the stack needs to move safely: the robot must stop."""
SESSIONS = {"scan-dropout": "lidar-guard", "clock-stall": "sim-time"}
"""Faults that need a stack of their own (started after the others'); the rest share `plain`."""
SESSION_ORDER = ("plain", "lidar-guard", "sim-time")
LIDAR_GUARD = "mobile_lidar_guard.yaml"
CLOCK_HZ = 200.0
SCAN_HZ = 10.0
SCAN_RAYS = 360
SCAN_CLEAR_M = 8.0
"""Every ray of the drill's scan: nothing near, so the guard lets the policy drive."""


@dataclass(frozen=True)
class Sample:
    t: float
    """Seconds on the drill's clock (monotonic)."""
    speed: float
    """Largest absolute component of the command at the robot output."""


@dataclass
class Trial:
    fault: str
    onset_s: float
    cleared_s: float
    samples: list[Sample] = field(default_factory=list)
    restart_s: float | None = None
    instruction_again_s: float | None = None


def analyse(trial: Trial) -> dict[str, Any]:
    """What a trial shows, from the commands at the robot output alone (ROS-free).

    A base keeps executing the last command it got, so the one in force at the onset counts from
    the onset until the output changes it: an output that falls silent (a stalled /clock stops
    every ROS timer) is not a stop."""
    before = [s for s in trial.samples if s.t < trial.onset_s]
    window = [s for s in trial.samples if trial.onset_s <= s.t <= trial.cleared_s]
    if before:
        window.insert(0, Sample(trial.onset_s, before[-1].speed))
    # Zero for good: after the last moving command of the fault window (a policy's own output
    # touches zero now and then; that is not the stack stopping). Still moving at the window's
    # end = never zeroed.
    moving = [s.t for s in window if s.speed > ZERO]
    zero: float | None
    if not moving:
        zero = 0.0
    elif window[-1].speed > ZERO:
        zero = None
    else:
        zero = next(s.t for s in window if s.t > moving[-1]) - trial.onset_s
    distance = sum(a.speed * (b.t - a.t) for a, b in itertools.pairwise(window) if b.t > a.t)
    result: dict[str, Any] = {
        "fault": trial.fault,
        "time_to_zero_s": None if zero is None else round(zero, 3),
        "moving_share_before": _moving_share(before),
        "moving_share_during": _moving_share(window),
        "peak_after_onset": round(max((s.speed for s in window), default=0.0), 4),
        "distance_after_onset": round(distance, 4),
        "moving_before_onset": any(s.speed > ZERO for s in trial.samples if s.t < trial.onset_s),
    }
    if trial.restart_s is not None:
        until = trial.instruction_again_s if trial.instruction_again_s is not None else math.inf
        result["resumed_without_instruction"] = any(
            s.speed > ZERO for s in trial.samples if trial.restart_s < s.t < until
        )
    after = [s for s in trial.samples if s.t > max(trial.cleared_s, trial.instruction_again_s or 0)]
    moving_again = next((s.t for s in after if s.speed > ZERO), None)
    result["moving_again_after_s"] = (
        None if moving_again is None else round(moving_again - trial.cleared_s, 3)
    )
    return result


def _moving_share(samples: Sequence[Sample]) -> float:
    return round(sum(s.speed > ZERO for s in samples) / len(samples), 3) if samples else 0.0


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per fault: time to zero p50 and max, worst distance and peak, resumes without instruction."""
    by_fault: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_fault.setdefault(result["fault"], []).append(result)
    table = {}
    for fault, rows in by_fault.items():
        zeros = sorted(r["time_to_zero_s"] for r in rows if r["time_to_zero_s"] is not None)
        never = sum(r["time_to_zero_s"] is None for r in rows)
        entry: dict[str, Any] = {
            "trials": len(rows),
            "distance_max": max(r["distance_after_onset"] for r in rows),
            "peak_max": max(r["peak_after_onset"] for r in rows),
            "moving_share_before": min(r["moving_share_before"] for r in rows),
            "moving_share_during": max(r["moving_share_during"] for r in rows),
        }
        if fault in INPUT_FAULTS:
            # Only these take the policy's inputs away; under the others driving on is right.
            entry["never_zero"] = never
            entry["time_to_zero_p50_s"] = zeros[len(zeros) // 2] if zeros else None
            entry["time_to_zero_max_s"] = None if never or not zeros else zeros[-1]
        if any("resumed_without_instruction" in r for r in rows):
            entry["resumes_without_instruction"] = sum(
                bool(r.get("resumed_without_instruction")) for r in rows
            )
        if fault in INPUT_FAULTS:
            worst = entry["time_to_zero_max_s"]
            entry["meets_zero_target"] = worst is not None and worst <= TARGET_ZERO_S
        table[fault] = entry
    return table


# --------------------------------------------------------------------------- orchestration


class _Stack:
    """The three nodes as processes, started like `vla.launch.py` starts them."""

    def __init__(
        self, model_dir: Path, params: Sequence[Path], log_dir: Path, sim_time: bool
    ) -> None:
        self.model_dir, self.params, self.log_dir = model_dir, params, log_dir
        self.sim_time = sim_time
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        module, extra = {
            "safety": ("safety_node", []),
            "camera": ("camera_node", []),
            "inference": (
                "inference_node",
                ["-p", f"model_dir:={self.model_dir}", "-p", f"cmd_topic:={POLICY_CMD_TOPIC}"],
            ),
        }[name]
        if self.sim_time:
            extra = [*extra, "-p", "use_sim_time:=true"]
        files = [arg for path in self.params for arg in ("--params-file", str(path))]
        code = f"import sys; from vla_ros.nodes.{module} import main; sys.exit(main())"
        log = (self.log_dir / f"{name}.log").open("a", encoding="utf-8")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-c", code, "--ros-args", *files, *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


class _Driver:
    """Camera, operator and the command path between inference and safety, in one node."""

    def __init__(self, context: Any, sim_time: bool, scan: bool) -> None:
        from geometry_msgs.msg import Twist
        from rclpy.node import Node
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, LaserScan
        from std_msgs.msg import String

        from vla_ros.transport import CLOCK_QOS, COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

        self.node = Node("vla_fault_driver", context=context)
        self._image_pub = self.node.create_publisher(Image, "/camera/image_raw", SENSOR_QOS)
        self._instruction_pub = self.node.create_publisher(String, "/vla/instruction", LATCHED_QOS)
        self._cmd_pub = self.node.create_publisher(Twist, "/vla/cmd_raw", COMMAND_QOS)
        self.node.create_subscription(Twist, f"/{POLICY_CMD_TOPIC}", self._on_policy, COMMAND_QOS)
        self.node.create_subscription(Twist, "/cmd_vel", self._on_output, COMMAND_QOS)
        self._lock = threading.Lock()
        self.samples: list[Sample] = []
        self.camera = "on"  # on | stopped | frozen
        self.cmd_fault = ""  # "" | delay | loss
        self._frozen: Any = None
        self._frame_index = 0
        self._rng = random.Random(0)
        self._delayed: list[tuple[float, Any]] = []
        self.clock_stalled = False
        self.scan_dropped = False
        self._sim_s = 0.0 if sim_time else None
        self._last_tick = time.monotonic()
        if sim_time:
            self._clock_pub = self.node.create_publisher(Clock, "/clock", CLOCK_QOS)
            self.node.create_timer(1.0 / CLOCK_HZ, self._publish_clock)
        if scan:
            self._scan_pub = self.node.create_publisher(LaserScan, "/scan", SENSOR_QOS)
            self.node.create_timer(1.0 / SCAN_HZ, self._publish_scan)
        self.node.create_timer(1.0 / CAMERA_HZ, self._publish_frame)
        self.node.create_timer(0.01, self._release_delayed)

    def listeners(self) -> int:
        """Inference subscriptions to the instruction (a dead process's may linger a while)."""
        return self._instruction_pub.get_subscription_count()

    def instruct(self, text: str) -> None:
        from std_msgs.msg import String

        self._instruction_pub.publish(String(data=text))

    def _publish_clock(self) -> None:
        """Sim time 1:1 with wall time, except while stalled (it then resumes where it stopped)."""
        from rosgraph_msgs.msg import Clock

        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        if self.clock_stalled or self._sim_s is None:
            return
        self._sim_s += elapsed
        self._clock_pub.publish(Clock(clock=self._stamp()))

    def _stamp(self) -> Any:
        from builtin_interfaces.msg import Time

        if self._sim_s is None:
            return self.node.get_clock().now().to_msg()
        seconds = int(self._sim_s)
        return Time(sec=seconds, nanosec=int((self._sim_s - seconds) * 1e9))

    def _publish_scan(self) -> None:
        from sensor_msgs.msg import LaserScan

        if self.scan_dropped or self.clock_stalled:
            return
        msg = LaserScan()
        msg.header.stamp = self._stamp()
        msg.header.frame_id = "base_link"
        msg.angle_increment = 2 * math.pi / SCAN_RAYS
        msg.angle_min = -math.pi
        msg.angle_max = msg.angle_min + msg.angle_increment * (SCAN_RAYS - 1)
        msg.scan_time = 1.0 / SCAN_HZ
        msg.range_min, msg.range_max = 0.05, 2 * SCAN_CLEAR_M
        msg.ranges = [SCAN_CLEAR_M] * SCAN_RAYS
        self._scan_pub.publish(msg)

    def _publish_frame(self) -> None:
        import numpy as np
        from sensor_msgs.msg import Image

        if self.camera == "stopped" or self.clock_stalled:
            return  # a frozen simulator renders no frames either
        msg = Image()
        msg.header.stamp = self._stamp()
        msg.header.frame_id = "camera"
        msg.height, msg.width, msg.encoding, msg.step = 224, 224, "rgb8", 224 * 3
        if self.camera != "frozen" or self._frozen is None:
            self._frame_index += 1
            image = np.zeros((224, 224, 3), np.uint8)
            column = (self._frame_index * 7) % 224
            image[:, column : column + 24] = (200, 40, 40)
            image[: 40 + self._frame_index % 60, :, 2] = 90
            self._frozen = image.tobytes()
        # Frozen: the last image again, with a new stamp.
        msg.data = self._frozen
        self._image_pub.publish(msg)

    def _on_policy(self, msg: Any) -> None:
        if self.cmd_fault == "loss" and self._rng.random() < 0.5:
            return
        if self.cmd_fault == "delay":
            with self._lock:
                self._delayed.append((time.monotonic() + 0.3, msg))
            return
        self._cmd_pub.publish(msg)

    def _release_delayed(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [m for t, m in self._delayed if t <= now]
            self._delayed = [(t, m) for t, m in self._delayed if t > now]
        for msg in due:
            self._cmd_pub.publish(msg)

    def _on_output(self, msg: Any) -> None:
        speed = max(
            abs(msg.linear.x), abs(msg.linear.y), abs(msg.linear.z),
            abs(msg.angular.x), abs(msg.angular.y), abs(msg.angular.z),
        )  # fmt: skip
        with self._lock:
            self.samples.append(Sample(time.monotonic(), speed))

    def since(self, t: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.t >= t]


def _wait_moving(driver: _Driver, timeout_s: float, hold_s: float = 2.0) -> bool:
    """Until most commands of the last `hold_s` moved the robot (a policy's output dips into
    the deadband now and then)."""
    deadline = time.monotonic() + timeout_s
    start = time.monotonic()
    while time.monotonic() < deadline:
        recent = driver.since(time.monotonic() - hold_s)
        moving = sum(s.speed > ZERO for s in recent)
        if time.monotonic() - start > hold_s and len(recent) >= 20 and moving >= len(recent) / 2:
            return True
        time.sleep(0.05)
    return False


def run_drill(
    model_dir: Path,
    params: Path,
    faults: Sequence[str],
    repeats: int,
    out: Path,
    start_timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Start the stack, run every fault `repeats` times, write `faults.json` and the plots.
    Faults in `SESSIONS` get a stack of their own (sim time, or behind the lidar guard)."""
    from vla_ros.bench import conditions, write_report

    started = conditions()
    out.mkdir(parents=True, exist_ok=True)
    trials: list[Trial] = []
    for kind in SESSION_ORDER:
        session = [f for f in faults if SESSIONS.get(f, "plain") == kind]
        if session:
            trials += _session(model_dir, params, session, repeats, out, kind, start_timeout_s)
    results = [analyse(trial) for trial in trials]
    report = {"faults": summarise(results), "trials": results, "repeats": repeats}
    write_report(out / "faults.json", report, started)
    _plot(trials, out)
    return report


def _session(
    model_dir: Path,
    params: Path,
    faults: Sequence[str],
    repeats: int,
    out: Path,
    kind: str,
    start_timeout_s: float,
) -> list[Trial]:
    """One stack through `repeats` rounds of `faults`: `plain` (wall time, the parameter file
    alone), `lidar-guard` (its overlay on top, the driver's scan) or `sim-time` (the driver's
    /clock)."""
    import rclpy
    from rclpy.context import Context

    from vla_ros.files import config_file
    from vla_ros.transport import make_executor

    files = [params, config_file(LIDAR_GUARD)] if kind == "lidar-guard" else [params]
    stack = _Stack(model_dir, files, out, sim_time=kind == "sim-time")
    context = Context()
    rclpy.init(args=[], context=context)
    driver = _Driver(context, sim_time=kind == "sim-time", scan=kind == "lidar-guard")
    executor = make_executor(context)
    executor.add_node(driver.node)
    spinner = threading.Thread(target=executor.spin, name="fault_driver", daemon=True)
    spinner.start()
    trials: list[Trial] = []
    try:
        for name in ("safety", "camera", "inference"):
            stack.start(name)
        # Only once the inference node listens: one published before it started is held.
        deadline = time.monotonic() + start_timeout_s
        while driver.listeners() < 2 and time.monotonic() < deadline:  # latched + volatile twin
            time.sleep(0.1)
        instruction = 0
        driver.instruct(INSTRUCTIONS[instruction])
        if not _wait_moving(driver, start_timeout_s):
            raise RuntimeError(f"the stack never drove /cmd_vel within {start_timeout_s:.0f} s")
        for _ in range(repeats):
            for fault in faults:
                trial = _inject(fault, driver, stack)
                trials.append(trial)
                instruction += 1
                driver.instruct(INSTRUCTIONS[instruction % 2])
                if not _wait_moving(driver, 60.0):
                    raise RuntimeError(f"the stack did not drive again after {fault}")
                trial.samples = driver.since(trial.onset_s - 2.0)
    finally:
        stack.stop()
        executor.shutdown()
        driver.node.destroy_node()
        rclpy.shutdown(context=context)
    return trials


def _inject(fault: str, driver: _Driver, stack: _Stack) -> Trial:
    onset = time.monotonic()
    duration = FAULT_S.get(fault, 3.0)
    trial = Trial(fault, onset, onset + duration)
    if fault == "kill-inference":
        stack.kill("inference")
        time.sleep(duration)
        stack.start("inference")
        trial.restart_s = time.monotonic()
        trial.cleared_s = trial.restart_s
        # The restarted node finds the latched instruction: it must hold, not drive.
        time.sleep(8.0)
        trial.instruction_again_s = time.monotonic()
    elif fault in ("camera-stop", "camera-freeze"):
        driver.camera = "stopped" if fault == "camera-stop" else "frozen"
        time.sleep(duration)
        driver.camera = "on"
        trial.cleared_s = time.monotonic()
    elif fault == "scan-dropout":
        driver.scan_dropped = True
        time.sleep(duration)
        driver.scan_dropped = False
        trial.cleared_s = time.monotonic()
    elif fault == "clock-stall":
        driver.clock_stalled = True
        time.sleep(duration)
        driver.clock_stalled = False
        trial.cleared_s = time.monotonic()
    elif fault in ("cmd-delay", "cmd-loss"):
        driver.cmd_fault = "delay" if fault == "cmd-delay" else "loss"
        time.sleep(duration)
        driver.cmd_fault = ""
        trial.cleared_s = time.monotonic()
    elif fault == "instruction-spam":
        end = onset + duration
        k = 0
        while time.monotonic() < end:
            driver.instruct(INSTRUCTIONS[k % 2])
            k += 1
            time.sleep(0.1)
        trial.cleared_s = time.monotonic()
    else:
        raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
    time.sleep(2.0)
    return trial


def _plot(trials: Sequence[Trial], out: Path) -> None:
    """One PNG per fault: command magnitude at the robot vs time, the fault window shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for fault in dict.fromkeys(t.fault for t in trials):
        figure, axis = plt.subplots(figsize=(7, 3))
        for trial in (t for t in trials if t.fault == fault):
            xs = [s.t - trial.onset_s for s in trial.samples]
            axis.plot(xs, [s.speed for s in trial.samples], linewidth=1)
            axis.axvspan(0.0, trial.cleared_s - trial.onset_s, color="red", alpha=0.08)
        axis.axvline(TARGET_ZERO_S, color="grey", linestyle=":", linewidth=1)
        axis.set_xlabel("s from fault onset")
        axis.set_ylabel("|command| at /cmd_vel")
        axis.set_title(fault)
        figure.tight_layout()
        figure.savefig(out / f"{fault}.png", dpi=100)
        plt.close(figure)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("faults", help="the stack's own parts failing, measured")
    commands = parser.add_subparsers(dest="faults_command", required=True, metavar="COMMAND")
    drill = commands.add_parser(
        "drill",
        help="inject faults into the camera/inference/safety processes while /cmd_vel moves",
    )
    drill.add_argument("--model-dir", type=Path, required=True, help="vla_ros model directory")
    drill.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma list of {', '.join(FAULTS)}",
    )
    drill.add_argument("--repeats", type=int, default=3, help="trials per fault")
    drill.add_argument(
        "--params", type=Path, default=None, help="parameter file (default: config/mobile.yaml)"
    )
    drill.add_argument("--out", type=Path, default=Path("out/faults"), help="faults.json, plots")
    drill.set_defaults(handler=_handle_drill)


def _handle_drill(args: argparse.Namespace) -> int:
    from vla_ros.params import default_params_file

    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        raise ValueError(f"--faults: unknown {unknown or 'none given'}; choose from {FAULTS}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if not (args.model_dir / "policy.yaml").is_file():
        raise FileNotFoundError(f"{args.model_dir} is not a vla_ros model directory")
    params = args.params or default_params_file("mobile3")
    # A domain of its own on this machine only: the drill kills nodes and commands /cmd_vel, so
    # it must never meet a real robot's stack. The caller's environment is left as it was.
    isolation = {
        "ROS_DOMAIN_ID": str(random.SystemRandom().randint(201, 232)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }
    saved = {name: os.environ.get(name) for name in isolation}
    os.environ.update(isolation)
    print(f"faults drill on ROS_DOMAIN_ID {isolation['ROS_DOMAIN_ID']}, localhost only")
    try:
        report = run_drill(args.model_dir, Path(params), faults, args.repeats, args.out)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    print(json.dumps(report["faults"], indent=2, ensure_ascii=False))
    return 0
