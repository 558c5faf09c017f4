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
    brake_dt: float | None = None,
) -> float:
    """Furthest value towards `target` reachable in `dt` seconds.

    Speeding up (away from zero) is limited by `accel`, slowing down by `decel`. Through a sign
    change the axis first brakes to zero at `decel`, then speeds up for the rest of `dt` at `accel`.
    Speeding up counts at most `accel_window` seconds, so a long gap between steps (a stalled
    timer, a clock jump) cannot turn into a step up; braking always gets the whole `dt`.
    `brake_dt` (default `dt`) is the time braking may use: the validator passes the longer of
    ROS and steady time, so a frozen /clock cannot freeze a stop.
    """
    brake = dt if brake_dt is None else max(dt, brake_dt)
    if current == target or (dt <= 0.0 and brake <= 0.0):
        return current
    if current * target >= 0.0 and abs(target) >= abs(current):
        if dt <= 0.0:
            return current
        step = accel * min(dt, accel_window)
    elif current * target >= 0.0:
        step = decel * brake
    else:
        time_to_zero = abs(current) / decel
        if time_to_zero >= brake:
            return current - math.copysign(decel * brake, current)
        if dt - time_to_zero <= 0.0:
            return 0.0
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
    brake_dt: float | None = None,
) -> Vector:
    """Move every axis towards the target within its accel/decel budget.

    With `keep_direction` all axes advance by the same fraction of their remaining change (the
    slowest axis sets the pace), so the output moves along the straight segment from `current` to
    `target`; that segment never leaves a convex set holding both ends. Braking is the exception:
    an axis slowing down still slows at its own full `decel` (its per-axis value, where smaller),
    because workspace and geofence caps assume every axis brakes that hard; a slow axis turning
    round must not stretch another axis's stop. Shrinking components towards zero keeps the
    result inside every norm ball and per-axis box that contains zero.
    """
    per_axis = tuple(
        ramp_axis(c, t, a, d, dt, accel_window, brake_dt)
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
    out = []
    for c, t, own in zip(current, target, per_axis, strict=True):
        shared = c + fraction * (t - c)
        braking = c * t < 0.0 or abs(t) < abs(c)
        if braking:
            own = 0.0 if own * shared < 0.0 else own
            if abs(own) < abs(shared):
                shared = own
        out.append(shared)
    return tuple(out)


def clamp_axes(
    motion: Sequence[float], low: Sequence[float], high: Sequence[float], keep_direction: bool
) -> tuple[Vector, bool]:
    """Per-axis [low, high] limits; with `keep_direction` the vector is scaled instead of clipped.

    Returns the limited vector and whether any limit acted. Requires low <= 0 <= high. Before
    scaling, components pointing where their limit is 0 (vy on a differential drive, reverse on a
    robot that cannot back up) are zeroed, so noise on them cannot stop the whole vector.
    """
    if keep_direction:
        kept = zero_blocked(motion, low, high)
        scale = axes_scale(kept, low, high)
        if scale >= 1.0:
            return kept, kept != tuple(motion)
        return tuple(value * scale for value in kept), True
    clipped = tuple(min(max(v, lo), hi) for v, lo, hi in zip(motion, low, high, strict=True))
    return clipped, clipped != tuple(motion)


def zero_blocked(motion: Sequence[float], low: Sequence[float], high: Sequence[float]) -> Vector:
    """Components pointing where their limit is 0 set to 0 (they could never move)."""
    return tuple(
        0.0 if (v > 0.0 and hi == 0.0) or (v < 0.0 and lo == 0.0) else v
        for v, lo, hi in zip(motion, low, high, strict=True)
    )


def axes_scale(motion: Sequence[float], low: Sequence[float], high: Sequence[float]) -> float:
    """Largest factor <= 1 that brings every component inside its [low, high]."""
    scale = 1.0
    for value, lo, hi in zip(motion, low, high, strict=True):
        if value > hi:
            scale = min(scale, hi / value)
        elif value < lo:
            scale = min(scale, lo / value)
    return scale


def norm_scale(motion: Sequence[float], axes: Sequence[int], limit: float) -> float:
    """Largest factor <= 1 that brings the norm of the components in `axes` to `limit`."""
    norm = norm_of(motion, axes)
    return 1.0 if norm <= limit else limit / norm


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
