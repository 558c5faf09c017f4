"""`vla-ros instruct | estop | reset | resume | status` against real nodes over DDS (own
contexts)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String

from vla_ros.cli import main
from vla_ros.nodes.inference_node import InferenceNode
from vla_ros.nodes.safety_node import SafetyNode
from vla_ros.policy.stub import StubPolicy
from vla_ros.policy.types import PolicySpec
from vla_ros.transport import COMMAND_QOS, LATCHED_QOS, LATEST_ONLY_QOS

pytestmark = pytest.mark.ros

SPEC = PolicySpec("mobile3", 10, 4, 0.1, 16, "stub-test")


class Stack:
    """Inference (stub policy) and safety nodes spun by a background thread, plus a camera."""

    def __init__(self, context) -> None:
        self.policy = StubPolicy(SPEC)
        self.inference = InferenceNode(
            self.policy,
            context=context,
            parameter_overrides=[Parameter("max_frame_age_s", value=3.0)],
        )
        self.safety = SafetyNode(context=context)
        self.camera = Node("fake_camera", context=context)
        self.actives: list[bool] = []
        self.camera.create_subscription(
            Bool, "vla/active", lambda m: self.actives.append(m.data), LATCHED_QOS
        )
        self._frames = self.camera.create_publisher(Image, "vla/frame", LATEST_ONLY_QOS)
        self.camera.create_timer(0.05, self._frame)
        self.executor = SingleThreadedExecutor(context=context)
        for node in (self.inference, self.safety, self.camera):
            self.executor.add_node(node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _frame(self) -> None:
        msg = Image(height=16, width=16, encoding="rgb8", step=48)
        msg.header.stamp = self.camera.get_clock().now().to_msg()
        msg.header.frame_id = "camera"
        msg.data = bytes(np.full(16 * 16 * 3, 150, dtype=np.uint8))
        self._frames.publish(msg)

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=10.0)
        for node in (self.inference, self.safety, self.camera):
            node.destroy_node()


@pytest.fixture
def stack(ros_context) -> Iterator[Stack]:
    running = Stack(ros_context)
    yield running
    running.close()


def test_instruct_reset_and_clear(stack, capsys):
    assert main(["instruct", "go to the kitchen", "--timeout", "10"]) == 0
    assert "go to the kitchen" in capsys.readouterr().out
    assert stack.inference.core.instruction == "go to the kitchen"
    assert True in stack.actives
    assert main(["reset", "--timeout", "10"]) == 0
    assert "cleared" in capsys.readouterr().out
    assert main(["instruct", "", "--timeout", "10"]) == 0
    assert stack.inference.core.instruction is None
    assert stack.actives[-1] is False


def test_resume_follows_only_a_held_instruction(stack, capsys):
    assert main(["resume", "--timeout", "10"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    stack.inference.core.hold_instruction("patrol")  # as found on a restart
    assert stack.inference.core.instruction is None
    assert main(["resume", "--timeout", "10"]) == 0
    assert "patrol" in capsys.readouterr().out
    assert stack.inference.core.instruction == "patrol"


def test_instruct_reports_why_the_node_refused_at_once(stack, capsys):
    """Over the model's token budget: the node knows why, and instruct says it (no timeout)."""
    stack.policy.instruction_problem = lambda text: (
        f"{len(text.split())} tokens, at most 3" if len(text.split()) > 3 else None
    )
    assert main(["instruct", "go to the red box now", "--timeout", "10"]) == 1
    assert "refused it: 6 tokens, at most 3" in capsys.readouterr().err
    assert stack.inference.core.instruction is None
    assert main(["instruct", "go left", "--timeout", "10"]) == 0


def test_instruct_refuses_control_characters_before_publishing(stack, capsys):
    assert main(["instruct", "go\x1b[2J"]) == 2
    assert "control character" in capsys.readouterr().err
    assert main(["instruct", "go\x00 left"]) == 2
    assert "NUL" in capsys.readouterr().err
    assert stack.inference.core.instruction is None


def test_estop_engages_and_releases(stack, capsys):
    assert main(["estop", "--timeout", "10"]) == 0
    assert stack.safety.core.estop_engaged
    assert main(["estop", "--release", "--timeout", "10"]) == 0
    assert not stack.safety.core.estop_engaged
    capsys.readouterr()


def test_status_once_json_reports_every_node(stack, capsys):
    assert main(["instruct", "patrol", "--timeout", "10"]) == 0
    capsys.readouterr()
    assert main(["status", "--once", "--json", "--timeout", "8"]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["nodes"]["vla_inference"]["state"] == "active"
    assert snapshot["nodes"]["vla_safety"]["state"] == "active"
    assert snapshot["nodes"]["vla_camera"]["state"] == "absent"
    assert snapshot["instruction"] == "patrol"
    assert snapshot["active"] is True
    assert snapshot["safety"]["state"]
    assert "last_rejection" in snapshot["safety"]
    # Typed values: numbers, booleans and null, not their strings.
    assert isinstance(snapshot["inference"]["inferences"], int)
    assert isinstance(snapshot["inference"]["instructions_refused"], int)
    assert snapshot["inference"]["latency_p50_ms"] is None or isinstance(
        snapshot["inference"]["latency_p50_ms"], float
    )
    assert snapshot["safety"]["estop_engaged"] is False
    assert isinstance(snapshot["events"]["start"], int)

    from io import StringIO

    from rich.console import Console

    from vla_ros.commands import render

    console = Console(file=StringIO(), width=120)
    console.print(render(snapshot))
    text = console.file.getvalue()
    assert "vla_inference" in text
    assert "patrol" in text


def test_a_volatile_publisher_reaches_the_instruction_topic(stack, ros_context, spin_until):
    """`ros2 topic pub` without --qos-durability is volatile; it must connect too."""
    node = Node("volatile_operator", context=ros_context)
    try:
        publisher = node.create_publisher(String, "vla/instruction", COMMAND_QOS)
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        assert spin_until(executor, lambda: publisher.get_subscription_count() >= 1, 10.0)
        publisher.publish(String(data="dock"))
        assert spin_until(executor, lambda: stack.inference.core.instruction == "dock", 10.0)
        executor.shutdown()
    finally:
        node.destroy_node()


def _collector(states, diagnostics, in_graph):
    from vla_ros.commands import StatusCollector

    collector = StatusCollector.__new__(StatusCollector)
    collector.states, collector.diagnostics, collector.in_graph = states, diagnostics, in_graph
    return collector


def test_status_waits_for_a_node_that_is_in_the_graph_but_has_not_answered():
    collector = _collector(
        {"vla_safety": "active", "vla_inference": "absent"},
        {"vla_safety": {}},
        {"vla_safety", "vla_inference"},
    )
    assert not collector.complete()
    assert collector.state("vla_inference") == "no answer"
    collector.states["vla_inference"] = "inactive"
    assert collector.complete()


def test_status_takes_the_state_a_node_s_diagnostics_carry_when_its_service_is_unmatched():
    collector = _collector(
        {"vla_inference": "absent"},
        {"vla_inference": {"values": {"lifecycle_state": "active"}}},
        {"vla_inference"},
    )
    assert collector.state("vla_inference") == "active"
    assert collector.complete()
    assert collector.state("vla_camera") == "absent"


def test_status_calls_a_node_absent_only_after_discovery_went_quiet():
    """One node of a process can be discovered seconds after another on a loaded host."""
    from vla_ros.commands import DISCOVERY_SETTLE_S, NODES

    collector = _collector({}, {}, {"vla_inference"})
    collector.alive, collector.last_news = collector._alive(), 100.0
    assert not collector.settled(100.0 + DISCOVERY_SETTLE_S / 2)
    assert collector.settled(100.0 + DISCOVERY_SETTLE_S)
    collector.alive = set(NODES)
    assert collector.settled(100.0)


def test_status_once_without_a_stack_fails_and_says_so(capsys):
    assert main(["status", "--once", "--json", "--timeout", "2"]) == 1
    captured = capsys.readouterr()
    assert "no node of the stack answered" in captured.err
    snapshot = json.loads(captured.out)
    # A node destroyed by an earlier test may linger in the DDS graph for a moment.
    assert {node["state"] for node in snapshot["nodes"].values()} <= {"absent", "no answer"}


def test_typed_diagnostics_values():
    from vla_ros.commands import json_safe, typed

    assert [typed(v) for v in ("0", "12", "3.500", "nan", "true", "False", "", "go")] == [
        0,
        12,
        3.5,
        None,
        True,
        False,
        None,
        "go",
    ]
    assert json_safe({"a": [float("nan"), 1.0], "b": float("inf")}) == {"a": [None, 1.0], "b": None}
