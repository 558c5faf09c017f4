"""The validator's rules through the real node and DDS: bad odometry and scans, a frozen /clock,
run-time loosening and misspelled keys, stray and half-NaN sources, and teleop taking over and
handing back."""

from __future__ import annotations

import math

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import LaserScan
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from vla_ros.nodes.safety_node import SafetyNode, main
from vla_ros.params import ParameterError
from vla_ros.transport import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

pytestmark = pytest.mark.ros

FENCE = [1.0, 1.0, -1.0, 1.0, -1.0, -1.0, 1.0, -1.0]
ZONE = [0.3, 0.25, 0.3, -0.25, -0.3, -0.25, -0.3, 0.25]
FAST = {"max_accel": [100.0] * 3, "max_decel": [100.0] * 3}


class Rig:
    """A mobile3 safety node and a peer playing policy, teleop, sensors and operator."""

    def __init__(self, context, active=True, **overrides):
        params = [Parameter("mode", value="mobile3")]
        params += [Parameter(k, value=v) for k, v in overrides.items()]
        self.node = SafetyNode(context=context, parameter_overrides=params)
        self.peer = Node("hardening_peer", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.outputs: list[Twist] = []
        self.status: dict[str, str] = {}
        self.cmd = self.peer.create_publisher(Twist, "vla/cmd_raw", COMMAND_QOS)
        self.teleop = self.peer.create_publisher(Twist, "teleop/cmd_vel", COMMAND_QOS)
        self.active = self.peer.create_publisher(Bool, "vla/active", LATCHED_QOS)
        self.odom = self.peer.create_publisher(Odometry, "odom", SENSOR_QOS)
        self.scan = self.peer.create_publisher(LaserScan, "scan", SENSOR_QOS)
        if active is not None:
            self.active.publish(Bool(data=active))
        self.peer.create_subscription(Twist, "cmd_vel", self.outputs.append, COMMAND_QOS)
        self.peer.create_subscription(
            DiagnosticStatus,
            "vla_safety/status",
            lambda m: self.status.update({kv.key: kv.value for kv in m.values}),
            LATCHED_QOS,
        )

    def spin(self, spin_until, predicate, timeout=10.0):
        return spin_until(self.executor, predicate, timeout)

    def last_vx(self):
        return self.outputs[-1].linear.x if self.outputs else None

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.peer.destroy_node()


@pytest.fixture
def rigs(ros_context):
    made = []

    def make(**kwargs):
        made.append(Rig(ros_context, **kwargs))
        return made[-1]

    yield make
    for rig in made:
        rig.close()


def twist(vx=0.0, wz=0.0):
    msg = Twist()
    msg.linear.x, msg.angular.z = vx, wz
    return msg


def odometry(rig, x, y, q):
    msg = Odometry()
    msg.header.stamp = rig.peer.get_clock().now().to_msg()
    msg.header.frame_id = "odom"
    msg.pose.pose.position.x, msg.pose.pose.position.y = x, y
    o = msg.pose.pose.orientation
    o.x, o.y, o.z, o.w = q
    return msg


def test_non_unit_and_zero_quaternions_over_dds(rigs, spin_until):
    rig = rigs(geofence=FENCE, **FAST)
    quaternion = [(0.0, 0.0, 0.5, 0.0)]  # yaw pi at norm 0.5, 5 cm inside the -x edge

    def feed():
        rig.odom.publish(odometry(rig, -0.95, 0.0, quaternion[0]))
        rig.cmd.publish(twist(0.5))

    timer = rig.peer.create_timer(0.02, feed)
    assert rig.spin(spin_until, lambda: "geofence" in rig.status.get("active_limits", ""))
    count = len(rig.outputs)
    assert rig.spin(spin_until, lambda: len(rig.outputs) >= count + 10)
    # room 0.05 m / lookahead 0.1 s: at most 0.5 m/s, and the braking curve sqrt(2*100*0.05)
    # is looser; the old yaw formula read this as facing +x and let 0.5 m/s through untouched.
    assert all(m.linear.x <= 0.5 * 0.05 / 0.3 + 1e-6 for m in rig.outputs[count:])
    quaternion[0] = (0.0, 0.0, 0.0, 0.0)
    assert rig.spin(spin_until, lambda: rig.status.get("reasons") == "odom_bad")
    assert rig.spin(spin_until, lambda: rig.last_vx() == 0.0)
    assert rig.status["state"] == "stopped"
    rig.peer.destroy_timer(timer)


def test_malformed_scan_over_dds_stops_instead_of_clearing(rigs, spin_until):
    rig = rigs(stop_zone=ZONE, **FAST)
    geometry = {"range_min": 0.05, "range_max": 10.0, "angle_increment": 0.02}

    def feed():
        msg = LaserScan()
        msg.header.stamp = rig.peer.get_clock().now().to_msg()
        msg.header.frame_id = "laser"
        msg.angle_min = -0.1
        msg.angle_increment = geometry["angle_increment"]
        msg.range_min, msg.range_max = geometry["range_min"], geometry["range_max"]
        msg.ranges = [0.2] * 10
        rig.scan.publish(msg)
        rig.cmd.publish(twist(0.3))

    timer = rig.peer.create_timer(0.02, feed)
    assert rig.spin(spin_until, lambda: rig.status.get("reasons") == "stop_zone")
    geometry["range_min"] = 20.0  # > range_max: malformed
    assert rig.spin(spin_until, lambda: rig.status.get("reasons") == "scan_bad")
    geometry["range_min"], geometry["angle_increment"] = 0.05, 0.0
    assert rig.spin(spin_until, lambda: rig.status.get("last_rejection", "").startswith("scan_bad"))
    assert rig.status.get("reasons") == "scan_bad"
    assert all(m.linear.x == 0.0 for m in rig.outputs)
    rig.peer.destroy_timer(timer)


def test_output_keeps_going_and_stops_when_the_clock_freezes(rigs, spin_until):
    rig = rigs(use_sim_time=True, command_timeout=0.3, **FAST)
    clock_pub = rig.peer.create_publisher(Clock, "/clock", 10)
    sim = [1000.0]

    def tick_clock():
        sim[0] += 0.02
        msg = Clock()
        msg.clock.sec = int(sim[0])
        msg.clock.nanosec = int((sim[0] % 1) * 1e9)
        clock_pub.publish(msg)
        rig.cmd.publish(twist(0.4))

    timer = rig.peer.create_timer(0.02, tick_clock)
    assert rig.spin(spin_until, lambda: rig.last_vx() == pytest.approx(0.4))
    rig.peer.destroy_timer(timer)  # /clock and commands stop together
    count = len(rig.outputs)
    assert rig.spin(spin_until, lambda: len(rig.outputs) >= count + 1 and rig.last_vx() == 0.0)
    # The zero stream goes on with the clock frozen (steady timer, not ROS time).
    count = len(rig.outputs)
    assert rig.spin(spin_until, lambda: len(rig.outputs) >= count + 10)
    assert all(m == Twist() for m in rig.outputs[count:])


def _set(rig, spin_until, **values):
    client = rig.peer.create_client(SetParameters, "vla_safety/set_parameters")
    assert rig.spin(spin_until, client.service_is_ready)
    request = SetParameters.Request()
    request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    future = client.call_async(request)
    assert rig.spin(spin_until, future.done)
    return future.result().results[0]


def test_loosening_at_run_time_is_refused_tightening_accepted(rigs, ros_context, spin_until):
    rig = rigs(max_velocity=[0.5, 0.0, 1.0], min_velocity=[-0.3, 0.0, -1.0])
    result = _set(rig, spin_until, max_velocity=[5.0, 0.0, 1.0])
    assert not result.successful
    assert "max_velocity" in result.reason
    assert "loosen" in result.reason
    assert not _set(rig, spin_until, command_timeout=5.0).successful
    assert rig.node.core.config.max_velocity == (0.5, 0.0, 1.0)
    assert _set(rig, spin_until, max_velocity=[0.2, 0.0, 0.5]).successful
    assert rig.node.core.config.max_velocity == (0.2, 0.0, 0.5)
    permissive = SafetyNode(
        context=ros_context,
        namespace="permissive",
        parameter_overrides=[Parameter("allow_runtime_loosening", value=True)],
    )
    try:
        assert permissive._refusal({**permissive._params.values, "command_timeout": 5.0}) is None
    finally:
        permissive.destroy_node()


def test_unknown_keys_are_refused_at_start_up(ros_context, tmp_path):
    with pytest.raises(ParameterError, match="max_velocty"):
        SafetyNode(
            context=ros_context,
            parameter_overrides=[Parameter("max_velocty", value=[0.5, 0.5, 1.0])],
        )
    params = tmp_path / "typo.yaml"
    params.write_text("vla_safety:\n  ros__parameters:\n    comand_timeout: 0.2\n")
    assert main(["safety_node", "--ros-args", "--params-file", str(params)]) == 2
    section = tmp_path / "section.yaml"
    section.write_text("vla_safty:\n  ros__parameters:\n    command_timeout: 0.2\n")
    assert main(["safety_node", "--ros-args", "--params-file", str(section)]) == 2


def test_misspelled_sections_are_named(tmp_path):
    from vla_ros.nodes.common import misspelled_sections

    path = tmp_path / "robot.yaml"
    path.write_text(
        "vla_safty: {ros__parameters: {}}\n/robot1/vla_camera: {ros__parameters: {}}\n"
        "/**: {ros__parameters: {}}\ncontroller_server: {ros__parameters: {}}\n"
    )
    (problem,) = misspelled_sections(["--ros-args", "--params-file", str(path)])
    assert "'vla_safty'" in problem
    assert "vla_safety" in problem


def test_stray_publisher_without_instruction_drives_nothing(rigs, spin_until):
    rig = rigs(active=None, **FAST)
    timer = rig.peer.create_timer(0.02, lambda: rig.cmd.publish(twist(0.3)))
    assert rig.spin(spin_until, lambda: int(rig.status.get("rejected.source_disabled", 0)) >= 20)
    assert rig.outputs
    assert all(m == Twist() for m in rig.outputs)
    assert rig.status["state"] == "timeout"
    rig.active.publish(Bool(data=True))  # an instruction starts
    assert rig.spin(spin_until, lambda: rig.last_vx() == pytest.approx(0.3))
    rig.active.publish(Bool(data=False))  # and ends: zero at once, not after the timeout
    assert rig.spin(spin_until, lambda: rig.last_vx() == 0.0)
    assert rig.spin(spin_until, lambda: rig.status.get("state") == "timeout")
    rig.peer.destroy_timer(timer)


def test_half_nan_source_latches_a_fault_until_reset(rigs, spin_until):
    rig = rigs(**FAST)
    flip = [0]

    def feed():
        flip[0] += 1
        rig.cmd.publish(twist(math.nan if flip[0] % 2 else 0.3))

    timer = rig.peer.create_timer(0.02, feed)
    assert rig.spin(spin_until, lambda: rig.status.get("state") == "estop")
    assert rig.status["reasons"] == "fault"
    assert "rejected commands" in rig.status["fault"]
    count = len(rig.outputs)
    assert rig.spin(spin_until, lambda: len(rig.outputs) >= count + 20)
    assert all(m == Twist() for m in rig.outputs[count:])
    rig.peer.destroy_timer(timer)
    client = rig.peer.create_client(Trigger, "vla_safety/reset")
    assert rig.spin(spin_until, client.service_is_ready)
    future = client.call_async(Trigger.Request())
    assert rig.spin(spin_until, future.done)
    assert future.result().success
    assert "fault released" in future.result().message
    good = rig.peer.create_timer(0.02, lambda: rig.cmd.publish(twist(0.3)))
    assert rig.spin(spin_until, lambda: rig.last_vx() == pytest.approx(0.3))
    rig.peer.destroy_timer(good)


def test_teleop_takes_over_and_hands_back_over_dds(rigs, spin_until):
    rig = rigs(**FAST)
    teleop_on = [False]

    def feed():
        rig.cmd.publish(twist(0.3))
        if teleop_on[0]:
            rig.teleop.publish(twist(-0.1, 0.5))

    timer = rig.peer.create_timer(0.02, feed)
    assert rig.spin(spin_until, lambda: rig.last_vx() == pytest.approx(0.3))
    assert rig.spin(spin_until, lambda: rig.status.get("active_source") == "vla")
    teleop_on[0] = True
    assert rig.spin(spin_until, lambda: rig.last_vx() == pytest.approx(-0.1))
    assert rig.spin(spin_until, lambda: rig.status.get("active_source") == "teleop")
    teleop_on[0] = False
    assert rig.spin(spin_until, lambda: rig.last_vx() == pytest.approx(0.3))
    assert rig.spin(spin_until, lambda: rig.status.get("active_source") == "vla")
    pause = rig.peer.create_publisher(Bool, "vla/pause", LATCHED_QOS)
    pause.publish(Bool(data=True))
    assert rig.spin(spin_until, lambda: rig.last_vx() == 0.0)
    assert rig.spin(spin_until, lambda: rig.status.get("engaged_locks") == "pause")
    pause.publish(Bool(data=False))
    assert rig.spin(spin_until, lambda: rig.last_vx() == pytest.approx(0.3))
    rig.peer.destroy_timer(timer)
