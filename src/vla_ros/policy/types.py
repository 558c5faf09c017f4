"""The policy <-> node contract, free of torch so nodes and test stubs stay light."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vla_ros import action_space as spaces

ActionSpace = str
"""A canonical action space name from `vla_ros.action_space` (mobile3, arm7, ...)."""

MOTION_DOF: Mapping[str, int] = spaces.view("dof")
"""Continuous motion dimensions per action space, live from the registry."""


@dataclass(frozen=True)
class PolicySpec:
    """What a node must know about a policy without loading it."""

    action_space: ActionSpace
    chunk: int
    window: int
    action_period_s: float
    image_size: int
    model_id: str = "unknown"
    device: str = "cpu"

    @property
    def motion_dof(self) -> int:
        return MOTION_DOF[self.action_space]

    @property
    def has_gripper(self) -> bool:
        return spaces.get(self.action_space).gripper


@dataclass(frozen=True)
class ActionChunk:
    """A predicted sequence of robot commands in SI units.

    `motion` is (chunk, motion_dof): mobile3 = (vx m/s, vy m/s, wz rad/s); arm7 = end-effector
    linear velocity (m/s) then angular velocity (rad/s). `gripper` is (chunk,) with 1.0 = open,
    0.0 = closed (arm7 only); `gripper_prob` the sigmoid open-probabilities behind it.
    Action k is meant for `k * action_period_s` after the stamp of the frame it was computed from.
    """

    motion: np.ndarray
    action_period_s: float
    gripper: np.ndarray | None = None
    gripper_prob: np.ndarray | None = None
    confidence: float = 1.0
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.motion.ndim != 2 or self.motion.shape[0] < 1:
            raise ValueError(f"ActionChunk.motion must be (chunk>=1, dof), got {self.motion.shape}")
        if self.gripper is not None and self.gripper.shape != (self.motion.shape[0],):
            raise ValueError(
                f"ActionChunk.gripper must be ({self.motion.shape[0]},), got {self.gripper.shape}"
            )
        if not self.action_period_s > 0:
            raise ValueError(f"action_period_s must be > 0, got {self.action_period_s}")

    @property
    def length(self) -> int:
        return int(self.motion.shape[0])


def chunk_problem(chunk: object, spec: PolicySpec) -> str | None:
    """Why a policy output must not reach the robot, or None when it may.

    The node's last check before a chunk is scheduled: any policy (real, stub, third party) can
    return NaN, the wrong axes, or a gripper command or confidence outside [0, 1].
    """
    if not isinstance(chunk, ActionChunk):
        return f"policy returned {type(chunk).__name__}, not an ActionChunk"
    motion = np.asarray(chunk.motion)
    if motion.dtype.kind not in "fiu":
        return f"motion has dtype {motion.dtype}, not a number type"
    if motion.shape[1] != spec.motion_dof:
        return f"motion has {motion.shape[1]} axes, {spec.action_space} needs {spec.motion_dof}"
    if not np.all(np.isfinite(motion)):
        return "motion contains NaN or Inf"
    if spec.has_gripper:
        if chunk.gripper is None:
            return f"{spec.action_space} chunk without gripper"
        gripper = np.asarray(chunk.gripper)
        if gripper.dtype.kind not in "fiu" or not np.all((gripper >= 0.0) & (gripper <= 1.0)):
            return "gripper must be within [0, 1] (1 open, 0 closed), got NaN or out of range"
    if not math.isclose(chunk.action_period_s, spec.action_period_s, rel_tol=1e-6):
        return f"action_period_s {chunk.action_period_s} differs from the spec's"
    confidence = chunk.confidence
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real):
        return f"confidence must be a number, got {type(confidence).__name__}"
    if not 0.0 <= confidence <= 1.0:
        return f"confidence must be within [0, 1], got {confidence}"
    return None


class Policy(Protocol):
    """Anything the inference node can drive: the real VLAPolicy or a stub in wiring tests."""

    spec: PolicySpec

    def step(self, image_rgb_uint8: np.ndarray, instruction: str) -> ActionChunk:
        """One new frame (HxWx3 uint8 RGB) and the instruction -> the next action chunk."""

    def reset(self) -> None:
        """Forget the frame history: the next `step` starts a new episode."""
