"""Inference-node cost outside the model, and how often event triggering runs the model.

1. Overhead: `vla_inference` with a StubPolicy of fixed cost, inferring back to back; per
   inference, trigger-to-publish time minus the model time (wake-up, frame conversion, chunk
   scheduling, publishing keyframe/chunk/confidence). Target p99 <= 2 ms.
2. Calls vs frames: a replayed 30 fps mostly-static scene (sensor noise, two real changes)
   scored by the camera's SceneChangeDetector, which follows the keyframes the node publishes,
   with the node's default trigger parameters. Target: model calls <= 1/5 of frames.

Real rclpy and DDS on loopback, wall-clock time. Prints a table; writes inference.json to --out.

    python test/bench/bench_inference.py --out out/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

# A private DDS domain on loopback, so a benchmark never talks to a running stack.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np
import rclpy
from geometry_msgs.msg import Vector3Stamped
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from vla_ros import bench
from vla_ros.core.scene import SceneChangeDetector
from vla_ros.nodes.inference_node import InferenceNode
from vla_ros.policy.stub import StubPolicy
from vla_ros.policy.types import PolicySpec
from vla_ros.transport import COMMAND_QOS, LATCHED_QOS, LATEST_ONLY_QOS

FPS = 30.0
IMAGE_SIZE = 224
OVERHEAD_TARGET_P99_MS = 2.0
CALL_RATIO_TARGET = 0.2


class ReplayCamera:
    """Plays the camera node's part: frames at FPS with a scene score against the keyframe."""

    def __init__(self, context: Context, seconds: float, changes: tuple[float, ...]) -> None:
        self.node = Node("bench_camera", context=context)
        self.seconds = seconds
        self.changes = changes
        self.frames = 0
        self.events: list[dict[str, Any]] = []
        self.done = threading.Event()
        self._detector = SceneChangeDetector()
        self._rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
        self._background = np.stack([xx * 0.6 + 40, yy * 0.5 + 60, (xx + yy) * 0.2 + 30], -1)
        self._frame_pub = self.node.create_publisher(Image, "vla/frame", LATEST_ONLY_QOS)
        self._score_pub = self.node.create_publisher(
            Vector3Stamped, "vla/scene_change", LATEST_ONLY_QOS
        )
        self.instruction_pub = self.node.create_publisher(String, "vla/instruction", LATCHED_QOS)
        self.node.create_subscription(Header, "vla/keyframe", self._on_keyframe, COMMAND_QOS)
        self.node.create_subscription(
            String, "vla/inference_event", lambda m: self.events.append(json.loads(m.data)), 100
        )
        self._start = time.monotonic()
        self.node.create_timer(1.0 / FPS, self._tick)

    def _view(self, elapsed: float) -> np.ndarray:
        """Static view with sensor noise; each change moves a large object somewhere else."""
        image = self._background.copy()
        moved = sum(elapsed >= t for t in self.changes)
        x = 12 + 100 * (moved % 2)
        image[40:180, x : x + 100] = (240.0, 230.0, 30.0)
        image += self._rng.normal(0.0, 2.0, image.shape)
        return np.clip(image, 0, 255).astype(np.uint8)

    def _tick(self) -> None:
        elapsed = time.monotonic() - self._start
        if elapsed > self.seconds:
            self.done.set()
            return
        pixels = self._view(elapsed)
        header = Header(frame_id="camera")
        now = self.node.get_clock().now()
        header.stamp = now.to_msg()
        score = Vector3Stamped(header=header)
        score.vector.x = self._detector.update(pixels, now.nanoseconds)
        self._score_pub.publish(score)
        self._frame_pub.publish(
            Image(
                header=header,
                height=IMAGE_SIZE,
                width=IMAGE_SIZE,
                encoding="rgb8",
                step=3 * IMAGE_SIZE,
                data=pixels.tobytes(),
            )
        )
        self.frames += 1

    def _on_keyframe(self, header: Header) -> None:
        self._detector.set_reference(header.stamp.sec * 10**9 + header.stamp.nanosec)


def run_stack(
    seconds: float, changes: tuple[float, ...], cost_s: float, params: dict[str, Any]
) -> tuple[ReplayCamera, InferenceNode]:
    context = Context()
    rclpy.init(context=context)
    spec = PolicySpec(
        action_space="mobile3",
        chunk=10,
        window=8,
        action_period_s=0.1,
        image_size=IMAGE_SIZE,
        model_id="stub",
    )
    overrides = [Parameter(name, value=value) for name, value in params.items()]
    node = InferenceNode(
        StubPolicy(spec, cost_s=cost_s), context=context, parameter_overrides=overrides
    )
    camera = ReplayCamera(context, seconds, changes)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(node)
    executor.add_node(camera.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    camera.instruction_pub.publish(String(data="go to the charging station"))
    camera.done.wait(seconds + 30.0)
    executor.shutdown()
    spinner.join(timeout=10.0)
    node.destroy_node()
    camera.node.destroy_node()
    rclpy.shutdown(context=context)
    return camera, node


def overhead(seconds: float, cost_s: float) -> dict[str, Any]:
    """Back-to-back inference: every chunk is immediately 'low', no rate limit."""
    camera, _ = run_stack(
        seconds,
        (),
        cost_s,
        {"min_interval_s": 0.0, "chunk_low_threshold": 10, "max_frame_age_s": 1.0},
    )
    extra = np.array([e["latency_ms"] - e["model_ms"] for e in camera.events[1:]], dtype=float)
    model = np.array([e["model_ms"] for e in camera.events[1:]], dtype=float)
    return {
        "inferences": int(extra.size),
        "stub_cost_ms": cost_s * 1e3,
        "model_p50_ms": float(np.median(model)),
        "overhead_p50_ms": float(np.median(extra)),
        "overhead_p99_ms": float(np.percentile(extra, 99)),
        "overhead_max_ms": float(extra.max()),
        "target_p99_ms": OVERHEAD_TARGET_P99_MS,
        "met": bool(np.percentile(extra, 99) <= OVERHEAD_TARGET_P99_MS),
    }


def calls_vs_frames(seconds: float, cost_s: float) -> dict[str, Any]:
    """Default trigger parameters on a mostly static scene with two real changes."""
    camera, _ = run_stack(seconds, (seconds * 0.3, seconds * 0.7), cost_s, {})
    calls = len(camera.events)
    ratio = calls / max(1, camera.frames)
    return {
        "seconds": seconds,
        "frames": camera.frames,
        "frames_per_s": camera.frames / seconds,
        "calls": calls,
        "calls_per_s": calls / seconds,
        "calls_per_frame": ratio,
        "by_cause": dict(Counter(e["cause"] for e in camera.events)),
        "target_calls_per_frame": CALL_RATIO_TARGET,
        "met": ratio <= CALL_RATIO_TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for inference.json")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--cost-ms", type=float, default=20.0, help="StubPolicy model cost")
    args = parser.parse_args(argv)
    started = bench.conditions()
    cost_s = args.cost_ms / 1e3

    over = overhead(args.seconds, cost_s)
    calls = calls_vs_frames(args.seconds, cost_s)

    rows = [
        ("trigger->publish overhead p50 (ms)", f"{over['overhead_p50_ms']:.3f}", ""),
        (
            "trigger->publish overhead p99 (ms)",
            f"{over['overhead_p99_ms']:.3f}",
            f"<= {OVERHEAD_TARGET_P99_MS} {'ok' if over['met'] else 'MISSED'}",
        ),
        (
            "  inferences measured / stub model p50 (ms)",
            f"{over['inferences']}",
            f"{over['model_p50_ms']:.1f}",
        ),
        ("replay frames/s", f"{calls['frames_per_s']:.1f}", ""),
        ("VLM calls/s", f"{calls['calls_per_s']:.2f}", ""),
        (
            "VLM calls per frame",
            f"{calls['calls_per_frame']:.3f}",
            f"<= {CALL_RATIO_TARGET} {'ok' if calls['met'] else 'MISSED'}",
        ),
        ("  vs per-frame inference", f"{1 / max(calls['calls_per_frame'], 1e-9):.1f}x fewer", ""),
        ("  calls by cause", json.dumps(calls["by_cause"]), ""),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"{'metric':<{width}}  {'median/value':>14}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>14}  {target}")

    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "inference",
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
        "overhead": over,
        "calls_vs_frames": calls,
    }
    path = args.out / "inference.json"
    bench.write_report(path, result, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
