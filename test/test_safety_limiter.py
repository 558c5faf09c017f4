"""Ramp, clamp and deadband primitives, with properties over arbitrary values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.safety.limiter import apply_deadband, clamp_axes, clamp_norm, ramp, ramp_axis

speeds = st.floats(-3.0, 3.0, allow_nan=False)
rates = st.floats(0.05, 5.0)
dts = st.floats(0.0, 0.5)


def test_speeding_up_uses_accel_and_slowing_down_uses_decel():
    assert ramp_axis(0.0, 1.0, accel=1.0, decel=4.0, dt=0.1) == pytest.approx(0.1)
    assert ramp_axis(1.0, 0.0, accel=1.0, decel=4.0, dt=0.1) == pytest.approx(0.6)
    assert ramp_axis(-1.0, 0.0, accel=1.0, decel=4.0, dt=0.1) == pytest.approx(-0.6)
    assert ramp_axis(0.55, 0.5, accel=1.0, decel=4.0, dt=0.1) == 0.5


def test_sign_change_brakes_to_zero_then_accelerates_within_one_step():
    # 0.2 m/s at 4 m/s² decel reaches zero after 0.05 s; the other 0.05 s accelerate at 1 m/s².
    assert ramp_axis(0.2, -1.0, accel=1.0, decel=4.0, dt=0.1) == pytest.approx(-0.05)
    # Not enough time to reach zero: plain braking.
    assert ramp_axis(0.5, -1.0, accel=1.0, decel=4.0, dt=0.1) == pytest.approx(0.1)


def test_zero_dt_changes_nothing():
    assert ramp_axis(0.3, -1.0, 1.0, 1.0, 0.0) == 0.3


@settings(max_examples=300, deadline=None)
@given(speeds, speeds, rates, rates, dts)
def test_ramp_axis_moves_towards_target_within_physics(current, target, accel, decel, dt):
    result = ramp_axis(current, target, accel, decel, dt)
    assert min(current, target) - 1e-12 <= result <= max(current, target) + 1e-12
    # Never faster than the fastest rate, and braking never beats decel.
    assert abs(result - current) <= max(accel, decel) * dt + 1e-12
    if abs(result) < abs(current) and result * current >= 0:
        assert abs(current) - abs(result) <= decel * dt + 1e-12
    if result * current >= 0 and abs(result) > abs(current):
        assert abs(result) - abs(current) <= accel * dt + 1e-12
    if result * current < 0:  # crossed zero: braking time + acceleration time fit in dt
        assert abs(current) / decel + abs(result) / accel <= dt + 1e-9


@settings(max_examples=200, deadline=None)
@given(
    st.lists(speeds, min_size=3, max_size=3),
    st.lists(speeds, min_size=3, max_size=3),
    rates,
    rates,
    dts,
)
def test_direction_keeping_ramp_stays_on_the_segment(current, target, accel, decel, dt):
    """Accelerating axes share one fraction of the way (the segment); a braking axis may be
    closer to zero than that, at its own full decel (issue 9 item 2), never past its own reach."""
    result = ramp(current, target, (accel,) * 3, (decel,) * 3, dt, keep_direction=True)
    per_axis = ramp(current, target, (accel,) * 3, (decel,) * 3, dt, keep_direction=False)
    fractions = set()
    for r, c, t in zip(result, current, target, strict=True):
        braking = c * t < 0 or abs(t) < abs(c)
        if abs(t - c) > 1e-6 and not braking:
            fractions.add(round((r - c) / (t - c), 9))
        if braking:
            assert abs(r) <= max(abs(c), abs(t)) + 1e-12
    assert len(fractions) <= 1
    for r, p, c in zip(result, per_axis, current, strict=True):
        assert abs(r - c) <= abs(p - c) + 1e-12


def test_clamp_axes_clips_or_keeps_direction():
    low, high = (-0.5, 0.0, -1.0), (0.5, 0.0, 1.0)
    clipped, acted = clamp_axes((1.0, 0.2, 0.5), low, high, keep_direction=False)
    assert acted
    assert clipped == (0.5, 0.0, 0.5)
    scaled, acted = clamp_axes((1.0, 0.2, 0.5), low, high, keep_direction=True)
    assert acted
    # The unused vy axis is dropped before scaling; vx/wz keep their ratio.
    assert scaled == pytest.approx((0.5, 0.0, 0.25))
    unchanged, acted = clamp_axes((0.1, 0.0, -0.2), low, high, keep_direction=True)
    assert not acted
    assert unchanged == (0.1, 0.0, -0.2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=6, max_size=6), st.floats(0.01, 2.0))
def test_clamp_norm_never_exceeds_the_limit(values, limit):
    result, _ = clamp_norm(tuple(values), (0, 1, 2), limit)
    assert math.sqrt(sum(v * v for v in result[:3])) <= limit * (1 + 1e-12)
    assert result[3:] == tuple(values[3:])


def test_deadband_zeroes_only_small_components():
    assert apply_deadband((0.01, -0.2, 0.05), (0.05, 0.05, 0.05)) == (0.0, -0.2, 0.05)


def test_accel_window_caps_speeding_up_but_never_braking():
    assert ramp_axis(0.0, 1.0, 1.0, 4.0, dt=5.0, accel_window=0.04) == pytest.approx(0.04)
    assert ramp_axis(0.1, -1.0, 1.0, 4.0, dt=5.0, accel_window=0.04) == pytest.approx(-0.04)
    assert ramp_axis(1.0, 0.0, 1.0, 4.0, dt=5.0, accel_window=0.04) == 0.0
