"""The whole stack, both modes: camera -> inference (real tiny PaliGemma policy) -> safety over DDS.

Frames and an instruction go in; only safe commands come out, on the robot topics, after the
instruction and within the limits of the mode's parameter file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.context import Context
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float64, String

from vla_ros.bringup import StackOptions, build_stack, ros_args_for
from vla_ros.safety.config import twist_vector
from vla_ros.transport import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, make_executor

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures("torch_one_thread")]


class Stack:
    """The three nodes from config/<mode>.yaml plus a peer playing camera driver and robot."""

    def __init__(self, mode: str, model_dir: Path) -> None:
        self.options = StackOptions(mode=mode, model_dir=str(model_dir))
        self.context = Context()
        rclpy.init(args=ros_args_for(self.options), context=self.context)
        self.nodes = build_stack(self.context, self.options)
        self.peer = Node("stack_test_peer", context=self.context)
        self.executor = make_executor(self.context)
        for node in [*self.nodes, self.peer]:
            self.executor.add_node(node)
        self.camera = self.peer.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        self.instruction = self.peer.create_publisher(String, "vla/instruction", LATCHED_QOS)
        self.commands: list = []
        self.grippers: list[float] = []
        if mode == "mobile":
            self.peer.create_subscription(Twist, "cmd_vel", self.commands.append, COMMAND_QOS)
        else:
            self.peer.create_subscription(
                TwistStamped, "servo_node/delta_twist_cmds", self.commands.append, COMMAND_QOS
            )
            self.peer.create_subscription(
                Float64, "gripper/command", lambda m: self.grippers.append(m.data), COMMAND_QOS
            )
        self._frame = 0
        self.peer.create_timer(1 / 15, self._publish_frame)
        params = yaml.safe_load(self.options.resolved_params_file().read_text(encoding="utf-8"))
        self.safety_params = params["vla_safety"]["ros__parameters"]

    def _publish_frame(self) -> None:
        """A 320x240 bgr8 frame with a square that moves every 10 frames, stamped now."""
        self._frame += 1
        image = np.full((240, 320, 3), 40, dtype=np.uint8)
        x = 20 + 30 * ((self._frame // 10) % 8)
        image[100:160, x : x + 60] = (0, 0, 220)
        msg = Image(height=240, width=320, encoding="bgr8", step=960, data=image.tobytes())
        msg.header.stamp = self.peer.get_clock().now().to_msg()
        msg.header.frame_id = "camera"
        self.camera.publish(msg)

    def close(self) -> None:
        self.executor.shutdown()
        for node in [*self.nodes, self.peer]:
            node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def stack(request) -> Iterator[Stack]:
    mode = request.param
    model_dir = request.getfixturevalue(
        "tiny_model_dir" if mode == "mobile" else "tiny_arm_model_dir"
    )
    made = Stack(mode, model_dir)
    yield made
    made.close()


def motion_of(command) -> np.ndarray:
    return np.array(twist_vector(command))


@pytest.mark.parametrize("stack", ["mobile", "arm"], indirect=True)
def test_frames_and_instruction_in_safe_commands_out(stack: Stack, spin_until):
    # Before any instruction the validator only ever commands zero.
    assert spin_until(stack.executor, lambda: len(stack.commands) >= 20, 20.0)
    assert all(not motion_of(c).any() for c in stack.commands)

    stack.instruction.publish(String(data="빨간 상자 쪽으로 천천히 이동해"))
    before = len(stack.commands)
    assert spin_until(
        stack.executor,
        lambda: any(motion_of(c).any() for c in stack.commands[before:]),
        30.0,
    ), "the policy's chunk never reached the robot topic"

    limits_max = np.array(stack.safety_params["max_velocity"], dtype=float)
    limits_min = np.array(stack.safety_params["min_velocity"], dtype=float)
    for command in stack.commands:
        motion = motion_of(command)
        assert np.isfinite(motion).all()
        if stack.options.mode == "mobile":
            used = motion[[0, 1, 5]]
            assert motion[[2, 3, 4]].tolist() == [0.0, 0.0, 0.0]
        else:
            used = motion
            assert command.header.frame_id == stack.safety_params["command_frame"]
        assert (used <= limits_max + 1e-9).all()
        assert (used >= limits_min - 1e-9).all()
    if stack.options.mode == "arm":
        assert spin_until(stack.executor, lambda: bool(stack.grippers), 10.0)
        assert set(stack.grippers) <= {0.0, 1.0}
