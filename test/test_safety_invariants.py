"""check_trace: accepts what the validator produces and catches each kind of unsafe trace."""

from __future__ import annotations

import math
import re
from pathlib import Path

from vla_ros.safety import invariants
from vla_ros.safety.config import SafetyConfig
from vla_ros.safety.invariants import KINDS, TraceSample, check_trace

CONFIG = SafetyConfig.for_mode(
    "mobile3", max_accel=(1.0, 1.0, 1.0), max_decel=(2.0, 2.0, 2.0), command_timeout=0.5
)
P = 0.02


def ramp_trace(n=60, valid_until=None):
    """vx accelerating at exactly 1 m/s² to 0.5, commands valid every tick (or until a time)."""
    samples = []
    for k in range(n):
        t = k * P
        valid = t if valid_until is None else min(t, valid_until)
        samples.append(TraceSample(t, (min(0.5, k * P * 1.0), 0.0, 0.0), False, valid))
    return samples


def kinds(violations):
    return {v.kind for v in violations}


def test_a_clean_ramp_passes():
    assert check_trace(CONFIG, ramp_trace()) == []


def test_jump_is_an_accel_violation():
    samples = ramp_trace(10)
    samples.append(TraceSample(10 * P, (0.5, 0.0, 0.0), False, 10 * P))
    found = check_trace(CONFIG, samples)
    assert kinds(found) == {"accel"}
    assert found[0].index == 10
    assert "vx" in found[0].message


def test_actual_dt_matters():
    # +0.04 m/s needs 0.04 s at 1 m/s²: fine after a 0.04 s gap, too fast after 0.02 s.
    ok = [TraceSample(0.0, (0.1, 0, 0), False, 0.0), TraceSample(0.04, (0.14, 0, 0), False, 0.04)]
    bad = [TraceSample(0.0, (0.1, 0, 0), False, 0.0), TraceSample(0.02, (0.14, 0, 0), False, 0.02)]
    assert check_trace(CONFIG, ok) == []
    assert kinds(check_trace(CONFIG, bad)) == {"accel"}
    assert check_trace(CONFIG, bad, time_tolerance_s=0.02) == []


def test_zero_crossing_budget():
    # 0.02 -> brake 0.01 s at 2 m/s², then 0.01 s at 1 m/s²: -0.01 reachable, -0.03 not.
    start = TraceSample(0.0, (0.02, 0, 0), False, 0.0)
    assert check_trace(CONFIG, [start, TraceSample(P, (-0.01, 0, 0), False, P)]) == []
    found = check_trace(CONFIG, [start, TraceSample(P, (-0.03, 0, 0), False, P)])
    assert kinds(found) == {"accel"}


def test_deadband_snap_is_allowed_but_not_more():
    config = SafetyConfig.for_mode("mobile3", deadband=(0.05, 0.0, 0.0), max_accel=(1.0, 1, 1))
    snap_up = [TraceSample(0.0, (0.0, 0, 0), False, 0.0), TraceSample(P, (0.06, 0, 0), False, P)]
    too_far = [TraceSample(0.0, (0.0, 0, 0), False, 0.0), TraceSample(P, (0.08, 0, 0), False, P)]
    assert check_trace(config, snap_up) == []
    assert kinds(check_trace(config, too_far)) == {"accel"}


def test_limits_norms_non_finite_and_unused_axes():
    samples = [
        TraceSample(0.0, (0.6, 0.0, 0.0), False, 0.0),
        TraceSample(0.0, (0.45, 0.45, 0.0), False, 0.0),
        TraceSample(0.0, (math.nan, 0.0, 0.0), False, 0.0),
        TraceSample(0.0, (0.0, 0.0, 0.3, 0.0, 0.0, 0.0), False, 0.0),
        TraceSample(0.0, (0.0, 0.0), False, 0.0),
    ]
    found = [check_trace(CONFIG, [s]) for s in samples]
    assert [kinds(f) for f in found] == [
        {"velocity_limit", "speed_norm"},
        {"speed_norm"},
        {"non_finite"},
        {"unused_axis"},
        {"shape"},
    ]


def test_estop_output_must_be_zero_immediately():
    samples = ramp_trace(30)
    samples.append(TraceSample(30 * P, (0.0, 0.0, 0.0), True, None))
    assert check_trace(CONFIG, samples) == []
    samples.append(TraceSample(31 * P, (0.01, 0.0, 0.0), True, None))
    assert kinds(check_trace(CONFIG, samples)) == {"estop"}


def test_watchdog_requires_braking_to_zero_in_time():
    held = ramp_trace(100, valid_until=0.61)  # never brakes after the timeout at 1.11 s
    found = check_trace(CONFIG, held)
    assert kinds(found) == {"watchdog"}
    # Timeout at 1.11 s, then 0.5 m/s at 2 m/s² needs 0.25 s: the first late sample is ~1.36 s.
    assert 1.11 + 0.25 - 2 * P <= min(v.t for v in found) <= 1.11 + 0.25 + 2 * P
    braked = ramp_trace(56, valid_until=0.61)
    v = braked[-1].motion[0]
    t = braked[-1].t
    while v > 0:
        t += P
        v = max(0.0, v - 2.0 * P)
        braked.append(TraceSample(t, (v, 0.0, 0.0), False, 0.61))
    assert check_trace(CONFIG, braked) == []
    regrow = [*braked, TraceSample(t + P, (0.02, 0.0, 0.0), False, 0.61)]
    assert kinds(check_trace(CONFIG, regrow)) == {"watchdog"}


def test_silence_while_moving():
    samples = ramp_trace(30)
    samples.append(TraceSample(30 * P + 1.0, (0.5, 0.0, 0.0), False, 30 * P + 1.0))
    assert "silent" in kinds(check_trace(CONFIG, samples))
    assert "silent" not in kinds(check_trace(CONFIG, samples, max_gap_s=2.0))


def test_time_going_backwards_is_reported():
    samples = [TraceSample(1.0, (0.0, 0, 0), False, 1.0), TraceSample(0.5, (0.0, 0, 0), False, 1)]
    assert kinds(check_trace(CONFIG, samples)) == {"shape"}


def test_kinds_list_exactly_what_check_trace_reports():
    """KINDS is the public vocabulary of `bag check`: it must match the kinds the code reports."""
    source = Path(invariants.__file__).read_text(encoding="utf-8")
    reported = set(re.findall(r'report\(\s*"(\w+)"', source))
    assert reported == set(KINDS)
