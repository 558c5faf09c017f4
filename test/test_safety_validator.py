"""SafetyValidator examples: the known failure modes of smoothers and collision monitors."""

from __future__ import annotations

import itertools
import math

import pytest

from vla_ros.safety.config import SafetyConfig
from vla_ros.safety.invariants import TraceSample, check_trace
from vla_ros.safety.validator import SafetyState, SafetyValidator, status_report

PERIOD = 0.02
BOX = (0.3, 0.25, 0.3, -0.25, -0.3, -0.25, -0.3, 0.25)  # stop zone around a 0.4 x 0.3 robot


def mobile(**overrides):
    return SafetyValidator(SafetyConfig.for_mode("mobile3", **overrides))


def arm(**overrides):
    return SafetyValidator(SafetyConfig.for_mode("arm7", **overrides))


class Clock:
    """Drives a validator at a fixed period and records what it would publish."""

    def __init__(self, validator, t=100.0):
        self.v = validator
        self.t = t
        self.outputs = []
        self.samples = []

    def run(self, seconds, command=None, stamped=False, frame=None, period=PERIOD, feed=None):
        end = self.t + seconds
        while self.t < end - 1e-9:
            self.t += period
            if feed is not None:
                feed(self.t)
            if command is not None:
                stamp = self.t if stamped else None
                verdict = self.v.submit_command(command, stamp, frame, self.t)
                assert verdict.accepted, verdict
            out = self.v.step(self.t)
            self.outputs.append((self.t, out))
            self.samples.append(
                TraceSample(self.t, out.motion, self.v.estop_engaged, self.v.last_valid_time)
            )
        return self.outputs[-1][1]

    def violations(self):
        return check_trace(self.v.config, self.samples)


def test_ramps_down_after_silence_instead_of_jumping_and_keeps_publishing():
    clock = Clock(mobile())
    assert clock.run(1.0, command=(0.5, 0.0, 0.0)).motion == (0.5, 0.0, 0.0)
    silent_from = clock.t
    clock.run(1.5)
    after = [(t, out) for t, out in clock.outputs if t > silent_from]
    vx = [out.motion[0] for _, out in after]
    # Nothing changes until the timeout, then a decel-limited ramp (1.5 m/s² -> 0.03 per tick).
    timeout_index = next(i for i, (t, _) in enumerate(after) if t - silent_from > 0.5)
    assert all(v == 0.5 for v in vx[:timeout_index])
    ramp_part = vx[timeout_index:]
    assert ramp_part[0] == pytest.approx(0.47)
    assert 0.0 in ramp_part
    first_zero = ramp_part.index(0.0)
    assert first_zero == math.ceil(0.5 / 0.03) - 1
    assert all(a - b <= 0.03 + 1e-9 for a, b in itertools.pairwise(ramp_part))
    assert all(out.publish for _, out in after)
    assert after[-1][1].state is SafetyState.TIMEOUT
    assert clock.violations() == []


def test_zero_hold_then_silence_only_when_configured():
    clock = Clock(mobile(hold_zero_s=0.2))
    clock.run(0.5, command=(0.2, 0.0, 0.0))
    clock.run(2.0)
    published = [out.publish for _, out in clock.outputs]
    assert published[-1] is False
    last_motion = max(i for i, (_, out) in enumerate(clock.outputs) if out.motion != (0.0,) * 3)
    silent = published.index(False)
    # Zero is published for 0.2 s (10 ticks) after the output reached zero, never while moving.
    assert silent - last_motion - 1 == pytest.approx(11, abs=1)
    forever = Clock(mobile())
    forever.run(0.5, command=(0.2, 0.0, 0.0))
    forever.run(5.0)
    assert all(out.publish for _, out in forever.outputs)


def test_deadband_never_latches_at_zero():
    # accel·dt = 0.01 per tick is far below the 0.05 deadband: a smoother that feeds its
    # deadbanded output back as state would stay at zero forever.
    clock = Clock(mobile(deadband=(0.05, 0.05, 0.05), max_accel=(0.5, 0.5, 0.5)))
    out = clock.run(1.0, command=(0.3, 0.0, 0.0))
    vx = [o.motion[0] for _, o in clock.outputs]
    assert out.motion[0] == pytest.approx(0.3)
    assert vx[:5] == [0.0] * 5
    assert 0.05 <= vx[6] <= 0.06 + 1e-9
    assert clock.violations() == []
    # A command inside the deadband is zero and stays zero.
    tiny = Clock(mobile(deadband=(0.05, 0.05, 0.05)))
    assert tiny.run(0.5, command=(0.04, 0.0, 0.0)).motion == (0.0, 0.0, 0.0)


def test_zero_crossing_brakes_at_decel_then_speeds_up_at_accel():
    clock = Clock(mobile(max_accel=(1.0, 1.0, 1.0), max_decel=(4.0, 4.0, 4.0)))
    clock.run(1.0, command=(0.5, 0.0, 0.0))
    before = len(clock.outputs)
    clock.run(1.0, command=(-0.5, 0.0, 0.0))
    vx = [o.motion[0] for _, o in clock.outputs[before - 1 :]]
    steps = [b - a for a, b in itertools.pairwise(vx)]
    braking = [s for v, s in zip(vx, steps, strict=False) if v > 0.08 + 1e-9]
    assert all(s == pytest.approx(-0.08) for s in braking)  # decel 4 m/s² · 0.02 s
    crossing = next(i for i, v in enumerate(vx) if v < 0)
    # 0.1 -> brake 0.025 s to zero (more than one tick), so no crossing before vx hits 0.02
    # then: 0.02 needs 0.005 s of braking, the remaining 0.015 s accelerate at 1 m/s².
    assert vx[crossing - 1] == pytest.approx(0.02)
    assert vx[crossing] == pytest.approx(-0.015)
    negative = [s for v, s in zip(vx[crossing:], steps[crossing:], strict=False) if v > -0.5]
    assert all(s == pytest.approx(-0.02) for s in negative[:-1])  # accel 1 m/s² · 0.02 s
    assert vx[-1] == pytest.approx(-0.5)
    assert clock.violations() == []


def test_actual_dt_not_nominal_period():
    validator = mobile(max_accel=(1.0, 1.0, 1.0))
    validator.step(0.0)
    validator.submit_command((0.5, 0.0, 0.0), None, None, 0.0)
    assert validator.step(0.02).motion[0] == pytest.approx(0.02)
    # A late tick (0.04 s instead of 0.02 s) allows exactly accel·0.04, and a quick one less.
    assert validator.step(0.06).motion[0] == pytest.approx(0.06)
    assert validator.step(0.065).motion[0] == pytest.approx(0.065)
    # Braking always uses the whole late dt (here 0.3 s at 1.5 m/s² reaches zero).
    validator.reset(0.065)
    assert validator.step(0.365).motion[0] == 0.0


def test_unused_axes_are_forced_to_zero():
    validator = mobile(max_velocity=(0.5, 0.0, 1.0), min_velocity=(-0.5, 0.0, -1.0))
    clock = Clock(validator)
    # Twist layout: linear.z and angular.x/y do not exist for a mobile base; vy is disabled.
    out = clock.run(2.0, command=(0.3, 0.4, 5.0, 6.0, 7.0, -0.2))
    assert out.motion == pytest.approx((0.3, 0.0, -0.2))
    assert "unused_axes" in out.limits
    scaled = Clock(
        mobile(max_velocity=(0.5, 0.0, 1.0), min_velocity=(0.0, 0.0, -1.0), scale_velocities=True)
    )
    # Noise on a disabled axis or direction (vy, reverse) must not stop the whole vector when
    # scaling keeps direction.
    out = scaled.run(2.0, command=(0.3, 0.01, 0.2))
    assert out.motion == pytest.approx((0.3, 0.0, 0.2))
    out = scaled.run(2.0, command=(-0.01, 0.0, 0.4))
    assert out.motion == pytest.approx((0.0, 0.0, 0.4))


def test_velocity_limits_clip_or_keep_direction():
    clipped = Clock(mobile()).run(2.0, command=(1.0, 0.0, 0.5))
    assert clipped.motion == pytest.approx((0.5, 0.0, 0.5))
    assert clipped.state is SafetyState.LIMITED
    kept = Clock(mobile(scale_velocities=True)).run(3.0, command=(1.0, 0.0, 0.5))
    assert kept.motion == pytest.approx((0.5, 0.0, 0.25))
    normed = Clock(mobile(max_linear_speed=0.3)).run(2.0, command=(0.4, 0.4, 0.0))
    assert math.hypot(*normed.motion[:2]) == pytest.approx(0.3)


def test_future_stamp_cannot_extend_the_timeout():
    validator = mobile(future_tolerance=0.05)
    clock = Clock(validator)
    clock.run(0.5, command=(0.3, 0.0, 0.0))
    t = clock.t
    # Within tolerance: accepted, but counted from now, not from the stamp.
    assert validator.submit_command((0.3, 0.0, 0.0), t + 0.04, None, t).accepted
    assert validator.last_valid_time == t
    # Beyond tolerance: rejected and the watchdog is untouched.
    verdict = validator.submit_command((0.3, 0.0, 0.0), t + 30.0, None, t)
    assert not verdict.accepted
    assert verdict.code == "future_stamp"
    assert validator.last_valid_time == t
    assert validator.step(t + 0.5).state is SafetyState.RUNNING
    assert validator.step(t + 0.5 + PERIOD).state is SafetyState.TIMEOUT


NOW = 50.0


@pytest.mark.parametrize(
    ("stamp", "frame", "code"),
    [
        (0.0, "base_link", "zero_stamp"),
        (NOW - 10.0, "base_link", "stale_stamp"),
        (NOW + 1.0, "base_link", "future_stamp"),
        (math.nan, "base_link", "bad_stamp"),
        (NOW, "odom", "wrong_frame"),
        (NOW, "", "empty_frame"),
        (None, None, "empty_frame"),  # an arm command must say its frame
        (NOW - 0.1, "base_link", None),
        (None, "base_link", None),
    ],
)
def test_stamp_and_frame_checks(stamp, frame, code):
    validator = arm()
    verdict = validator.submit_command((0.1, 0, 0, 0, 0, 0), stamp, frame, NOW)
    assert verdict.accepted == (code is None)
    if code is not None:
        assert verdict.code == code
        assert validator.status().rejections[code] == 1
        assert validator.last_valid_time is None
    else:
        assert validator.last_valid_time == (stamp if stamp is not None else NOW)


def test_zero_stamp_accepted_when_configured_counts_from_receipt():
    validator = arm(accept_zero_stamp=True)
    assert validator.submit_command((0.1, 0, 0, 0, 0, 0), 0.0, "base_link", 7.0).accepted
    assert validator.last_valid_time == 7.0


def test_out_of_order_commands_are_rejected():
    validator = arm()
    assert validator.submit_command((0.1, 0, 0, 0, 0, 0), 9.9, "base_link", 10.0).accepted
    verdict = validator.submit_command((-0.1, 0, 0, 0, 0, 0), 9.8, "base_link", 10.0)
    assert verdict.code == "out_of_order"


@pytest.mark.parametrize(
    "bad",
    [
        (math.nan, 0.0, 0.0),
        (0.0, math.inf, 0.0),
        (0.0, 0.0, -math.inf),
        (1e6, 0.0, 0.0),
        (0.1, 0.0, 0.0, 0.0, math.nan, 0.0),
        (0.1, 0.2),
        (),
    ],
)
def test_continuous_bad_stream_is_rejected_counted_and_cannot_feed_the_watchdog(bad):
    validator = mobile(fault_max_rejections=0)  # the watchdog alone; the latch is tested below
    clock = Clock(validator)
    clock.run(0.5, command=(0.4, 0.0, 0.0))

    def flood(t):
        for _ in range(5):
            assert not validator.submit_command(bad, None, None, t).accepted

    clock.run(2.0, feed=flood)
    assert clock.outputs[-1][1].motion == (0.0, 0.0, 0.0)
    assert clock.outputs[-1][1].state is SafetyState.TIMEOUT
    status = validator.status()
    assert sum(status.rejections.values()) == 5 * 100
    assert status.last_rejection
    assert all(all(math.isfinite(v) for v in out.motion) for _, out in clock.outputs)
    assert clock.violations() == []
    latched = mobile()
    Clock(latched).run(0.5, command=(0.4, 0.0, 0.0))
    for _ in range(latched.config.fault_max_rejections + 1):
        latched.submit_command(bad, None, None, 200.0)
    out = latched.step(200.0)
    assert (out.state, out.reasons, out.motion) == (SafetyState.ESTOP, ("fault",), (0.0,) * 3)


def test_estop_latch_and_reset_protocol():
    validator = arm(gripper_on_estop="open")
    clock = Clock(validator)
    validator.submit_gripper(0.0, clock.t)
    clock.run(1.0, command=(0.2, 0, 0, 0, 0, 0), stamped=True, frame="base_link")
    assert clock.outputs[-1][1].gripper == 0.0
    validator.submit_estop(True)
    out = validator.step(clock.t + 0.001)
    assert out.motion == (0.0,) * 6  # immediately, not ramped
    assert out.state is SafetyState.ESTOP
    assert out.gripper == 1.0
    clock.t += 0.001
    validator.submit_estop(False)  # releasing the input alone does not release the latch
    assert not validator.submit_command(
        (0.2, 0, 0, 0, 0, 0), clock.t, "base_link", clock.t
    ).accepted
    assert validator.step(clock.t + 0.02).state is SafetyState.ESTOP
    validator.submit_estop(True)
    ok, reason = validator.reset(clock.t + 0.03)
    assert not ok
    assert "still true" in reason
    validator.submit_estop(False)
    ok, _ = validator.reset(clock.t + 0.04)
    assert ok
    clock.t += 0.04
    # The old command does not come back: a fresh one is needed, and it ramps from zero.
    out = clock.run(0.2)
    assert out.motion == (0.0,) * 6
    assert out.state is SafetyState.TIMEOUT
    out = clock.run(0.04, command=(0.2, 0, 0, 0, 0, 0), stamped=True, frame="base_link")
    assert 0 < out.motion[0] <= 0.5 * 0.04 + 1e-9
    validator.request_estop()  # the ~/estop service latches the same way
    assert validator.step(clock.t + 0.01).motion == (0.0,) * 6
    ok, _ = validator.reset(clock.t + 0.02)
    assert ok


def test_gripper_passes_only_while_motion_is_allowed():
    validator = arm()
    clock = Clock(validator)
    assert not validator.submit_gripper(math.nan, clock.t).accepted
    validator.submit_gripper(3.0, clock.t)
    assert clock.run(0.1).gripper is None  # no valid arm command yet: nothing passed
    out = clock.run(0.1, command=(0.0,) * 6, stamped=True, frame="base_link")
    assert out.gripper == 1.0  # clamped
    validator.submit_gripper(0.0, clock.t)
    validator.submit_estop(True)
    assert validator.step(clock.t + 0.01).gripper == 1.0  # default: hold the last value


def test_a_policy_gripper_target_dies_with_its_instruction_and_under_teleop():
    from vla_ros.safety.arbiter import InputSpec

    inputs = (InputSpec("vla", 10, gated=True), InputSpec("teleop", 100, timeout=0.5))
    validator = SafetyValidator(SafetyConfig.for_mode("arm7"), inputs=inputs)
    still = (0.0,) * 6
    t = 100.0
    validator.enable_source("vla", True)
    assert validator.submit_command(still, t, "base_link", t).accepted
    assert validator.submit_gripper(1.0, t).accepted
    assert validator.step(t).gripper == 1.0
    # Sent just before the instruction ends: dropped with it, not applied once teleop drives.
    assert validator.submit_gripper(0.0, t + 0.01).accepted
    validator.enable_source("vla", False)
    assert validator.submit_command(still, t + 0.02, "base_link", t + 0.02, "teleop").accepted
    assert validator.step(t + 0.02).gripper == 1.0
    # While teleop drives (even zeros) the policy's gripper is refused, not kept for later.
    validator.enable_source("vla", True)
    assert validator.submit_command(still, t + 0.04, "base_link", t + 0.04).accepted
    verdict = validator.submit_gripper(0.0, t + 0.04)
    assert verdict.code == "source_overridden"
    assert validator.step(t + 0.04).gripper == 1.0
    assert validator.submit_gripper(0.4, t + 0.05, source="teleop").accepted
    assert validator.step(t + 0.05).gripper == 0.4
    # Teleop goes quiet: the policy drives again and only its new targets act.
    for k in range(40):
        now = t + 0.06 + 0.02 * k
        validator.submit_command(still, now, "base_link", now)
        assert validator.step(now).gripper == 0.4
    assert validator.status().active_source == "vla"
    assert validator.submit_gripper(0.0, now).accepted
    assert validator.step(now).gripper == 0.0


def test_low_confidence_replaces_the_command_by_zero():
    validator = mobile(min_confidence=0.5)
    clock = Clock(validator)
    clock.run(1.0, command=(0.3, 0.0, 0.0))

    def unsure(t):
        validator.submit_command((0.3, 0.0, 0.0), None, None, t)
        validator.update_confidence(0.2, t)

    out = clock.run(1.0, feed=unsure)
    assert out.motion == (0.0, 0.0, 0.0)
    assert out.reasons == ("low_confidence",)
    assert clock.violations() == []  # decelerated, not jumped
    validator.submit_command((0.3, 0.0, 0.0), None, None, clock.t)
    assert not validator.update_confidence(math.nan, clock.t).accepted
    assert validator.step(clock.t + PERIOD).state is SafetyState.STOPPED
    validator.submit_command((0.3, 0.0, 0.0), None, None, clock.t + PERIOD)
    validator.update_confidence(0.9, clock.t + PERIOD)
    assert validator.step(clock.t + 2 * PERIOD).state is SafetyState.RUNNING


def _scan(validator, t, ranges, angle_min=-math.pi, increment=None):
    increment = increment if increment is not None else 2 * math.pi / len(ranges)
    return validator.update_scan(ranges, angle_min, increment, 0.05, 10.0, t, t)


def test_missing_or_stale_scan_stops_with_a_reason():
    validator = mobile(stop_zone=BOX, scan_timeout=0.3)
    clock = Clock(validator)
    out = clock.run(0.5, command=(0.3, 0.0, 0.0))
    assert out.motion == (0.0, 0.0, 0.0)
    assert out.reasons == ("scan_missing",)
    assert out.state is SafetyState.STOPPED
    free = [5.0] * 360
    out = clock.run(0.5, command=(0.3, 0.0, 0.0), feed=lambda t: _scan(validator, t, free))
    assert out.motion[0] == pytest.approx(0.3)
    out = clock.run(1.0, command=(0.3, 0.0, 0.0))
    assert out.reasons == ("scan_stale",)
    assert out.motion == (0.0, 0.0, 0.0)
    assert clock.violations() == []
    assert not validator.update_scan(free, 0.0, 0.01, 0.05, 10.0, clock.t + 5.0, clock.t).accepted


def _wall_ahead(distance):
    """Ranges of a 360° scan (1° steps from -180°) with a wall `distance` m ahead (x)."""
    ranges = []
    for k in range(360):
        angle = -math.pi + k * math.pi / 180
        c = math.cos(angle)
        ranges.append(distance / c if c > 0.2 else math.inf)
    return ranges


def test_stop_zone_allows_escape_but_not_deeper():
    validator = mobile(stop_zone=BOX)
    clock = Clock(validator)
    wall = _wall_ahead(0.25)  # inside the zone's front edge (0.3 m)
    feed = lambda t: _scan(validator, t, wall)  # noqa: E731
    out = clock.run(0.5, command=(0.2, 0.0, 0.0), feed=feed)
    assert out.motion == (0.0, 0.0, 0.0)
    assert out.reasons == ("stop_zone",)
    out = clock.run(1.0, command=(-0.2, 0.0, 0.0), feed=feed)
    assert out.motion[0] == pytest.approx(-0.2)  # backing away from the wall is allowed
    out = clock.run(1.0, command=(0.0, 0.2, 0.0), feed=feed)
    assert out.motion[1] == pytest.approx(0.2)  # sliding along it does not go deeper either
    assert clock.violations() == []


def test_slowdown_zone_and_time_to_collision_scale_the_command():
    validator = mobile(
        slowdown_zone=(1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 1.0),
        slowdown_ratio=0.4,
        footprint=(0.2, 0.15, 0.2, -0.15, -0.2, -0.15, -0.2, 0.15),
        time_to_collision_s=4.0,
    )
    clock = Clock(validator)
    far = _wall_ahead(0.9)
    out = clock.run(2.0, command=(0.5, 0.0, 0.0), feed=lambda t: _scan(validator, t, far))
    # Wall at 0.9 m, footprint front at 0.2 m: contact after 1.4 s at 0.5 m/s, so the speed is
    # scaled by ~1.4 / 4; the slowdown zone (0.4) is less restrictive and the strictest wins.
    assert out.state is SafetyState.LIMITED
    assert out.limits[:2] == ("slowdown_zone", "time_to_collision")
    assert 0.5 * 1.4 / 4 - 1e-9 <= out.motion[0] <= 0.5 * 1.5 / 4 + 1e-9
    nothing = Clock(mobile(slowdown_zone=(1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 1.0)))
    wide = _wall_ahead(3.0)
    out = nothing.run(2.0, command=(0.5, 0.0, 0.0), feed=lambda t: _scan(nothing.v, t, wide))
    assert out.motion[0] == pytest.approx(0.5)
    assert clock.violations() == []


def test_geofence_return_only():
    fence = (0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0)
    validator = mobile(geofence=fence, geofence_margin=0.5)
    clock = Clock(validator)
    missing = clock.run(0.2, command=(0.3, 0.0, 0.0))
    assert missing.reasons == ("odom_missing",)

    def at(x, y, yaw):
        return lambda t: validator.update_odom(x, y, yaw, t, t)

    out = clock.run(1.0, command=(0.3, 0.0, 0.0), feed=at(2.0, 2.0, 0.0))
    assert out.motion[0] == pytest.approx(0.3)
    out = clock.run(1.0, command=(0.3, 0.0, 0.0), feed=at(3.9, 2.0, 0.0))
    assert 0.0 < out.motion[0] < 0.3  # 0.1 m left: slowed down
    out = clock.run(2.0, command=(0.3, 0.0, 0.5), feed=at(4.2, 2.0, 0.0))
    assert out.motion[0] == 0.0  # outside: no further out, rotation is still fine
    assert out.motion[2] == pytest.approx(0.5)
    out = clock.run(2.0, command=(0.3, 0.0, 0.0), feed=at(4.2, 2.0, math.pi))
    assert out.motion[0] == pytest.approx(0.3)  # facing back inside: return allowed
    assert clock.violations() == []


def test_workspace_box_return_only_and_stale_pose():
    validator = arm(
        workspace_min=(-0.5, -0.5, 0.0), workspace_max=(0.5, 0.5, 1.0), pose_timeout=0.2
    )
    clock = Clock(validator)
    cmd = dict(stamped=True, frame="base_link")
    out = clock.run(0.2, command=(0.2, 0, 0, 0, 0, 0.3), **cmd)
    assert out.reasons == ("pose_missing",)
    assert out.motion == (0.0,) * 6

    def at(*p):
        return lambda t: validator.update_pose(p, t, "base_link", t)

    out = clock.run(1.0, command=(0.2, 0, 0, 0, 0, 0.3), feed=at(0.0, 0.0, 0.5), **cmd)
    assert out.motion[0] == pytest.approx(0.2)
    out = clock.run(1.0, command=(0.2, -0.1, 0, 0, 0, 0.3), feed=at(0.6, 0.0, 0.5), **cmd)
    assert out.motion[0] == 0.0  # outside on +x: no more +x
    assert out.motion[1] == pytest.approx(-0.1)  # other axes unaffected
    assert out.motion[5] == pytest.approx(0.3)
    out = clock.run(1.0, command=(-0.2, 0, 0, 0, 0, 0), feed=at(0.6, 0.0, 0.5), **cmd)
    assert out.motion[0] == pytest.approx(-0.2)  # moving back inside is allowed
    out = clock.run(1.0, command=(-0.2, 0, 0, 0, 0, 0), **cmd)
    assert out.reasons == ("pose_stale",)
    assert not validator.update_pose((0, 0, 0), clock.t, "tool0", clock.t).accepted
    assert clock.violations() == []


def test_workspace_sphere_return_only():
    validator = arm(workspace_sphere_center=(0.0, 0.0, 0.0), workspace_sphere_radius=0.8)
    clock = Clock(validator)
    cmd = dict(stamped=True, frame="base_link")

    def at(*p):
        return lambda t: validator.update_pose(p, t, "base_link", t)

    out = clock.run(1.0, command=(0.2, 0.1, 0, 0, 0, 0), feed=at(0.9, 0.0, 0.0), **cmd)
    assert out.motion[0] == 0.0  # radially outward removed
    assert abs(out.motion[1]) < 0.1  # tangential motion limited so the distance cannot grow
    predicted = math.dist((0.9 + out.motion[0] * 0.1, out.motion[1] * 0.1, 0.0), (0, 0, 0))
    assert predicted <= 0.9 + 1e-9
    out = clock.run(1.0, command=(-0.2, 0.0, 0, 0, 0, 0), feed=at(0.9, 0.0, 0.0), **cmd)
    assert out.motion[0] == pytest.approx(-0.2)


def test_clock_jumping_back_forgets_the_command():
    validator = mobile()
    clock = Clock(validator)
    clock.run(0.5, command=(0.3, 0.0, 0.0))
    out = validator.step(1.0)  # sim time restarted: the old command must not live on
    assert out.state is SafetyState.TIMEOUT
    assert validator.last_valid_time is None


def test_status_report_names_state_limits_and_rejections():
    validator = mobile()
    validator.submit_command((math.nan, 0.0, 0.0), None, None, 1.0)
    validator.step(1.0)
    level, message, values = status_report(validator.status(), validator.config)
    assert level == 1
    assert message == "timeout: no_command"
    assert values["state"] == "timeout"
    assert values["last_rejection"].startswith("non_finite")
    assert values["rejected.non_finite"] == "1"
    assert values["max_velocity"] == "[0.5, 0.5, 1]"
    validator.request_estop()
    validator.step(1.1)
    assert status_report(validator.status(), validator.config)[0] == 2


def test_runtime_reconfigure_keeps_state_and_refuses_bad_limits():
    validator = mobile()
    Clock(validator).run(1.0, command=(0.5, 0.0, 0.0))
    with pytest.raises(ValueError, match="max_decel"):
        validator.configure(SafetyConfig.for_mode("mobile3", max_decel=(0.0, 1.0, 1.0)))
    with pytest.raises(ValueError, match="mode"):
        validator.configure(SafetyConfig.for_mode("arm7"))
    validator.configure(SafetyConfig.for_mode("mobile3", max_velocity=(0.2, 0.5, 1.0)))
    assert validator.config.max_velocity[0] == 0.2


def test_low_confidence_holds_for_every_command_of_its_chunk():
    """The inference node publishes one confidence per chunk but a command every control tick."""
    validator = mobile(min_confidence=0.5)
    clock = Clock(validator)
    clock.run(0.5, command=(0.3, 0.0, 0.0))
    validator.update_confidence(0.2, clock.t)
    out = clock.run(1.0, command=(0.3, 0.0, 0.0))
    assert out.motion == (0.0, 0.0, 0.0)
    assert out.reasons == ("low_confidence",)
    validator.update_confidence(0.9, clock.t)
    assert clock.run(0.1, command=(0.3, 0.0, 0.0)).state is SafetyState.RUNNING
    assert clock.violations() == []


@pytest.mark.parametrize("gap", [0.5, 5.0, 3600.0])
def test_a_stalled_tick_or_clock_jump_does_not_let_the_output_jump_up(gap):
    validator = mobile()
    clock = Clock(validator)
    clock.run(0.2)
    late = clock.t + gap
    assert validator.submit_command((0.5, 0.0, 0.0), None, None, late).accepted
    out = validator.step(late)
    assert 0.0 < out.motion[0] <= 2 * PERIOD * validator.config.max_accel[0] + 1e-12
