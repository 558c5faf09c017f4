"""vla_safety through real DDS: outputs per mode, e-stop topic and services, run-time parameters,
and a 1 kHz input flood."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.srv import SetParameters
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy
from std_msgs.msg import Bool, Float64
from std_srvs.srv import Trigger

from vla_ros.nodes.safety_node import SafetyNode, main
from vla_ros.params import ParameterError
from vla_ros.transport import COMMAND_QOS, LATCHED_QOS

pytestmark = pytest.mark.ros


class Rig:
    """The node under test plus a peer node that plays robot, policy and operator."""

    def __init__(self, context, mode="mobile3", **overrides):
        params = [Parameter("mode", value=mode)]
        params += [Parameter(name, value=value) for name, value in overrides.items()]
        self.node = SafetyNode(context=context, parameter_overrides=params)
        self.peer = Node("safety_test_peer", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.outputs: list = []
        self.grippers: list[float] = []
        self.status: DiagnosticStatus | None = None
        if mode == "mobile3":
            self.cmd = self.peer.create_publisher(Twist, "vla/cmd_raw", COMMAND_QOS)
            self.peer.create_subscription(Twist, "cmd_vel", self.outputs.append, COMMAND_QOS)
        else:
            self.cmd = self.peer.create_publisher(TwistStamped, "vla/arm_cmd_raw", COMMAND_QOS)
            self.gripper = self.peer.create_publisher(Float64, "vla/gripper_raw", COMMAND_QOS)
            self.peer.create_subscription(
                TwistStamped, "servo_node/delta_twist_cmds", self.outputs.append, COMMAND_QOS
            )
            self.peer.create_subscription(
                Float64, "gripper/command", lambda m: self.grippers.append(m.data), COMMAND_QOS
            )
        self.estop = self.peer.create_publisher(Bool, "vla/estop", LATCHED_QOS)
        # Plays the inference node with an active instruction: the vla input is enabled.
        self.active = self.peer.create_publisher(Bool, "vla/active", LATCHED_QOS)
        self.active.publish(Bool(data=True))
        self.peer.create_subscription(
            DiagnosticStatus, "vla_safety/status", self._on_status, LATCHED_QOS
        )

    def _on_status(self, msg):
        self.status = msg

    def value(self, key):
        if self.status is None:
            return None
        return {kv.key: kv.value for kv in self.status.values}.get(key)

    def call(self, spin_until, service, request_type=Trigger):
        client = self.peer.create_client(request_type, service)
        assert spin_until(self.executor, client.service_is_ready, 10.0)
        future = client.call_async(request_type.Request())
        assert spin_until(self.executor, future.done, 10.0)
        return future.result()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.peer.destroy_node()


@pytest.fixture
def rigs(ros_context):
    made = []

    def make(**kwargs):
        rig = Rig(ros_context, **kwargs)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def twist(vx=0.0, vy=0.0, wz=0.0, vz=0.0):
    msg = Twist()
    msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.z = vx, vy, vz, wz
    return msg


def test_mobile_limits_ramp_and_keeps_publishing_zero_after_silence(rigs, spin_until):
    rig = rigs(
        max_velocity=[0.3, 0.0, 1.0],
        min_velocity=[-0.3, 0.0, -1.0],
        max_decel=[1.0, 1.0, 1.0],
        command_timeout=0.2,
    )
    sender = rig.peer.create_timer(0.02, lambda: rig.cmd.publish(twist(0.5, 0.2, 0.4, vz=1.0)))
    assert spin_until(
        rig.executor, lambda: rig.outputs and rig.outputs[-1].linear.x == pytest.approx(0.3)
    )
    last = rig.outputs[-1]
    assert last.linear.y == 0.0  # disabled axis
    assert last.linear.z == 0.0  # not a mobile axis
    assert last.angular.z == pytest.approx(0.4)
    rig.peer.destroy_timer(sender)
    start = len(rig.outputs)
    assert spin_until(
        rig.executor,
        lambda: sum(1 for m in rig.outputs[start:] if m == Twist()) >= 10,
    )
    vx = [m.linear.x for m in rig.outputs[start:]]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(vx))
    assert any(0.0 < v < 0.3 for v in vx)  # decelerated through intermediate values
    assert rig.value("state") == "timeout"


def test_arm_outputs_stamped_twist_and_gripper(rigs, spin_until):
    rig = rigs(mode="arm7", command_frame="panda_link0")

    def send(frame="panda_link0"):
        msg = TwistStamped()
        msg.header.stamp = rig.peer.get_clock().now().to_msg()
        msg.header.frame_id = frame
        msg.twist.linear.z = 0.1
        msg.twist.angular.x = 0.2
        rig.cmd.publish(msg)
        rig.gripper.publish(Float64(data=0.0))

    sender = rig.peer.create_timer(0.02, send)
    assert spin_until(
        rig.executor,
        lambda: rig.outputs and rig.outputs[-1].twist.linear.z == pytest.approx(0.1),
    )
    out = rig.outputs[-1]
    assert out.header.frame_id == "panda_link0"
    assert out.twist.angular.x == pytest.approx(0.2)
    assert (out.header.stamp.sec, out.header.stamp.nanosec) != (0, 0)
    assert spin_until(rig.executor, lambda: rig.grippers and rig.grippers[-1] == 0.0)
    rig.peer.destroy_timer(sender)
    # Slower than the fault latch (more than 10 rejections a second) so the state is a timeout.
    wrong = rig.peer.create_timer(0.25, lambda: send(frame="tool0"))
    assert spin_until(
        rig.executor, lambda: (rig.value("last_rejection") or "").startswith("wrong_frame")
    )
    assert spin_until(rig.executor, lambda: rig.value("state") == "timeout")
    rig.peer.destroy_timer(wrong)


def test_the_policy_gripper_does_not_act_while_teleop_drives_the_arm(rigs, spin_until):
    """Teleop streaming zeros drives the arm: the policy's gripper close is refused, not applied
    and not kept for later, while teleop's own gripper input passes."""
    rig = rigs(mode="arm7", command_frame="panda_link0")
    teleop = rig.peer.create_publisher(TwistStamped, "teleop/delta_twist_cmds", COMMAND_QOS)
    teleop_gripper = rig.peer.create_publisher(Float64, "teleop/gripper", COMMAND_QOS)
    teleop_on = policy_closes = False

    def stamped(z):
        msg = TwistStamped()
        msg.header.stamp = rig.peer.get_clock().now().to_msg()
        msg.header.frame_id = "panda_link0"
        msg.twist.linear.z = z
        return msg

    def send():
        rig.cmd.publish(stamped(0.1))
        rig.gripper.publish(Float64(data=0.0 if policy_closes else 1.0))
        if teleop_on:
            teleop.publish(stamped(0.0))
            teleop_gripper.publish(Float64(data=0.5))

    rig.peer.create_timer(0.02, send)
    assert spin_until(rig.executor, lambda: rig.grippers and rig.grippers[-1] == 1.0)
    teleop_on = True
    assert spin_until(rig.executor, lambda: rig.value("active_source") == "teleop")
    policy_closes = True
    assert spin_until(
        rig.executor,
        lambda: (
            (rig.value("last_rejection") or "").startswith("source_overridden")
            and rig.grippers[-1] == 0.5
        ),
    )
    assert 0.0 not in rig.grippers


def test_estop_topic_latch_and_services(ros_context, rigs, spin_until):
    # Published before the node exists: transient-local QoS must still deliver it.
    early = Node("early_operator", context=ros_context)
    early_pub = early.create_publisher(Bool, "vla/estop", LATCHED_QOS)
    early_pub.publish(Bool(data=True))
    rig = rigs()
    assert spin_until(rig.executor, lambda: rig.value("state") == "estop")
    sender = rig.peer.create_timer(0.02, lambda: rig.cmd.publish(twist(0.2)))
    assert spin_until(rig.executor, lambda: int(rig.value("rejected.estop_engaged") or 0) >= 5)
    assert rig.outputs
    assert all(m == Twist() for m in rig.outputs)
    refused = rig.call(spin_until, "vla_safety/reset")
    assert not refused.success
    assert "still true" in refused.message
    early_pub.publish(Bool(data=False))
    assert spin_until(rig.executor, lambda: rig.value("estop_input") == "false")
    assert rig.value("state") == "estop"  # releasing the input alone is not enough
    assert rig.call(spin_until, "vla_safety/reset").success
    assert spin_until(rig.executor, lambda: rig.outputs[-1].linear.x == pytest.approx(0.2))
    count = len(rig.outputs)
    assert rig.call(spin_until, "vla_safety/estop").success
    assert spin_until(rig.executor, lambda: rig.value("state") == "estop")
    # The first output after the e-stop is already zero: no ramp.
    stop_index = next(i for i in range(count, len(rig.outputs)) if rig.outputs[i] == Twist())
    assert all(m == Twist() for m in rig.outputs[stop_index:])
    assert rig.outputs[stop_index - 1].linear.x == pytest.approx(0.2)
    assert rig.call(spin_until, "vla_safety/reset").success
    rig.peer.destroy_timer(sender)
    early.destroy_node()


def test_runtime_parameter_changes_are_validated_through_the_node(rigs, spin_until):
    rig = rigs()
    client = rig.peer.create_client(SetParameters, "vla_safety/set_parameters")
    assert spin_until(rig.executor, client.service_is_ready, 10.0)

    def set_params(**values):
        request = SetParameters.Request()
        request.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        future = client.call_async(request)
        assert spin_until(rig.executor, future.done, 10.0)
        return future.result().results[0]

    for values, name in [
        ({"max_velocity": [0.5, 0.5]}, "max_velocity"),
        ({"min_velocity": [0.6, -0.5, -1.0]}, "min_velocity[0]"),
        ({"max_decel": [-1.0, 1.0, 1.0]}, "max_decel[0]"),
        ({"command_timeout": 0.0}, "command_timeout"),
        ({"stop_zone": [0.0, 0.0, 1.0]}, "stop_zone"),
        ({"mode": "arm7"}, "mode"),
        ({"input_stamped": True}, "input_stamped"),
    ]:
        result = set_params(**values)
        assert not result.successful, values
        assert name in result.reason
    assert rig.node.core.config.max_velocity == (0.5, 0.5, 1.0)
    assert set_params(max_velocity=[0.2, 0.1, 0.5]).successful
    assert rig.node.core.config.max_velocity == (0.2, 0.1, 0.5)
    assert set_params(output_rate_hz=100.0).successful
    sender = rig.peer.create_timer(0.02, lambda: rig.cmd.publish(twist(1.0, 0.0, 0.0)))
    assert spin_until(rig.executor, lambda: rig.outputs and rig.outputs[-1].linear.x == 0.2)
    assert spin_until(rig.executor, lambda: rig.value("max_velocity") == "[0.2, 0.1, 0.5]")
    rig.peer.destroy_timer(sender)


def test_invalid_startup_parameters_are_refused_with_the_name(ros_context):
    with pytest.raises(ParameterError, match="max_decel"):
        SafetyNode(
            context=ros_context, parameter_overrides=[Parameter("max_decel", value=[1.0, -1.0])]
        )
    assert main(["safety_node", "--ros-args", "-p", "command_timeout:=-1.0"]) == 2


def test_holds_a_1khz_input_stream_without_queueing(rigs, spin_until):
    rig = rigs(output_rate_hz=50.0)
    depth = [s.qos_profile for s in rig.node.subscriptions if s.topic_name == "/vla/cmd_raw"]
    assert depth[0].history == HistoryPolicy.KEEP_LAST
    assert depth[0].depth <= 10
    assert spin_until(rig.executor, lambda: rig.peer.count_subscribers("vla/cmd_raw") >= 1)
    total = 1500
    done = threading.Event()

    def flood():
        for i in range(total):
            rig.cmd.publish(twist(0.2 if i < total - 1 else 0.1))
            time.sleep(0.001)
        done.set()

    clock = rig.node.get_clock()
    begin = clock.now().nanoseconds
    before = len(rig.outputs)
    thread = threading.Thread(target=flood)
    thread.start()
    spin_until(rig.executor, done.is_set, 30.0)
    thread.join()
    elapsed = (clock.now().nanoseconds - begin) * 1e-9
    during = len(rig.outputs) - before
    # The output timer is not starved by the flood (count vs. the node's own clock, loose bound)
    # and never bursts above its rate.
    assert during >= 0.25 * elapsed * 50.0
    assert during <= 1.5 * elapsed * 50.0 + 2
    # After the flood the latest command wins promptly: nothing queued behind it.
    assert spin_until(rig.executor, lambda: rig.outputs[-1].linear.x == pytest.approx(0.1), 5.0)
    accepted = int(rig.value("accepted") or 0)
    assert 0 < accepted <= total


def test_serves_inputs_estop_and_outputs_under_run_nodes_multithreaded_executor(
    ros_context, spin_until
):
    """run_node spins on a multi-threaded executor: inputs and the output timer run in separate
    callback groups under one re-entrant lock (the e-stop callback ticks from inside it)."""
    # About threads, not staleness: a loaded CI machine may take a command late.
    params = {
        "mode": "arm7",
        "max_accel": [100.0] * 6,
        "max_decel": [100.0] * 6,
        "max_command_age": 5.0,
        "command_timeout": 5.0,
    }
    node = SafetyNode(
        context=ros_context,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
    )
    node_executor = MultiThreadedExecutor(num_threads=4, context=ros_context)
    node_executor.add_node(node)
    spinner = threading.Thread(target=node_executor.spin, daemon=True)
    spinner.start()
    peer = Node("mt_peer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(peer)
    outputs: list[float] = []
    status: dict[str, str] = {}
    peer.create_subscription(
        TwistStamped,
        "servo_node/delta_twist_cmds",
        lambda m: outputs.append(m.twist.linear.x),
        COMMAND_QOS,
    )
    peer.create_subscription(
        DiagnosticStatus,
        "vla_safety/status",
        lambda m: status.update({kv.key: kv.value for kv in m.values}),
        LATCHED_QOS,
    )
    publisher = peer.create_publisher(TwistStamped, "vla/arm_cmd_raw", COMMAND_QOS)
    estop = peer.create_publisher(Bool, "vla/estop", LATCHED_QOS)
    active = peer.create_publisher(Bool, "vla/active", LATCHED_QOS)
    active.publish(Bool(data=True))
    try:
        assert spin_until(executor, lambda: publisher.get_subscription_count() >= 1)
        assert spin_until(executor, lambda: "vla" in status.get("enabled_sources", ""))
        for k in range(1, 11):
            msg = TwistStamped()
            msg.header.stamp = peer.get_clock().now().to_msg()
            msg.header.frame_id = "base_link"
            msg.twist.linear.x = 0.02 * k
            publisher.publish(msg)
            assert spin_until(
                executor,
                lambda k=k: bool(outputs) and outputs[-1] == pytest.approx(0.02 * k),
                5.0,
            ), f"command {k} never reached the output: {status.get('last_rejection')}"
        estop.publish(Bool(data=True))
        assert spin_until(executor, lambda: status.get("state") == "estop", 5.0)
        assert spin_until(executor, lambda: outputs[-1] == 0.0, 5.0)
        assert status.get("accepted") == "10"
        assert status.get("rejected_total") == "0"
    finally:
        node_executor.shutdown()
        spinner.join(timeout=10)
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()


def test_a_stopping_validator_commands_zero_instead_of_going_silent(ros_context, spin_until):
    node = SafetyNode(context=ros_context, parameter_overrides=[Parameter("mode", value="mobile3")])
    peer = Node("safety_shutdown_peer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(peer)
    outputs: list[Twist] = []
    cmd = peer.create_publisher(Twist, "vla/cmd_raw", COMMAND_QOS)
    active = peer.create_publisher(Bool, "vla/active", LATCHED_QOS)
    active.publish(Bool(data=True))
    peer.create_subscription(Twist, "cmd_vel", outputs.append, COMMAND_QOS)
    sender = peer.create_timer(0.02, lambda: cmd.publish(twist(0.2)))
    try:
        assert spin_until(executor, lambda: outputs and outputs[-1].linear.x > 0.1)
        peer.destroy_timer(sender)
        executor.remove_node(node)
        node.destroy_node()
        seen = len(outputs)
        assert spin_until(executor, lambda: any(m == Twist() for m in outputs[seen:]))
    finally:
        executor.shutdown()
        peer.destroy_node()


def test_an_estop_publisher_with_default_volatile_qos_still_stops_the_robot(
    rigs, spin_until, capfd
):
    """A joystick or teleop node publishing Bool with plain depth-10 QoS must not be ignored
    because its durability does not match the latched subscription, nor be reported as a
    publisher whose messages are not received."""
    rig = rigs()
    quiet = PublisherEventCallbacks(incompatible_qos=lambda _status: None)  # its own side
    volatile = rig.peer.create_publisher(Bool, "vla/estop", 10, event_callbacks=quiet)
    sender = rig.peer.create_timer(0.05, lambda: volatile.publish(Bool(data=True)))
    assert spin_until(rig.executor, lambda: rig.value("state") == "estop")
    assert rig.value("estop_input") == "true"
    rig.peer.destroy_timer(sender)
    assert "incompatible QoS" not in capfd.readouterr().err


def test_a_failing_core_latches_a_stop_instead_of_killing_the_output_timer(rigs, spin_until):
    rig = rigs()

    def broken(command, now_s):
        raise ZeroDivisionError("limiter bug")

    rig.node.core._shape = broken
    sender = rig.peer.create_timer(0.02, lambda: rig.cmd.publish(twist(0.2)))
    assert spin_until(rig.executor, lambda: rig.value("state") == "estop")
    assert rig.value("rejected.internal_error") == "1"
    count = len(rig.outputs)
    assert spin_until(rig.executor, lambda: len(rig.outputs) >= count + 5)
    assert all(m == Twist() for m in rig.outputs)
    rig.peer.destroy_timer(sender)


def test_reactivation_ramps_up_from_the_zero_it_commanded_on_deactivation(rigs, spin_until):
    rig = rigs(max_accel=[1.0, 1.0, 1.0])
    sender = rig.peer.create_timer(0.02, lambda: rig.cmd.publish(twist(0.5)))
    assert spin_until(
        rig.executor, lambda: rig.outputs and rig.outputs[-1].linear.x == pytest.approx(0.5)
    )
    rig.node.trigger_deactivate()
    assert spin_until(rig.executor, lambda: rig.outputs[-1].linear.x == 0.0)
    start = len(rig.outputs)
    rig.node.trigger_activate()
    assert spin_until(
        rig.executor,
        lambda: rig.outputs[start:] and rig.outputs[-1].linear.x == pytest.approx(0.5),
    )
    vx = [m.linear.x for m in rig.outputs[start:]]
    # 1 m/s^2 at 50 Hz: a few centimetres per second per output, never the old 0.5 at once.
    assert vx[0] < 0.1
    assert max(b - a for a, b in itertools.pairwise(vx)) < 0.1
    rig.peer.destroy_timer(sender)
