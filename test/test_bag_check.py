"""`bag check`: recorded outputs against the safety invariants, violations named by timestamp."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_ros.bag.check import check_bag
from vla_ros.bag.io import BagError, BagWriter, serialize

START = 1_750_000_000.0
PARAMS = {
    "mode": "mobile3",
    "output_rate_hz": 50.0,
    "max_velocity": [0.5, 0.5, 1.0],
    "min_velocity": [-0.5, -0.5, -1.0],
    "max_accel": [1.0, 1.0, 2.0],
    "max_decel": [1.5, 1.5, 3.0],
    "command_timeout": 0.5,
}


def _ns(t: float) -> int:
    return round((START + t) * 1e9)


def write_mobile_run(path, outputs, raw=(), estops=(), status=()):
    """A run bag as the stack records it: /cmd_vel, /vla/cmd_raw, /vla/estop, ~/status."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
    from geometry_msgs.msg import Twist
    from std_msgs.msg import Bool

    with BagWriter(path) as bag:
        bag.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
        for topic, msgtype, wanted in (
            ("/vla/cmd_raw", "geometry_msgs/msg/Twist", raw),
            ("/vla/estop", "std_msgs/msg/Bool", estops),
            ("/vla_safety/status", "diagnostic_msgs/msg/DiagnosticStatus", status),
        ):
            if wanted:
                bag.add_topic(topic, msgtype)
        records = []
        for t, (vx, vy, wz) in outputs:
            twist = Twist()
            twist.linear.x, twist.linear.y, twist.angular.z = vx, vy, wz
            records.append((_ns(t), "/cmd_vel", serialize(twist)))
        for t in raw:
            records.append((_ns(t), "/vla/cmd_raw", serialize(Twist())))
        for t, engaged in estops:
            records.append((_ns(t), "/vla/estop", serialize(Bool(data=engaged))))
        for t, state in status:
            msg = DiagnosticStatus(values=[KeyValue(key="state", value=state)])
            records.append((_ns(t), "/vla_safety/status", serialize(msg)))
        for stamp, topic, data in sorted(records):
            bag.write(topic, stamp, data)


def ramp(v_target=0.3, accel=0.8, rate=50.0, duration=2.0, start=0.0):
    """Outputs that speed up at `accel` to `v_target` then cruise: within every limit."""
    out, v = [], 0.0
    for k in range(round(duration * rate)):
        out.append((start + k / rate, (v, 0.0, 0.0)))
        v = min(v_target, v + accel / rate)
    return out


def raw_inputs(duration=2.0, rate=20.0):
    return [k / rate for k in range(round(duration * rate))]


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"vla_safety": {"ros__parameters": PARAMS}}), encoding="utf-8")
    return path


def test_good_trace_passes(tmp_path, params_file):
    write_mobile_run(tmp_path / "run", ramp(), raw_inputs())
    result = check_bag(tmp_path / "run", params_file)
    assert result.ok, result.summary()
    assert result.samples == 100
    assert result.summary().endswith("PASS")


def test_a_misspelled_limit_in_the_params_file_is_refused_as_the_node_refuses_it(tmp_path):
    """It used to be ignored, so the recording was checked against the default limit."""
    write_mobile_run(tmp_path / "run", ramp(), raw_inputs())
    path = tmp_path / "typo.yaml"
    section = {**PARAMS, "max_linar_speed": 0.2}
    path.write_text(yaml.safe_dump({"vla_safety": {"ros__parameters": section}}), encoding="utf-8")
    with pytest.raises(BagError, match=r"max_linar_speed \(did you mean max_linear_speed\?\)"):
        check_bag(tmp_path / "run", path)


def test_planted_jump_fails_and_names_its_timestamp(tmp_path, params_file):
    outputs = ramp()
    outputs[60] = (outputs[60][0], (0.5, 0.0, 0.0))
    write_mobile_run(tmp_path / "run", outputs, raw_inputs())
    result = check_bag(tmp_path / "run", params_file)
    assert not result.ok
    planted = START + 60 / 50.0
    kinds = {(f.kind, round(f.t, 3)) for f in result.findings}
    assert ("accel", round(planted, 3)) in kinds
    assert f"t={planted:.6f}" in result.summary()
    assert "(+1.200 s) accel" in result.summary()
    assert result.summary().endswith("FAIL")


def test_over_limit_output_fails(tmp_path, params_file):
    outputs = [(k / 50.0, (min(0.8, k * 0.02), 0.0, 0.0)) for k in range(60)]
    write_mobile_run(tmp_path / "run", outputs, raw_inputs())
    result = check_bag(tmp_path / "run", params_file)
    assert {f.kind for f in result.findings} >= {"velocity_limit", "speed_norm"}
    first = min(f.t_rel for f in result.findings if f.kind == "velocity_limit")
    assert first == pytest.approx(26 / 50.0, abs=1e-6)


def test_motion_after_estop_fails_but_in_flight_output_is_allowed(tmp_path, params_file):
    outputs = ramp(duration=2.0)
    stopped = [(t, (0.0, 0.0, 0.0)) if t >= 1.02 else (t, v) for t, v in outputs]
    write_mobile_run(tmp_path / "ok", stopped, raw_inputs(), estops=[(1.0, True)])
    assert check_bag(tmp_path / "ok", params_file).ok
    late = [(t, (0.0, 0.0, 0.0)) if t >= 1.2 else (t, v) for t, v in outputs]
    write_mobile_run(tmp_path / "late", late, raw_inputs(), estops=[(1.0, True)])
    result = check_bag(tmp_path / "late", params_file)
    estop = [f for f in result.findings if f.kind == "estop"]
    assert estop
    assert min(f.t_rel for f in estop) == pytest.approx(1.02, abs=1e-6)


def test_status_estop_counts_too(tmp_path, params_file):
    outputs = ramp(duration=2.0)
    write_mobile_run(tmp_path / "run", outputs, raw_inputs(), status=[(1.5, "estop")])
    result = check_bag(tmp_path / "run", params_file)
    assert {f.kind for f in result.findings} == {"estop"}


def test_watchdog_needs_braking_after_inputs_stop(tmp_path, params_file):
    outputs = ramp(duration=3.0)
    write_mobile_run(tmp_path / "run", outputs, raw_inputs(duration=1.0))
    result = check_bag(tmp_path / "run", params_file)
    watchdog = [f for f in result.findings if f.kind == "watchdog"]
    assert watchdog
    assert min(f.t_rel for f in watchdog) > 1.0 + PARAMS["command_timeout"] - 0.05


def test_without_raw_topic_watchdog_is_skipped_and_said(tmp_path, params_file):
    write_mobile_run(tmp_path / "run", ramp(duration=3.0))
    result = check_bag(tmp_path / "run", params_file)
    assert result.ok
    assert any("watchdog not checked" in note for note in result.notes)


def test_arm_run_uses_header_stamps(tmp_path):
    from geometry_msgs.msg import TwistStamped

    params = {"mode": "arm7", "output_rate_hz": 100.0, "command_timeout": 0.5}
    with BagWriter(tmp_path / "arm") as bag:
        bag.add_topic("/servo_node/delta_twist_cmds", "geometry_msgs/msg/TwistStamped")
        bag.add_topic("/vla/arm_cmd_raw", "geometry_msgs/msg/TwistStamped")
        for k in range(50):
            t_ns = _ns(k / 100.0)
            msg = TwistStamped()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t_ns, 1_000_000_000)
            msg.twist.linear.z = min(0.2, 0.004 * k)
            msg.twist.angular.x = 0.9 if k == 40 else 0.0
            bag.write("/vla/arm_cmd_raw", t_ns, serialize(msg))
            bag.write("/servo_node/delta_twist_cmds", t_ns + 7_000_000, serialize(msg))
    result = check_bag(tmp_path / "arm", params, min_commands=50)
    assert result.mode == "arm7"
    assert {f.kind for f in result.findings} == {"velocity_limit", "speed_norm", "accel"}
    assert {round(f.t_rel, 3) for f in result.findings} >= {0.4}


def test_bag_without_outputs_fails_naming_the_topic(tmp_path, params_file):
    with BagWriter(tmp_path / "empty") as bag:
        bag.add_topic("/vla/cmd_raw", "geometry_msgs/msg/Twist")
    result = check_bag(tmp_path / "empty", params_file)
    assert not result.ok
    assert [f.kind for f in result.findings] == ["missing_topic"]
    assert "cmd_vel" in result.summary()
    assert result.summary().endswith("FAIL")


def test_thin_recordings_fail_instead_of_passing(tmp_path, params_file):
    """The README replay once recorded 7 zero commands and passed; now that is a FAIL."""
    write_mobile_run(tmp_path / "thin", [(k / 50, (0.0, 0.0, 0.0)) for k in range(7)])
    result = check_bag(tmp_path / "thin", params_file)
    assert [f.kind for f in result.findings] == ["too_few_commands", "too_short"]
    assert "7 outputs" in result.findings[0].message
    assert check_bag(tmp_path / "thin", params_file, min_commands=7).ok
    write_mobile_run(tmp_path / "run", ramp())
    assert check_bag(tmp_path / "run", params_file).ok
    missing = check_bag(tmp_path / "run", params_file, require=["/vla/cmd_raw", "/cmd_vel"])
    assert [(f.kind, f.message) for f in missing.findings] == [
        ("missing_topic", "/vla/cmd_raw not recorded")
    ]
    write_mobile_run(tmp_path / "full", ramp(), raw_inputs())
    assert check_bag(tmp_path / "full", params_file, require=["/vla/cmd_raw"]).ok


def _write_still_run(path, *, receive_ns=None, active=(), declare=()):
    """500 zero outputs at 50 Hz (receive times from `receive_ns(k)`), `/vla/active` values at
    (t, value), and empty declared topics: what a stack listening to the wrong camera records."""
    from geometry_msgs.msg import Twist
    from std_msgs.msg import Bool

    receive_ns = receive_ns or (lambda k: _ns(k / 50))
    with BagWriter(path) as bag:
        bag.add_topic("/cmd_vel", "geometry_msgs/msg/Twist")
        for topic in declare:
            bag.add_topic(topic, "geometry_msgs/msg/Twist")
        if active:
            bag.add_topic("/vla/active", "std_msgs/msg/Bool")
        records = [(receive_ns(k), "/cmd_vel", serialize(Twist())) for k in range(500)]
        records += [(_ns(t), "/vla/active", serialize(Bool(data=v))) for t, v in active]
        for stamp, topic, data in sorted(records):
            bag.write(topic, stamp, data)


def test_a_run_in_which_nothing_happened_cannot_pass(tmp_path, params_file):
    """The README replay with the stack on the wrong camera topic passed: 500 outputs, none
    moving, a required topic declared by the recorder but empty, every output at time 0."""
    _write_still_run(tmp_path / "empty_required", declare=["/vla/cmd_raw"])
    result = check_bag(tmp_path / "empty_required", params_file, require=["/vla/cmd_raw"])
    assert [(f.kind, f.message) for f in result.findings] == [
        ("empty_topic", "/vla/cmd_raw recorded but holds 0 messages")
    ]
    _write_still_run(tmp_path / "at_zero", receive_ns=lambda k: 0)
    kinds = [f.kind for f in check_bag(tmp_path / "at_zero", params_file).findings]
    assert kinds == ["zero_stamp", "too_short"]
    _write_still_run(tmp_path / "one_instant", receive_ns=lambda k: _ns(1.0))
    result = check_bag(tmp_path / "one_instant", params_file)
    assert [f.kind for f in result.findings] == ["too_short"]
    assert "span 0.00 s" in result.findings[0].message
    _write_still_run(tmp_path / "active", active=[(0.5, True)])
    result = check_bag(tmp_path / "active", params_file)
    assert [f.kind for f in result.findings] == ["nothing_moved"]
    assert "/vla/active was true for 9.48 s" in result.findings[0].message
    # Without an instruction, standing still is the right thing to do.
    _write_still_run(tmp_path / "idle", active=[(0.5, False)])
    assert check_bag(tmp_path / "idle", params_file).ok


def test_stamps_from_another_clock_fail(tmp_path):
    """Arm outputs stamped in sim time, recorded in wall time (or the reverse)."""
    from geometry_msgs.msg import TwistStamped

    with BagWriter(tmp_path / "arm") as bag:
        bag.add_topic("/servo_node/delta_twist_cmds", "geometry_msgs/msg/TwistStamped")
        for k in range(100):
            msg = TwistStamped()
            msg.header.stamp.sec, msg.header.stamp.nanosec = 12 + k // 100, (k % 100) * 10**7
            bag.write("/servo_node/delta_twist_cmds", _ns(k / 100), serialize(msg))
    result = check_bag(tmp_path / "arm", {"mode": "arm7", "output_rate_hz": 100.0})
    assert [f.kind for f in result.findings] == ["stamp_out_of_range"]
    assert "100 outputs stamped outside" in result.findings[0].message


def test_unsafe_params_are_refused(tmp_path):
    write_mobile_run(tmp_path / "run", ramp())
    with pytest.raises(BagError, match="max_accel"):
        check_bag(tmp_path / "run", {**PARAMS, "max_accel": [0.0, 1.0, 1.0]})


def test_cli_exit_codes_and_json(tmp_path, params_file, capsys):
    from vla_ros.bag.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    write_mobile_run(tmp_path / "good", ramp(), raw_inputs())
    bad = ramp()
    bad[30] = (bad[30][0], (-0.45, 0.0, 0.0))
    write_mobile_run(tmp_path / "bad", bad, raw_inputs())
    for name, code in (("good", 0), ("bad", 1)):
        report = tmp_path / f"{name}.json"
        args = parser.parse_args(
            [
                *("bag", "check", str(tmp_path / name)),
                *("--params", str(params_file), "--json", str(report)),
            ]
        )
        assert args.handler(args) == code
        assert json.loads(report.read_text(encoding="utf-8"))["ok"] is (code == 0)
    assert "FAIL" in capsys.readouterr().out


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.floats(0.05, 0.5),
    st.floats(0.1, 0.95),
    st.integers(5, 90),
)
def test_any_ramp_within_limits_passes_and_any_big_jump_fails(tmp_path_factory, v, accel, at):
    """Property: limits-respecting traces pass; a jump beyond accel·dt is caught where it is."""
    params = dict(PARAMS)
    tmp = tmp_path_factory.mktemp("prop")
    good = ramp(v_target=v, accel=accel)
    write_mobile_run(tmp / "good", good, raw_inputs())
    assert check_bag(tmp / "good", params).ok
    bad = list(good)
    t, (vx, _, _) = bad[at]
    jump = vx + 0.15 if vx + 0.15 <= 0.5 else vx - 0.2
    bad[at] = (t, (jump, 0.0, 0.0))
    write_mobile_run(tmp / "bad", bad, raw_inputs())
    findings = check_bag(tmp / "bad", params).findings
    assert any(f.kind == "accel" and math.isclose(f.t_rel, t, abs_tol=1e-6) for f in findings)


def test_bag_info_never_takes_a_duration_from_zero_stamps(tmp_path, capsys):
    from vla_ros.bag.io import bag_info
    from vla_ros.cli import main

    _write_still_run(tmp_path / "half", receive_ns=lambda k: 0 if k < 100 else _ns(k / 50))
    info = bag_info(tmp_path / "half")
    assert info.zero_stamped == 100
    assert info.duration_s == pytest.approx(399 / 50)
    assert main(["bag", "info", str(tmp_path / "half")]) == 0
    shown = " ".join(capsys.readouterr().err.split())  # rich wraps the title
    assert "7.98 s, 100 messages stamped 0" in shown
    assert "175000" not in shown
