"""Velocity clamping, acceleration ramps and deadband on small motion vectors.

Plain floats rather than numpy: vectors have 3 or 6 entries and this runs once per output tick,
where numpy's per-call overhead would dominate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Vector = tuple[float, ...]


def ramp_axis(
    current: float,
    target: float,
    accel: float,
    decel: float,
    dt: float,
    accel_window: float = math.inf,
) -> float:
    """Furthest value towards `target` reachable in `dt` seconds.

    Speeding up (away from zero) is limited by `accel`, slowing down by `decel`. Through a sign
    change the axis first brakes to zero at `decel`, then speeds up for the rest of `dt` at `accel`.
    Speeding up counts at most `accel_window` seconds, so a long gap between steps (a stalled
    timer, a clock jump) cannot turn into a step up; braking always gets the whole `dt`.
    """
    if dt <= 0.0 or current == target:
        return current
    if current * target >= 0.0 and abs(target) >= abs(current):
        step = accel * min(dt, accel_window)
    elif current * target >= 0.0:
        step = decel * dt
    else:
        time_to_zero = abs(current) / decel
        if time_to_zero >= dt:
            return current - math.copysign(decel * dt, current)
        step = accel * min(dt - time_to_zero, accel_window)
        return target if abs(target) <= step else math.copysign(step, target)
    if abs(target - current) <= step:
        return target
    return current + math.copysign(step, target - current)


def ramp(
    current: Sequence[float],
    target: Sequence[float],
    accel: Sequence[float],
    decel: Sequence[float],
    dt: float,
    keep_direction: bool,
    accel_window: float = math.inf,
) -> Vector:
    """Move every axis towards the target within its accel/decel budget.

    With `keep_direction` all axes advance by the same fraction of their remaining change (the
    slowest axis sets the pace), so the output moves along the straight segment from `current` to
    `target`; that segment also never leaves a convex set (norm ball, box) holding both ends.
    """
    per_axis = tuple(
        ramp_axis(c, t, a, d, dt, accel_window)
        for c, t, a, d in zip(current, target, accel, decel, strict=True)
    )
    if not keep_direction:
        return per_axis
    fraction = 1.0
    for c, t, reached in zip(current, target, per_axis, strict=True):
        if t != c:
            fraction = min(fraction, (reached - c) / (t - c))
    if fraction >= 1.0:
        return tuple(target)
    return tuple(c + fraction * (t - c) for c, t in zip(current, target, strict=True))


def clamp_axes(
    motion: Sequence[float], low: Sequence[float], high: Sequence[float], keep_direction: bool
) -> tuple[Vector, bool]:
    """Per-axis [low, high] limits; with `keep_direction` the vector is scaled instead of clipped.

    Returns the limited vector and whether any limit acted. Requires low <= 0 <= high. Before
    scaling, components pointing where their limit is 0 (vy on a differential drive, reverse on a
    robot that cannot back up) are zeroed, so noise on them cannot stop the whole vector.
    """
    if keep_direction:
        kept = tuple(
            0.0 if (v > 0.0 and hi == 0.0) or (v < 0.0 and lo == 0.0) else v
            for v, lo, hi in zip(motion, low, high, strict=True)
        )
        scale = 1.0
        for value, lo, hi in zip(kept, low, high, strict=True):
            if value > hi:
                scale = min(scale, hi / value)
            elif value < lo:
                scale = min(scale, lo / value)
        if scale >= 1.0:
            return kept, kept != tuple(motion)
        return tuple(value * scale for value in kept), True
    clipped = tuple(min(max(v, lo), hi) for v, lo, hi in zip(motion, low, high, strict=True))
    return clipped, clipped != tuple(motion)


def clamp_norm(motion: Vector, axes: Sequence[int], limit: float) -> tuple[Vector, bool]:
    """Scale the components in `axes` so their Euclidean norm is at most `limit`."""
    norm = math.sqrt(sum(motion[i] * motion[i] for i in axes))
    if norm <= limit:
        return motion, False
    scale = limit / norm
    values = list(motion)
    for i in axes:
        values[i] *= scale
    return tuple(values), True


def norm_of(motion: Sequence[float], axes: Sequence[int]) -> float:
    return math.sqrt(sum(motion[i] * motion[i] for i in axes))


def apply_deadband(motion: Sequence[float], deadband: Sequence[float]) -> Vector:
    """Zero the components whose magnitude is below their deadband."""
    return tuple(0.0 if abs(v) < d else v for v, d in zip(motion, deadband, strict=True))


def is_zero(motion: Sequence[float]) -> bool:
    return all(v == 0.0 for v in motion)
