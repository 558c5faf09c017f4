"""`vla_expert`: the scripted expert standing in for the policy, through the safety node.

Reads the episode (scenario, layout, state) from the sim's latched `~/episode` JSON and the pose
from `odom`, and publishes `MobileExpert` commands as raw Twists on `vla/cmd_raw` at
`control_rate_hz` (node clock, so sim time): exactly where the inference node would publish, so
the safety node limits them like any policy output. Zero whenever no episode is running.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from typing import Any

from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from std_msgs.msg import String

from vla_ros.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    NodeParameters,
    ParamSpec,
    run_node,
    topic_name_problem,
)
from vla_ros.sim.expert import MobileExpert, NoiseConfig
from vla_ros.sim.scenario import Box, Layout, Scenario, resolve_scenarios

NODE_NAME = "vla_expert"

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("control_rate_hz", 20.0, "raw command publish rate", min=1.0, max=200.0),
    ParamSpec("noise", False, "inject command noise (demonstrations with recoveries)"),
    ParamSpec("episode_topic", "vla_sim/episode", "the sim's episode JSON", read_only=True),
    ParamSpec("odom_topic", "odom", "nav_msgs/Odometry", read_only=True),
    ParamSpec("cmd_topic", "vla/cmd_raw", "raw Twist to the safety node", read_only=True),
)


def layout_from_status(status: dict[str, Any]) -> Layout:
    """The Layout that a sim `~/episode` message describes."""
    layout = status["layout"]
    boxes = tuple(Box(b[0], b[1], b[2], tuple(b[3:6])) for b in layout["boxes"])
    return Layout(
        status["scenario"],
        int(status["seed"]),
        start=tuple(layout["start"]),
        cup=tuple(layout["cup"]),
        boxes=boxes,  # type: ignore[arg-type]
    )


class ExpertNode(Node):
    """Episode JSON + odometry in, expert Twist out."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._cfg = NodeParameters(
            self,
            PARAMS,
            lambda v: topic_name_problem(v, ["episode_topic", "odom_topic", "cmd_topic"]),
        )
        self._lock = threading.Lock()
        self._scenarios: dict[str, Scenario] = {}
        self._expert: MobileExpert | None = None
        self._episode_key: tuple[str, int, float] | None = None
        self._running = False
        self._pose: tuple[float, float, float] | None = None
        self._last_t: float | None = None
        self._pub = self.create_publisher(Twist, self._cfg["cmd_topic"], COMMAND_QOS)
        self.create_subscription(String, self._cfg["episode_topic"], self._on_episode, LATCHED_QOS)
        self.create_subscription(Odometry, self._cfg["odom_topic"], self._on_odom, SENSOR_QOS)
        self.create_timer(1.0 / self._cfg["control_rate_hz"], self._on_control)

    def _scenario(self, source: str) -> Scenario:
        if source not in self._scenarios:
            self._scenarios[source] = resolve_scenarios(source)[0]
        return self._scenarios[source]

    def _on_episode(self, msg: String) -> None:
        try:
            status = json.loads(msg.data)
            running = status["state"] == "running"
            key = (status["source"], int(status["seed"]), float(status["layout"]["start"][0]))
            expert = self._expert
            if running and key != self._episode_key:
                scenario = self._scenario(status["source"])
                layout = layout_from_status(status)
                noise = NoiseConfig() if self._cfg["noise"] else None
                expert = MobileExpert(scenario, layout, noise=noise, seed=layout.seed)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            self.get_logger().error(f"bad episode message: {exc}")
            running, expert, key = False, None, None
        with self._lock:
            self._running = running
            if running:
                self._expert, self._episode_key, self._last_t = expert, key, None
            else:
                self._episode_key = None

    def _on_odom(self, msg: Odometry) -> None:
        q = msg.pose.pose.orientation
        yaw = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
        with self._lock:
            self._pose = (msg.pose.pose.position.x, msg.pose.pose.position.y, yaw)

    def _on_control(self) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        twist = Twist()
        with self._lock:
            if self._running and self._expert is not None and self._pose is not None:
                dt = 1.0 / self._cfg["control_rate_hz"]
                if self._last_t is not None and now > self._last_t:
                    dt = now - self._last_t
                self._last_t = now
                vx, vy, wz = self._expert.command(self._pose, dt)
                twist.linear.x, twist.linear.y, twist.angular.z = vx, vy, wz
        self._pub.publish(twist)


def main(args: Sequence[str] | None = None) -> int:
    """Console script `expert_node`."""
    return run_node(ExpertNode, args)
