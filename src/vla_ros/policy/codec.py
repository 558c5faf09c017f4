"""Action codec: between the head's normalized [-1, 1] outputs and SI robot commands.

RoboVLMs trains the arm head on actions clipped to [action_min, action_max] and mapped linearly to
[-1, 1]; the gripper on {-1, 1} labels mapped to {0, 1} with a BCE-on-logits loss. This module is
the single place that turns head outputs back into commands (and commands back into training
targets), so the safety node and the policy agree on units. Pure numpy, no torch, no ROS.

Every function refuses non-finite input with ValueError: a NaN that slipped through here would
reach the robot as a command.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vla_ros import action_space as action_spaces
from vla_ros.policy.config import PolicyConfig
from vla_ros.policy.types import MOTION_DOF

Vector3 = tuple[float, float, float]

ArrayLike = np.ndarray | Sequence[float] | Sequence[Sequence[float]] | float


class ActionCodec:
    """Per-axis normalization bounds, SI scale and gripper threshold of one policy.

    `action_min`/`action_max` are in dataset units; `action_scale` (> 0) converts dataset units
    into SI velocities. Motion arrays are (dof,) or (chunk, dof); results are float64.
    """

    def __init__(
        self,
        action_min: Sequence[float],
        action_max: Sequence[float],
        action_scale: Sequence[float],
        gripper_threshold: float = 0.5,
    ) -> None:
        low = _vector("action_min", action_min)
        high = _vector("action_max", action_max)
        scale = _vector("action_scale", action_scale)
        if not low.shape == high.shape == scale.shape:
            raise ValueError(
                "action_min, action_max and action_scale must have the same length, got "
                f"{low.size}, {high.size}, {scale.size}"
            )
        if np.any(low >= high):
            axis = int(np.argmax(low >= high))
            raise ValueError(
                f"action_min[{axis}]={low[axis]} must be < action_max[{axis}]={high[axis]}"
            )
        if np.any(scale <= 0):
            axis = int(np.argmax(scale <= 0))
            raise ValueError(f"action_scale[{axis}] must be > 0, got {scale[axis]}")
        with np.errstate(over="ignore"):
            if not np.all(np.isfinite((high - low) * scale)):
                raise ValueError("action bounds times action_scale must stay finite")
        threshold = float(gripper_threshold)
        if not (np.isfinite(threshold) and 0.0 < threshold < 1.0):
            raise ValueError(f"gripper_threshold must be in (0, 1), got {gripper_threshold!r}")
        self.action_min = low
        self.action_max = high
        self.action_scale = scale
        self.gripper_threshold = threshold
        # SI bounds are computed exactly the way decode_motion computes its output, so that the
        # clipped extremes land exactly on them despite rounding.
        self.motion_low = low * scale
        self.motion_high = high * scale
        for array in (low, high, scale, self.motion_low, self.motion_high):
            array.setflags(write=False)

    @classmethod
    def from_config(cls, cfg: PolicyConfig) -> ActionCodec:
        """The codec a model directory's `policy.yaml` describes."""
        return cls(cfg.action_min, cfg.action_max, cfg.action_scale, cfg.gripper_threshold)

    @property
    def dof(self) -> int:
        return int(self.action_min.size)

    def __repr__(self) -> str:
        return (
            f"ActionCodec(action_min={self.action_min.tolist()}, "
            f"action_max={self.action_max.tolist()}, action_scale={self.action_scale.tolist()}, "
            f"gripper_threshold={self.gripper_threshold})"
        )

    def normalize(self, raw: ArrayLike) -> np.ndarray:
        """Dataset units -> [-1, 1], clipping to [min, max] first (RoboVLMs' training map)."""
        values = self._motion("raw", raw)
        clipped = np.clip(values, self.action_min, self.action_max)
        unit = (clipped - self.action_min) / (self.action_max - self.action_min)
        return np.clip(unit * 2.0 - 1.0, -1.0, 1.0)

    def unnormalize(self, normalized: ArrayLike) -> np.ndarray:
        """[-1, 1] -> dataset units; anything outside [-1, 1] saturates at the bounds."""
        values = np.clip(self._motion("normalized", normalized), -1.0, 1.0)
        raw = (values + 1.0) * 0.5 * (self.action_max - self.action_min) + self.action_min
        return np.clip(raw, self.action_min, self.action_max)

    def encode_motion(self, motion_si: ArrayLike) -> np.ndarray:
        """SI velocities -> the head's [-1, 1] space (training targets, logged commands)."""
        values = self._motion("motion", motion_si)
        # Clip in SI first so a huge input cannot overflow when divided by a small scale.
        bounded = np.clip(values, self.motion_low, self.motion_high) / self.action_scale
        return self.normalize(bounded)

    def decode_motion(self, normalized: ArrayLike) -> np.ndarray:
        """Head output -> SI velocities, always within [action_min, action_max] * action_scale."""
        return self.unnormalize(normalized) * self.action_scale

    def decode_gripper(self, logits: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Gripper logits -> (command: 1.0 open / 0.0 closed, sigmoid open-probability)."""
        values = _finite_array("gripper logits", logits)
        prob = sigmoid(values)
        return (prob > self.gripper_threshold).astype(np.float64), prob

    def _motion(self, name: str, value: ArrayLike) -> np.ndarray:
        array = _finite_array(name, value)
        if array.ndim not in (1, 2) or array.shape[-1] != self.dof:
            raise ValueError(
                f"{name} must have shape ({self.dof},) or (chunk, {self.dof}), got {array.shape}"
            )
        return array


def gripper_to_target(gripper: ArrayLike) -> np.ndarray:
    """Dataset gripper labels {-1 closed, 1 open} -> BCE targets {0, 1}.

    Values in between are split at 0 (the sign is what the label means), so a dataset that stores
    a continuous gripper signal still yields valid binary targets.
    """
    values = _finite_array("gripper", gripper)
    return (values > 0.0).astype(np.float64)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function that neither overflows nor loses precision for huge |logit|."""
    values = np.asarray(logits, dtype=np.float64)
    with np.errstate(under="ignore"):
        exp_neg_abs = np.exp(-np.abs(values))
    return np.where(values >= 0.0, 1.0 / (1.0 + exp_neg_abs), exp_neg_abs / (1.0 + exp_neg_abs))


def motion_to_twist_fields(motion: ArrayLike, action_space: str) -> tuple[Vector3, Vector3]:
    """One motion vector -> (linear xyz, angular xyz) of a Twist; unused axes are exactly 0.0.

    The axis layout comes from the action-space registry (mobile3: vx, vy, wz -> linear x/y and
    angular z; arm7: all six fields).
    """
    space = _space(action_space)
    values = _finite_array("motion", motion)
    if values.shape != (space.dof,):
        raise ValueError(f"{space.name} motion must have shape ({space.dof},), got {values.shape}")
    linear, angular = space.to_twist(values.tolist())
    return linear, angular  # type: ignore[return-value]


def twist_fields_to_motion(
    linear: Sequence[float], angular: Sequence[float], action_space: str
) -> np.ndarray:
    """Twist (linear xyz, angular xyz) -> motion vector; the inverse of `motion_to_twist_fields`.

    Axes the action space cannot execute (for a planar base: linear z, angular x/y) are dropped;
    they must still be finite, since a NaN anywhere means the producer is broken.
    """
    space = _space(action_space)
    lin = _finite_array("linear", linear)
    ang = _finite_array("angular", angular)
    if lin.shape != (3,) or ang.shape != (3,):
        raise ValueError(
            f"linear and angular must each have 3 components, got {lin.shape} and {ang.shape}"
        )
    return np.array(space.from_twist(np.concatenate([lin, ang])), dtype=np.float64)


def _space(action_space: str) -> action_spaces.ActionSpaceSpec:
    if action_space not in MOTION_DOF:
        raise ValueError(f"action_space must be one of {sorted(MOTION_DOF)}, got {action_space!r}")
    return action_spaces.get(action_space)


def _vector(name: str, values: Sequence[float]) -> np.ndarray:
    array = _finite_array(name, values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty list of numbers, got shape {array.shape}")
    return array.copy()


def _finite_array(name: str, value: object) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values (NaN or Inf)")
    return array
