"""NodeParameters validates in the set callback and acts only on a change rclpy applied."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros


def test_a_change_another_callback_refuses_is_neither_applied_nor_announced(ros_context):
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from vla_ros.nodes.common import NodeParameters, ParamSpec

    node = Node("parameters_probe", context=ros_context)
    try:
        node.declare_parameter("guard", 0)

        def refuse_guard(parameters):
            bad = any(p.name == "guard" and p.value < 0 for p in parameters)
            return SetParametersResult(successful=not bad, reason="guard must be >= 0")

        # Registered first, so rclpy runs it after NodeParameters' own check.
        node.add_on_set_parameters_callback(refuse_guard)
        params = NodeParameters(node, [ParamSpec("speed", 1.0, "m/s", min=0.0, max=5.0)])
        heard = []
        params.add_listener(lambda values: heard.append(dict(values)))

        refused = node.set_parameters_atomically(
            [Parameter("speed", value=2.0), Parameter("guard", value=-1)]
        )
        assert not refused.successful
        assert node.get_parameter("speed").value == 1.0
        assert params["speed"] == 1.0, "applied although rclpy refused the set"
        assert heard == []

        assert node.set_parameters([Parameter("speed", value=3.0)])[0].successful
        assert params["speed"] == 3.0
        assert heard == [{"speed": 3.0}]
        assert not node.set_parameters([Parameter("speed", value=9.0)])[0].successful
        assert params["speed"] == 3.0
    finally:
        node.destroy_node()
