"""`vla_expert`: the scripted expert standing in for the policy, through the safety node.

Reads the episode (scenario, layout, state) from the sim's latched `~/episode` JSON and the pose
(`odom` for mobile3, `vla/ee_pose` for arm7), and publishes the expert's commands at
`control_rate_hz` (node clock, so sim time) exactly where the inference node would: raw Twists
on `vla/cmd_raw` (mobile3) or a TwistStamped on `vla/arm_cmd_raw` plus the gripper on
`vla/gripper_raw` (arm7), so the safety node limits them like any policy output. Beside them,
the clean command for the same pose (the training label under noise) goes to `vla/cmd_expert`
(mobile3) or `vla/arm_cmd_expert` (arm7). Zero whenever
no episode is running. Like the inference node with an instruction, it holds `vla/active` true
while an episode runs: the safety node takes the `vla` input only while that is so.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from std_msgs.msg import Bool, Float64, String

from vla_ros.nodes.common import NodeParameters, ParamSpec, run_node, topic_name_problem
from vla_ros.safety.zones import quaternion_yaw
from vla_ros.sim import robots
from vla_ros.sim.arm import ArmExpert
from vla_ros.sim.expert import MobileExpert
from vla_ros.sim.scenario import Box, Layout, Scenario, resolve_scenarios
from vla_ros.transport import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

NODE_NAME = "vla_expert"
PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("control_rate_hz", 20.0, "raw command publish rate", min=1.0, max=200.0),
    ParamSpec("noise", False, "inject command noise (demonstrations with recoveries)"),
    ParamSpec("episode_topic", "vla_sim/episode", "the sim's episode JSON", read_only=True),
    ParamSpec("odom_topic", "odom", "nav_msgs/Odometry", read_only=True),
    ParamSpec("cmd_topic", "vla/cmd_raw", "raw Twist to the safety node", read_only=True),
    ParamSpec(
        "label_topic",
        "vla/cmd_expert",
        "mobile3: the clean command for the current pose (the training label under noise)",
        read_only=True,
    ),
    ParamSpec("ee_pose_topic", "vla/ee_pose", "arm7 end-effector pose", read_only=True),
    ParamSpec("arm_cmd_topic", "vla/arm_cmd_raw", "arm7 raw TwistStamped", read_only=True),
    ParamSpec(
        "arm_label_topic",
        "vla/arm_cmd_expert",
        "arm7: the clean TwistStamped for the current pose (the training label under noise)",
        read_only=True,
    ),
    ParamSpec("gripper_topic", "vla/gripper_raw", "arm7 raw gripper command", read_only=True),
    ParamSpec("command_frame_id", "base_link", "frame_id of the arm7 TwistStamped"),
    ParamSpec(
        "active_topic", "vla/active", "Bool enabling the safety node's vla input", read_only=True
    ),
)
TOPICS = (
    "episode_topic",
    "odom_topic",
    "cmd_topic",
    "label_topic",
    "ee_pose_topic",
    "arm_cmd_topic",
    "arm_label_topic",
    "active_topic",
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
        blocks=tuple((str(c), float(x), float(y)) for c, x, y in layout.get("blocks", [])),
    )


def _rotation(q: Any) -> np.ndarray:
    """3x3 rotation matrix of a geometry_msgs Quaternion."""
    w, x, y, z = q.w, q.x, q.y, q.z
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


class ExpertNode(Node):
    """Episode JSON + odometry in, expert Twist out."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._cfg = NodeParameters(
            self,
            PARAMS,
            lambda v: topic_name_problem(v, list(TOPICS)),
        )
        self._lock = threading.Lock()
        self._scenarios: dict[str, Scenario] = {}
        self._expert: MobileExpert | ArmExpert | None = None
        self._ee: tuple[np.ndarray, np.ndarray] | None = None
        self._episode_key: tuple[str, int, float] | None = None
        self._running = False
        self._pose: tuple[float, float, float] | None = None
        self._last_t: float | None = None
        cfg = self._cfg
        self._pub = self.create_publisher(Twist, cfg["cmd_topic"], COMMAND_QOS)
        self._label_pub = self.create_publisher(Twist, cfg["label_topic"], COMMAND_QOS)
        self._arm_pub = self.create_publisher(TwistStamped, cfg["arm_cmd_topic"], COMMAND_QOS)
        self._arm_label_pub = self.create_publisher(
            TwistStamped, cfg["arm_label_topic"], COMMAND_QOS
        )
        self._gripper_pub = self.create_publisher(Float64, cfg["gripper_topic"], COMMAND_QOS)
        self._active_pub = self.create_publisher(Bool, cfg["active_topic"], LATCHED_QOS)
        self._active_pub.publish(Bool(data=False))
        self.create_subscription(String, cfg["episode_topic"], self._on_episode, LATCHED_QOS)
        self.create_subscription(Odometry, cfg["odom_topic"], self._on_odom, SENSOR_QOS)
        self.create_subscription(PoseStamped, cfg["ee_pose_topic"], self._on_pose, SENSOR_QOS)
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
                robot = robots.get(scenario.robot)
                expert = robot.expert(scenario, layout, layout.seed, bool(self._cfg["noise"]))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            self.get_logger().error(f"bad episode message: {exc}")
            running, expert, key = False, None, None
        with self._lock:
            changed = running != self._running
            self._running = running
            if running:
                self._expert, self._episode_key, self._last_t = expert, key, None
            else:
                self._episode_key = None
        if changed:
            self._active_pub.publish(Bool(data=running))

    def _on_odom(self, msg: Odometry) -> None:
        q = msg.pose.pose.orientation
        try:
            yaw = quaternion_yaw(q.x, q.y, q.z, q.w)
        except ValueError:  # a zero or non-finite quaternion: keep the last good pose
            return
        with self._lock:
            self._pose = (msg.pose.pose.position.x, msg.pose.pose.position.y, yaw)

    def _on_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        with self._lock:
            self._ee = (np.array([p.x, p.y, p.z]), _rotation(msg.pose.orientation))

    def _on_control(self) -> None:
        now = self.get_clock().now()
        twist = Twist()
        label = Twist()
        gripper = None
        with self._lock:
            expert = self._expert if self._running else None
            dt = 1.0 / self._cfg["control_rate_hz"]
            t = now.nanoseconds * 1e-9
            if expert is not None and self._last_t is not None and t > self._last_t:
                dt = t - self._last_t
            if isinstance(expert, ArmExpert) and self._ee is not None:
                self._last_t = t
                motion, gripper = expert.command(self._ee[0], self._ee[1], dt)
                _set_twist6(twist, motion)
                _set_twist6(label, expert.label[0])
            elif isinstance(expert, MobileExpert) and self._pose is not None:
                self._last_t = t
                vx, vy, wz = expert.command(self._pose, dt)
                twist.linear.x, twist.linear.y, twist.angular.z = vx, vy, wz
                label.linear.x, label.linear.y, label.angular.z = expert.label
            arm = isinstance(self._expert, ArmExpert)
        if not arm:
            self._pub.publish(twist)
            self._label_pub.publish(label)
            return
        for publisher, message in ((self._arm_pub, twist), (self._arm_label_pub, label)):
            stamped = TwistStamped(twist=message)
            stamped.header.stamp = now.to_msg()
            stamped.header.frame_id = self._cfg["command_frame_id"]
            publisher.publish(stamped)
        self._gripper_pub.publish(Float64(data=1.0 if gripper is None else float(gripper)))


def _set_twist6(twist: Twist, values: np.ndarray) -> None:
    twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in values[:3])
    twist.angular.x, twist.angular.y, twist.angular.z = (float(v) for v in values[3:])


def main(args: Sequence[str] | None = None) -> int:
    """Console script `expert_node`."""
    return run_node(ExpertNode, args)
