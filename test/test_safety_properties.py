"""Property-based fuzzing of the validator: whatever the inputs, stamps and timing, the output obeys
the limits, the actual-dt acceleration bounds, the watchdog and the e-stop."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_ros.safety.config import LINEAR_AXES, SafetyConfig
from vla_ros.safety.invariants import TraceSample, check_trace
from vla_ros.safety.validator import SafetyState, SafetyValidator
from vla_ros.safety.zones import ObstacleZones, boundary_distance, depth, inside, project

EXAMPLES = int(os.environ.get("VLA_SAFETY_FUZZ_EXAMPLES", "120"))
"""Raise for a long fuzzing session; the default keeps the whole file at a few seconds."""

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

weird = st.sampled_from([math.nan, math.inf, -math.inf, 1e9, -1e9, 1e-300, 0.0])
component = st.one_of(st.floats(-3.0, 3.0), st.floats(-3.0, 3.0), st.floats(-3.0, 3.0), weird)


@st.composite
def configs(draw, mode):
    dof = 3 if mode == "mobile3" else 6
    pos = st.floats(0.05, 4.0)
    high = tuple(draw(st.floats(0.0, 2.0)) for _ in range(dof))
    low = tuple(-draw(st.floats(0.0, 2.0)) for _ in range(dof))
    config = SafetyConfig.for_mode(
        mode,
        max_velocity=high,
        min_velocity=low,
        max_linear_speed=draw(pos),
        max_angular_speed=draw(pos),
        max_accel=tuple(draw(pos) for _ in range(dof)),
        max_decel=tuple(draw(pos) for _ in range(dof)),
        deadband=tuple(draw(st.sampled_from([0.0, 0.0, 0.01, 0.1])) for _ in range(dof)),
        scale_velocities=draw(st.booleans()),
        command_timeout=draw(st.floats(0.02, 1.0)),
        max_command_age=draw(st.floats(0.02, 1.0)),
        future_tolerance=draw(st.floats(0.0, 0.2)),
        accept_zero_stamp=draw(st.booleans()),
        hold_zero_s=draw(st.sampled_from([-1.0, 0.0, 0.3])),
        fault_max_rejections=draw(st.sampled_from([0, 0, 3, 10])),
    )
    config.validate()
    return config


@st.composite
def events(draw, dof):
    kind = draw(
        st.sampled_from(["cmd"] * 36 + ["estop", "estop_srv", "reset", "reset", "conf", "none"])
    )
    dt = draw(st.one_of(st.just(0.02), st.floats(0.0, 0.3)))
    if kind == "cmd":
        size = draw(st.sampled_from([dof, dof, dof, 6, 2]))
        values = tuple(draw(component) for _ in range(size))
        if draw(st.booleans()):  # hold a command for a while, as a policy would
            return dt, "hold", (values, draw(st.integers(1, 40)))
        stamp = draw(  # offset from now: fresh (mostly), old, future, or zero / missing
            st.one_of(st.floats(-0.05, 0.0), st.floats(-1.5, 1.5), st.just(0.0), st.none())
        )
        frame = draw(st.sampled_from(["base_link"] * 8 + ["", "tool0", None]))
        return dt, kind, (values, stamp, frame)
    if kind == "estop":
        return dt, kind, draw(st.booleans())
    if kind == "conf":
        return dt, kind, draw(st.one_of(st.floats(-0.5, 1.5), weird))
    return dt, kind, None


def simulate(config, script, stamped):
    validator = SafetyValidator(config)
    t = 1000.0
    samples, records = [], []
    accepted_times = []
    for dt, kind, payload in script:
        t += dt
        if kind == "cmd":
            values, offset, frame = payload
            stamp = (
                None if offset is None or not stamped else (0.0 if offset == 0.0 else t + offset)
            )
            frame = frame if stamped else None
            verdict = validator.submit_command(values, stamp, frame, t)
            if verdict.accepted:
                accepted_times.append(t)
                if stamp not in (None, 0.0):
                    assert validator.last_valid_time <= stamp
            # The watchdog can only ever be fed by an accepted command, and never into the future.
            last = validator.last_valid_time
            assert last is None or (accepted_times and last <= accepted_times[-1])
        elif kind == "hold":
            values, ticks = payload
            for _ in range(ticks):
                frame = "base_link" if stamped else None
                if validator.submit_command(values, t if stamped else None, frame, t).accepted:
                    accepted_times.append(t)
                out = validator.step(t)
                samples.append(
                    TraceSample(t, out.motion, validator.estop_engaged, validator.last_valid_time)
                )
                records.append((t, out, validator.estop_engaged))
                t += dt
        elif kind == "estop":
            validator.submit_estop(payload)
        elif kind == "estop_srv":
            validator.request_estop()
        elif kind == "reset":
            validator.reset(t)
        elif kind == "conf":
            validator.update_confidence(payload, t)
        out = validator.step(t)
        samples.append(
            TraceSample(t, out.motion, validator.estop_engaged, validator.last_valid_time)
        )
        records.append((t, out, validator.estop_engaged))
    return samples, records


def check(config, samples, records):
    assert check_trace(config, samples, max_gap_s=math.inf) == []
    for _, out, estop in records:
        assert all(math.isfinite(v) for v in out.motion)
        for v, lo, hi in zip(out.motion, config.min_velocity, config.max_velocity, strict=True):
            assert lo - 1e-9 <= v <= hi + 1e-9
        linear = math.sqrt(sum(out.motion[i] ** 2 for i in LINEAR_AXES[config.mode]))
        assert linear <= config.max_linear_speed + 1e-9
        if estop:
            assert out.motion == (0.0,) * config.dof
            assert out.state is SafetyState.ESTOP
        if any(out.motion):
            assert out.publish  # never silent while commanding motion


@FUZZ
@given(st.data())
def test_mobile_outputs_obey_every_limit_for_any_input(data):
    config = data.draw(configs("mobile3"))
    script = data.draw(st.lists(events(3), min_size=1, max_size=60))
    stamped = data.draw(st.booleans())
    check(config, *simulate(config, script, stamped))


@FUZZ
@given(st.data())
def test_arm_outputs_obey_every_limit_for_any_input(data):
    config = data.draw(configs("arm7"))
    script = data.draw(st.lists(events(6), min_size=1, max_size=60))
    check(config, *simulate(config, script, stamped=True))


@FUZZ
@given(st.data())
def test_timeout_brakes_to_zero_within_the_decel_time_and_nothing_postpones_it(data):
    config = data.draw(configs("mobile3"))
    start = data.draw(st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3))
    validator = SafetyValidator(config)
    t = 50.0
    validator.step(t)
    for _ in range(200):  # settle on the (limited) command
        t += 0.02
        validator.submit_command(start, None, None, t)
        out = validator.step(t)
    last_valid = t
    moving = out.motion
    # From now on: only garbage, at arbitrary times; none of it may feed the watchdog.
    junk = data.draw(
        st.lists(
            st.tuples(
                st.floats(0.001, 0.1),
                st.tuples(component, component, component),
                st.sampled_from([t + 100.0, 1.0, 0.0, math.nan]),
            ),
            min_size=1,
            max_size=80,
        )
    )
    braking = max(abs(v) / d for v, d in zip(moving, config.max_decel, strict=True))
    for dt, values, stamp in junk:
        t += dt
        verdict = validator.submit_command(values, stamp, None, t)
        if verdict.accepted:
            return  # a genuinely valid command (finite, sane stamp) may of course feed it
        out = validator.step(t)
        if validator.fault:  # garbage latched the fault: a stop at once is stricter still
            assert out.motion == (0.0, 0.0, 0.0)
            assert out.state is SafetyState.ESTOP
            return
        assert validator.last_valid_time == last_valid
        if t - last_valid > config.command_timeout:
            assert out.state is SafetyState.TIMEOUT
        if t > last_valid + config.command_timeout + 0.1 + braking + 1e-9:
            assert out.motion == (0.0, 0.0, 0.0)
            assert out.publish or config.hold_zero_s >= 0


@FUZZ
@given(
    st.lists(st.floats(-0.45, 0.45), min_size=3, max_size=3),
    st.lists(
        st.tuples(st.floats(-0.3, 0.3), st.floats(-0.3, 0.3), st.floats(-0.3, 0.3)),
        min_size=1,
        max_size=8,
    ),
)
def test_workspace_box_is_never_left_in_closed_loop(start, commands):
    """Integrate the arm's position from the outputs: it stays inside the box (to within one
    tick of braking) and a start outside can only come back."""
    config = SafetyConfig.for_mode(
        "arm7", workspace_min=(-0.5, -0.5, 0.0), workspace_max=(0.5, 0.5, 1.0)
    )
    validator = SafetyValidator(config)
    position = np.array([start[0], start[1], start[2] + 0.5])
    t, period = 10.0, 0.02
    for command in commands:
        for _ in range(40):
            t += period
            validator.update_pose(tuple(position), t, "base_link", t)
            validator.submit_command((*command, 0.0, 0.0, 0.0), t, "base_link", t)
            out = validator.step(t)
            position = position + period * np.array(out.motion[:3])
            slack = 0.5 * max(config.max_accel) * period * period + 1e-9
            assert np.all(position >= np.array(config.workspace_min) - slack)
            assert np.all(position <= np.array(config.workspace_max) + slack)


square = (0.3, 0.25, 0.3, -0.25, -0.3, -0.25, -0.3, 0.25)


@FUZZ
@given(
    st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=1, max_size=30),
    st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5), st.floats(-1.0, 1.0)),
)
def test_stop_zone_never_lets_an_obstacle_get_deeper(points, motion):
    """Per point (issue 9 item 5): an allowed motion takes no point deeper than an obstacle
    already was within the distance the motion moves points, at any instant of the lookahead
    (to within half a 5 cm check step), so the deepest intrusion cannot grow either. A refused
    motion does take some point deeper than it was at some instant."""
    zones = ObstacleZones(square, (), 1.0, (), 0.0, lookahead_s=0.1)
    cloud = np.array(points, dtype=float)
    result = zones.evaluate(cloud, motion)
    zone = np.array(square).reshape(-1, 2)
    before = depth(zone, cloud)
    # Every k/n of the horizon for n <= 8 (the check here takes at most 3 steps) and finer.
    fractions = sorted(
        {k / n for n in range(1, 9) for k in range(1, n + 1)} | {i / 64 for i in range(1, 65)}
    )
    instants = [(f, project(cloud, *motion, 0.1 * f)) for f in fractions]
    if result.blocked:
        assert any(np.any(depth(zone, moved) > before + 1e-6) for _, moved in instants)
    reach = 0.4 + math.hypot(motion[0], motion[1]) * 0.1
    sweep = math.hypot(motion[0], motion[1]) * 0.1 + abs(motion[2]) * 0.1 * reach
    for fraction, moved_cloud in [] if result.blocked else instants:
        after = depth(zone, moved_cloud)
        slack = 0.0 if fraction == 1.0 else 0.025
        assert after.max() <= before.max() + slack + 1e-6
        for point, deep in zip(moved_cloud, after, strict=True):
            gaps = np.sqrt(((cloud - point) ** 2).sum(axis=1))
            known = max(before[gaps <= sweep * fraction + slack + 1e-6], default=0.0)
            assert deep <= known + slack + 1e-6
    # Backing straight away from an obstacle the robot touches is never refused (no wedging).
    x, y = points[0]
    distance = math.hypot(x, y)
    if distance > 1e-3:
        away = (-0.2 * x / distance, -0.2 * y / distance, 0.0)
        assert not zones.evaluate(cloud[:1], away).blocked


@FUZZ
@given(
    st.lists(st.tuples(st.floats(-2, 2), st.floats(-1, 1)), min_size=1, max_size=20),
    st.tuples(st.floats(-1.0, 1.0), st.floats(-0.5, 0.5), st.floats(-1.0, 1.0)),
    st.floats(0.05, 3.0),
)
def test_a_long_lookahead_never_carries_an_obstacle_through_the_stop_zone(
    points, motion, lookahead_s
):
    """The check covers the whole horizon, not its two ends: however far the lookahead
    projects, an allowed motion brings no point deeper than the deepest one already is (to
    within half a check step, 2.5 cm for this zone) at any instant on the way."""
    zones = ObstacleZones(square, (), 1.0, (), 0.0, lookahead_s=lookahead_s)
    cloud = np.array(points, dtype=float)
    zone = np.array(square).reshape(-1, 2)
    deepest = depth(zone, cloud).max()
    if not zones.evaluate(cloud, motion).blocked:
        for i in range(1, 257):
            moved = project(cloud, *motion, lookahead_s * i / 256)
            assert depth(zone, moved).max() <= deepest + 0.025 + 1e-6


def test_an_obstacle_ahead_inside_the_stop_zone_blocks_forward_motion_at_any_lookahead():
    ahead = np.array([[0.30, y] for y in np.linspace(-0.1, 0.1, 21)])
    for lookahead_s in (0.1, 1.5, 3.0):
        zones = ObstacleZones(square, (), 1.0, (), 0.0, lookahead_s=lookahead_s)
        assert zones.evaluate(ahead - [0.05, 0.0], (0.3, 0.0, 0.0)).blocked, lookahead_s
        assert not zones.evaluate(ahead - [0.05, 0.0], (-0.3, 0.0, 0.0)).blocked, lookahead_s


footprint = (0.2, 0.15, 0.2, -0.15, -0.2, -0.15, -0.2, 0.15)


@FUZZ
@given(
    st.lists(st.tuples(st.floats(-1.5, 1.5), st.floats(-1.5, 1.5)), min_size=1, max_size=20),
    st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5), st.floats(-1.5, 1.5)),
)
def test_exact_time_to_collision_matches_a_fine_simulation(points, motion):
    zones = ObstacleZones((), (), 1.0, footprint, 2.0, lookahead_s=0.1)
    poly = np.array(footprint).reshape(-1, 2)
    cloud = np.array(points, dtype=float)
    # Points touching the edge are the no-deeper rule's business, not time-to-collision's.
    cloud = cloud[boundary_distance(poly, cloud) > 1e-6]
    outside = cloud[~inside(poly, cloud)]
    exact = zones._time_to_collision(cloud, *motion)
    step = 0.002
    simulated = next(
        (
            k * step
            for k in range(1, int(2.0 / step) + 1)
            if len(outside) and inside(poly, project(outside, *motion, k * step)).any()
        ),
        None,
    )
    if simulated is None:
        # Only a graze shorter than one simulation step can slip between samples.
        assert exact is None or exact > 2.0 - step or _grazes(poly, outside, motion, exact)
    else:
        assert exact is not None
        assert exact <= simulated + 1e-9
        assert simulated - exact <= step + 1e-6 or _grazes(poly, outside, motion, exact)


def _grazes(poly, points, motion, t):
    """True if the contact at t is a touch that leaves again within a few milliseconds."""
    return not any(
        inside(poly, project(points, *motion, t + dt)).any() for dt in (0.001, 0.002, 0.003)
    )


@FUZZ
@given(
    st.floats(0.05, 0.25),
    st.floats(0.2, 0.8),
    st.integers(3, 20),
    st.tuples(st.floats(-0.4, 0.4), st.floats(-0.4, 0.4), st.floats(0.2, 0.8)),
    st.floats(-math.pi, math.pi),
)
def test_box_holds_in_closed_loop_with_rotating_sign_flipping_commands(
    speed, spin, flip_every, start, heading
):
    """Issue 9 item 2: scaling on, the linear command rotates and the rotation flips sign."""
    config = SafetyConfig.for_mode(
        "arm7",
        scale_velocities=True,
        workspace_min=(-0.5, -0.5, 0.0),
        workspace_max=(0.5, 0.5, 1.0),
    )
    validator = SafetyValidator(config)
    position = np.array(start)
    t, period = 10.0, 0.02
    slack = 0.5 * max(config.max_accel) * period * period + 1e-9
    for k in range(300):
        t += period
        angle = heading + 0.05 * k
        wz = spin if (k // flip_every) % 2 == 0 else -spin
        command = (speed * math.cos(angle), speed * math.sin(angle), 0.1, 0.0, 0.0, wz)
        validator.update_pose(tuple(position), t, "base_link", t)
        validator.submit_command(command, t, "base_link", t)
        position = position + period * np.array(validator.step(t).motion[:3])
        assert np.all(position >= np.array(config.workspace_min) - slack)
        assert np.all(position <= np.array(config.workspace_max) + slack)


@FUZZ
@given(
    st.floats(0.1, 0.5),
    st.floats(0.3, 1.0),
    st.integers(3, 20),
    st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5), st.floats(-math.pi, math.pi)),
)
def test_geofence_holds_in_closed_loop_with_sign_flipping_rotation(speed, spin, flip_every, start):
    config = SafetyConfig.for_mode(
        "mobile3",
        scale_velocities=True,
        max_velocity=(0.5, 0.0, 1.0),
        min_velocity=(-0.3, 0.0, -1.0),
        max_accel=(0.5, 0.5, 1.5),
        max_decel=(1.0, 1.0, 2.5),
        geofence=(1.0, 1.0, -1.0, 1.0, -1.0, -1.0, 1.0, -1.0),
    )
    validator = SafetyValidator(config)
    x, y, yaw = start
    t, period = 10.0, 0.02
    for k in range(400):
        t += period
        validator.update_odom(x, y, yaw, t, t)
        wz = spin if (k // flip_every) % 2 == 0 else -spin
        validator.submit_command((speed, 0.0, wz), None, None, t)
        vx, _, wz_out = validator.step(t).motion
        x, y = x + period * vx * math.cos(yaw), y + period * vx * math.sin(yaw)
        yaw += period * wz_out
        assert max(abs(x), abs(y)) <= 1.0 + 0.01


@FUZZ
@given(
    st.floats(-math.pi, math.pi),
    st.floats(1e-3, 1e3),
)
def test_yaw_is_the_same_for_every_quaternion_norm(yaw, norm):
    from vla_ros.safety.zones import quaternion_yaw

    q = np.array([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])
    assert math.remainder(quaternion_yaw(*(norm * q)) - yaw, 2 * math.pi) == pytest.approx(
        0.0, abs=1e-9
    )


@FUZZ
@given(
    st.lists(st.one_of(st.floats(0.0, 12.0), weird), max_size=40),
    st.one_of(st.floats(-4.0, 4.0), weird),
    st.one_of(st.floats(-0.1, 0.1), weird),
    st.one_of(st.floats(-1.0, 1.0), weird),
    st.one_of(st.floats(-1.0, 12.0), weird),
)
def test_any_scan_is_either_read_or_refused_as_missing_and_then_stops(
    ranges, angle_min, increment, range_min, range_max
):
    zone = (0.3, 0.25, 0.3, -0.25, -0.3, -0.25, -0.3, 0.25)
    validator = SafetyValidator(SafetyConfig.for_mode("mobile3", stop_zone=zone))
    verdict = validator.update_scan(ranges, angle_min, increment, range_min, range_max, 1.0, 1.0)
    validator.submit_command((0.2, 0.0, 0.0), None, None, 1.0)
    out = validator.step(1.0)
    assert all(math.isfinite(v) for v in out.motion)
    if not verdict.accepted:
        assert verdict.code == "scan_bad"
        assert out.reasons == ("scan_bad",)
        assert out.state is SafetyState.STOPPED


GRIP_VALUES = {"vla": (0.0, 0.1, 0.2, 0.3), "teleop": (0.6, 0.7, 0.8, 1.0)}
"""Disjoint per source, so an applied gripper value names the source that sent it."""


def _gripper_validator():
    from vla_ros.safety.arbiter import InputSpec, LockSpec

    inputs = (
        InputSpec("vla", priority=10, gated=True),
        InputSpec("teleop", priority=100, timeout=0.5),
    )
    return SafetyValidator(
        SafetyConfig.for_mode("arm7", gripper_on_estop="hold"),
        inputs=inputs,
        locks=(LockSpec("pause", priority=50),),
    )


gripper_action = st.one_of(
    st.tuples(st.just("cmd"), st.sampled_from(["vla", "teleop"])),
    st.tuples(st.just("grip"), st.sampled_from(["vla", "teleop"]), st.integers(0, 3)),
    st.tuples(st.just("cmd_grip"), st.sampled_from(["vla", "teleop"]), st.integers(0, 3)),
    st.tuples(st.sampled_from(["enable", "lock", "estop"]), st.booleans()),
    st.tuples(st.just("reset")),
)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.01, 0.02, 0.02, 0.05, 0.3, 0.7]),
            st.lists(gripper_action, max_size=4),
        ),
        min_size=1,
        max_size=80,
    )
)
def test_a_gripper_target_acts_only_while_its_source_drives(ticks):
    """Random interleavings of sources, gates, locks, e-stops and gripper commands. A gripper
    value reaches the output only from the source that drives at that step, sent while it was
    allowed and not dropped since (disabled, locked, e-stopped, reset or overridden); a target
    the driving source sends with its command is applied at once; otherwise the gripper holds."""
    validator = _gripper_validator()
    frame = validator.config.command_frame
    t = 1000.0
    valid = {"vla": set(), "teleop": set()}  # values each source may still have applied
    enabled = locked = estop_input = False
    applied = None
    for dt, actions in ticks:
        t += dt
        sent_now = {}
        for action in actions:
            kind = action[0]
            if kind in ("cmd", "cmd_grip"):
                validator.submit_command((0.01,) + (0.0,) * 5, t, frame, t, source=action[1])
            if kind in ("grip", "cmd_grip"):
                source, value = action[1], GRIP_VALUES[action[1]][action[2]]
                verdict = validator.submit_gripper(value, t, source=source)
                allowed = not validator.estop_engaged and (
                    source == "teleop" or (enabled and not locked)
                )
                if verdict.accepted:
                    assert allowed
                    valid[source].add(value)
                    sent_now[source] = value
                else:
                    sent_now.pop(source, None)
            if kind == "enable":
                enabled = action[1]
                validator.enable_source("vla", enabled)
                if not enabled:
                    valid["vla"].clear()
                    sent_now.pop("vla", None)
            elif kind == "lock":
                locked = action[1]
                validator.set_lock("pause", locked)
                if locked:
                    valid["vla"].clear()
                    sent_now.pop("vla", None)
            elif kind == "estop":
                estop_input = action[1]
                validator.submit_estop(estop_input)
                if estop_input:
                    valid = {"vla": set(), "teleop": set()}
                    sent_now.clear()
            elif kind == "reset" and validator.reset(t)[0]:
                valid = {"vla": set(), "teleop": set()}
                sent_now.clear()
        out = validator.step(t)
        driving = validator.status().active_source
        for source in valid:
            if driving and source != driving:
                valid[source].clear()
        if out.gripper != applied:
            assert out.gripper is not None  # once set, the gripper holds
            assert out.state in (SafetyState.RUNNING, SafetyState.LIMITED)
            assert out.gripper in valid[driving], (driving, out.gripper, valid)
            applied = out.gripper
        if (
            driving in sent_now
            and out.state in (SafetyState.RUNNING, SafetyState.LIMITED)
            and not validator.estop_engaged
        ):
            assert out.gripper == sent_now[driving]
