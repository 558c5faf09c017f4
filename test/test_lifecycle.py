"""Managed nodes over real DDS: transitions by lifecycle_msgs services, failed configure, zero."""

from __future__ import annotations

import threading

import pytest
from geometry_msgs.msg import Twist
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from vla_ros.nodes.camera_node import CameraNode
from vla_ros.nodes.inference_node import InferenceNode
from vla_ros.nodes.safety_node import SafetyNode
from vla_ros.params import ParameterError
from vla_ros.policy.stub import StubPolicy
from vla_ros.policy.types import PolicySpec
from vla_ros.transport import COMMAND_QOS

pytestmark = pytest.mark.ros

SPEC = PolicySpec("mobile3", 10, 4, 0.1, 16, "stub-test")


class Manager:
    """What a lifecycle manager (launch_ros, nav2_lifecycle_manager) does: service calls."""

    def __init__(self, context, executor, spin_until) -> None:
        self.node = Node("manager", context=context)
        executor.add_node(self.node)
        self.executor = executor
        self.spin_until = spin_until
        self.twists: list[Twist] = []
        self.node.create_subscription(Twist, "vla/cmd_raw", self.twists.append, COMMAND_QOS)
        self.node.create_subscription(Twist, "cmd_vel", self.twists.append, COMMAND_QOS)

    def _call(self, client, request):
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(request)
        assert self.spin_until(self.executor, future.done, 10.0)
        return future.result()

    def state(self, name: str) -> str:
        client = self.node.create_client(GetState, f"{name}/get_state")
        return self._call(client, GetState.Request()).current_state.label

    def change(self, name: str, transition: int) -> bool:
        client = self.node.create_client(ChangeState, f"{name}/change_state")
        request = ChangeState.Request()
        request.transition.id = transition
        return self._call(client, request).success

    def wait_twists(self, count: int) -> list[Twist]:
        start = len(self.twists)
        assert self.spin_until(self.executor, lambda: len(self.twists) >= start + count, 10.0)
        return self.twists[start:]

    def quiet(self, seconds: float) -> int:
        """Spin for `seconds` and count the twists that arrived (bounded spin, no sleep)."""
        start = len(self.twists)
        self.spin_until(self.executor, lambda: False, seconds)
        return len(self.twists) - start


@pytest.fixture
def rig(ros_context, spin_until):
    executor = SingleThreadedExecutor(context=ros_context)
    nodes: list[Node] = []

    def add(node: Node) -> Node:
        nodes.append(node)
        executor.add_node(node)
        return node

    manager = Manager(ros_context, executor, spin_until)
    yield add, manager
    executor.shutdown()
    for node in [*nodes, manager.node]:
        node.destroy_node()


def test_inference_node_follows_its_lifecycle(rig, ros_context):
    add, manager = rig
    node = add(InferenceNode(StubPolicy(SPEC), autostart=False, context=ros_context))
    assert manager.state("vla_inference") == "unconfigured"
    assert manager.change("vla_inference", Transition.TRANSITION_CONFIGURE)
    assert manager.state("vla_inference") == "inactive"
    assert manager.quiet(0.3) == 0  # configured, not active: silent
    assert manager.change("vla_inference", Transition.TRANSITION_ACTIVATE)
    assert len(manager.wait_twists(3)) == 3
    assert manager.change("vla_inference", Transition.TRANSITION_DEACTIVATE)
    assert manager.state("vla_inference") == "inactive"
    assert node._worker is None
    manager.quiet(0.5)  # let messages already in flight land
    assert manager.quiet(0.3) == 0
    assert manager.twists[-1].linear.x == 0.0
    # cleanup, configure again (parameters are declared once), activate again
    assert manager.change("vla_inference", Transition.TRANSITION_CLEANUP)
    assert manager.change("vla_inference", Transition.TRANSITION_CONFIGURE)
    assert manager.change("vla_inference", Transition.TRANSITION_ACTIVATE)
    assert len(manager.wait_twists(3)) == 3


def test_a_failed_configure_leaves_the_node_unconfigured_with_a_reason(rig, ros_context):
    add, manager = rig
    overrides = [Parameter("model_dir", value="/nonexistent/model")]
    node = add(
        InferenceNode(None, autostart=False, context=ros_context, parameter_overrides=overrides)
    )
    assert not manager.change("vla_inference", Transition.TRANSITION_CONFIGURE)
    assert manager.state("vla_inference") == "unconfigured"
    assert "/nonexistent/model" in node.failure_reason
    assert node.core is None
    assert node.count_publishers("vla/cmd_raw") == 0
    assert not any(t.name == "vla_inference_worker" for t in threading.enumerate())
    assert not manager.change("vla_inference", Transition.TRANSITION_ACTIVATE)

    bad = [Parameter("image_topic", value="not a topic!")]
    camera = add(CameraNode(autostart=False, context=ros_context, parameter_overrides=bad))
    assert not manager.change("vla_camera", Transition.TRANSITION_CONFIGURE)
    assert "image_topic" in camera.failure_reason
    assert camera.count_publishers("vla/frame") == 0


def test_direct_construction_still_refuses_bad_parameters(ros_context):
    with pytest.raises(ParameterError, match="model_dir"):
        InferenceNode(None, context=ros_context)


def test_safety_node_commands_zero_when_deactivated(rig, ros_context):
    add, manager = rig
    add(SafetyNode(autostart=False, context=ros_context))
    assert manager.change("vla_safety", Transition.TRANSITION_CONFIGURE)
    assert manager.quiet(0.3) == 0
    assert manager.change("vla_safety", Transition.TRANSITION_ACTIVATE)
    manager.wait_twists(3)
    count = len(manager.twists)
    assert manager.change("vla_safety", Transition.TRANSITION_DEACTIVATE)
    manager.quiet(0.5)  # let messages already in flight land
    assert len(manager.twists) > count  # the zero on the way down
    last = manager.twists[-1]
    assert (last.linear.x, last.linear.y, last.angular.z) == (0.0, 0.0, 0.0)
    assert manager.quiet(0.3) == 0
    assert manager.change("vla_safety", Transition.TRANSITION_INACTIVE_SHUTDOWN)
    assert manager.state("vla_safety") == "finalized"


def test_bringup_refuses_a_stack_whose_node_cannot_configure(tmp_path):
    import rclpy
    from rclpy.context import Context

    from vla_ros.bringup import StackOptions, build_stack, ros_args_for

    options = StackOptions(mode="mobile", model_dir=str(tmp_path / "missing"))
    context = Context()
    rclpy.init(args=ros_args_for(options), context=context)
    try:
        with pytest.raises(ParameterError, match="vla_inference"):
            build_stack(context, options)
    finally:
        rclpy.shutdown(context=context)
