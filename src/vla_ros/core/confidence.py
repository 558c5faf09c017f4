"""A confidence that measures something: how much the policy agrees with itself.

A VLA head has no calibrated probability for its continuous actions, but two signals are real:
- agreement: the new chunk and the unplayed remainder of the previous chunk both predict the
  actions for the same coming time slots; when they disagree the model changed its mind (a
  surprise, an ambiguous scene, or an instruction it does not ground), and
- gripper margin: how far the gripper open-probabilities are from the 0.5 decision boundary.
Both are in [0, 1] and the confidence is their product, times whatever the policy reports itself.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-9


def chunk_agreement(previous: np.ndarray | None, new: np.ndarray) -> float:
    """1 when the overlapping rows are equal, towards 0 as they diverge; 1 without an overlap.

    Scale-free: the mean over overlapping slots of 1 - |a - b| / (|a| + |b|), so it means the
    same for m/s, rad/s and end-effector deltas, and two near-zero commands count as agreeing.
    """
    if previous is None or len(previous) == 0 or len(new) == 0:
        return 1.0
    rows = min(len(previous), len(new))
    a = np.asarray(previous[:rows], dtype=float)
    b = np.asarray(new[:rows], dtype=float)
    gap = np.linalg.norm(a - b, axis=1)
    size = np.linalg.norm(a, axis=1) + np.linalg.norm(b, axis=1)
    per_slot = np.where(size > _EPS, 1.0 - gap / np.maximum(size, _EPS), 1.0)
    return float(np.clip(per_slot.mean(), 0.0, 1.0))


def gripper_margin(probabilities: np.ndarray | None) -> float:
    """Mean |2p - 1| of the gripper open-probabilities: 1 = certain, 0 = a coin flip."""
    if probabilities is None or len(probabilities) == 0:
        return 1.0
    p = np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
    return float(np.mean(np.abs(2.0 * p - 1.0)))


def combined(policy_confidence: float, agreement: float, margin: float) -> float:
    """The published confidence; a non-finite input counts as no confidence at all."""
    value = policy_confidence * agreement * margin
    return float(min(1.0, max(0.0, value))) if math.isfinite(value) else 0.0
