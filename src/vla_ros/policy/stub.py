"""A fake policy for node wiring tests and benchmarks only: no model, no torch, no weights.

Its actions are a deterministic function of the image brightness and the instruction, so a test
can tell from a published command which frame and which instruction produced it; a fixed sleep
emulates the model's cost.
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass

import numpy as np

from vla_ros.policy.types import ActionChunk, PolicySpec

MOTION_GAIN = 0.5
"""motion[:, 0] = MOTION_GAIN * brightness, the other axes come from the instruction's hash."""


@dataclass(frozen=True)
class StubCall:
    """What one `step` saw: the instruction and the image's mean brightness in [0, 1]."""

    instruction: str
    brightness: float
    shape: tuple[int, ...]


def image_brightness(image_rgb_uint8: np.ndarray) -> float:
    return float(np.mean(image_rgb_uint8, dtype=np.float64) / 255.0)


def instruction_axis(instruction: str, axis: int) -> float:
    """Deterministic per-axis value in [-MOTION_GAIN/2, MOTION_GAIN/2) from the instruction."""
    digest = zlib.crc32(f"{axis}:{instruction}".encode())
    return MOTION_GAIN * (digest / 2**32 - 0.5)


class StubPolicy:
    """Implements `vla_ros.policy.types.Policy` for wiring tests and benchmarks only.

    Every action of a chunk is the same: axis 0 = MOTION_GAIN * brightness, axis d > 0 =
    `instruction_axis(instruction, d)`; the arm7 gripper is open (1.0) for bright images
    (brightness >= 0.5), closed otherwise. Set `error` to make `step` raise it. Thread-safe: the
    node steps it from its worker thread while tests read the counters.
    """

    def __init__(
        self,
        spec: PolicySpec,
        cost_s: float = 0.0,
        confidence: float = 0.9,
        error: Exception | None = None,
    ) -> None:
        if cost_s < 0:
            raise ValueError(f"cost_s must be >= 0, got {cost_s}")
        self.spec = spec
        self.cost_s = cost_s
        self.confidence = confidence
        self.error = error
        self.calls = 0
        self.reset_count = 0
        self.log: list[StubCall] = []
        self.history: list[StubCall] = []
        self._lock = threading.Lock()

    def step(self, image_rgb_uint8: np.ndarray, instruction: str) -> ActionChunk:
        started = time.perf_counter()
        if self.cost_s > 0:
            time.sleep(self.cost_s)
        call = StubCall(instruction, image_brightness(image_rgb_uint8), image_rgb_uint8.shape)
        with self._lock:
            self.calls += 1
            self.log.append(call)
            self.history.append(call)
            del self.history[: -self.spec.window]
            error = self.error
        if error is not None:
            raise error
        row = [MOTION_GAIN * call.brightness] + [
            instruction_axis(instruction, axis) for axis in range(1, self.spec.motion_dof)
        ]
        motion = np.tile(np.array(row, dtype=np.float32), (self.spec.chunk, 1))
        gripper = None
        if self.spec.has_gripper:
            gripper = np.full(self.spec.chunk, 1.0 if call.brightness >= 0.5 else 0.0)
        return ActionChunk(
            motion=motion,
            action_period_s=self.spec.action_period_s,
            gripper=gripper,
            gripper_prob=gripper,
            confidence=self.confidence,
            timings_ms={"stub_ms": (time.perf_counter() - started) * 1e3},
        )

    def reset(self) -> None:
        with self._lock:
            self.reset_count += 1
            self.history.clear()
