"""The action-space registry: one table that policy, codec, safety, nodes, bag tools and CLI read.

The `arm6` tests register a third space (a 6-DOF arm without gripper) here, in the test, plus a
parameter file in a temporary directory, and then run the real tiny PaliGemma policy, the codec,
the safety core, the three nodes over DDS and the bag checker on it: no node, codec or safety
code knows that space by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from vla_ros import action_space as action_spaces
from vla_ros.action_space import ActionSpaceSpec

ROOT = Path(__file__).resolve().parents[1]

ARM6 = ActionSpaceSpec(
    name="arm6",
    aliases=("arm-nogripper",),
    axes=("vx", "vy", "vz", "wx", "wy", "wz"),
    platform="arm",
    gripper=False,
    stamped=True,
    raw_topic="vla/arm_cmd_raw",
    output_topic="servo_node/delta_twist_cmds",
    params_file="arm6.yaml",
    max_velocity=(0.2, 0.2, 0.2, 0.6, 0.6, 0.6),
    max_accel=(0.5, 0.5, 0.5, 1.6, 1.6, 1.6),
    max_decel=(1.0, 1.0, 1.0, 3.2, 3.2, 3.2),
    description="end-effector TwistStamped, no gripper",
)


@pytest.fixture
def arm6() -> Iterator[ActionSpaceSpec]:
    action_spaces.register(ARM6)
    try:
        yield ARM6
    finally:
        action_spaces.unregister("arm6")


def arm6_params_file(directory: Path) -> Path:
    """config/arm.yaml with mode arm6: the "config file" a new action space brings."""
    sections = yaml.safe_load((ROOT / "config" / "arm.yaml").read_text(encoding="utf-8"))
    sections["vla_inference"]["ros__parameters"]["action_space"] = "arm6"
    safety = sections["vla_safety"]["ros__parameters"]
    safety["mode"] = "arm6"
    path = directory / "arm6.yaml"
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------- registry


def test_aliases_resolve_to_one_canonical_spelling():
    assert action_spaces.canonical("mobile") == action_spaces.canonical("mobile3") == "mobile3"
    assert action_spaces.canonical(" arm ") == "arm7"
    assert set(action_spaces.names()) == {"mobile3", "arm7"}
    assert set(action_spaces.choices()) == {"mobile3", "arm7", "mobile", "arm"}
    with pytest.raises(ValueError, match=r"mode must be one of mobile3 \(mobile\), arm7 \(arm\)"):
        action_spaces.canonical("hexapod")
    with pytest.raises(ValueError, match="already registered"):
        action_spaces.register(ARM6.__class__(**{**vars(ARM6), "name": "x", "aliases": ("arm",)}))


def test_a_space_that_cannot_be_packed_into_a_twist_is_refused():
    with pytest.raises(ValueError, match="ordered subset"):
        ActionSpaceSpec(**{**vars(ARM6), "axes": ("wz", "vx")})
    with pytest.raises(ValueError, match="max_velocity needs 6 positive"):
        ActionSpaceSpec(**{**vars(ARM6), "max_velocity": (1.0,)})


def test_every_table_reads_the_registry():
    from vla_ros.bag.report import AXES
    from vla_ros.policy.types import MOTION_DOF
    from vla_ros.safety.config import ANGULAR_AXES, AXIS_NAMES, LINEAR_AXES, MODES, TWIST_INDEX

    for name in action_spaces.names():
        space = action_spaces.get(name)
        assert MOTION_DOF[name] == space.dof == len(AXIS_NAMES[name]) == len(AXES[name])
        assert LINEAR_AXES[name] + ANGULAR_AXES[name] == tuple(range(space.dof))
        assert TWIST_INDEX[name] == space.twist_index
    assert list(MODES) == list(action_spaces.choices())
    assert action_spaces.get("mobile3").units == ("m/s", "m/s", "rad/s")


MODE_BRANCH = re.compile(
    r"""(mode|space|detected)\w*\s*(==|!=)\s*["'](mobile3|arm7|mobile|arm)["']"""
)


def test_no_module_branches_on_a_mode_name():
    """What the registry replaces: `if mode == "arm7"` style branches anywhere in the package."""
    offenders = []
    for path in sorted((ROOT / "src" / "vla_ros").rglob("*.py")) + sorted(
        (ROOT / "launch").glob("*.py")
    ):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if MODE_BRANCH.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("name", ["mobile3", "arm7"])
@given(data=st.data())
def test_twist_packing_round_trips(name: str, data: st.DataObject):
    from vla_ros.policy.codec import motion_to_twist_fields, twist_fields_to_motion

    space = action_spaces.get(name)
    motion = data.draw(
        st.lists(st.floats(-10, 10, allow_nan=False), min_size=space.dof, max_size=space.dof).map(
            np.array
        )
    )
    linear, angular = motion_to_twist_fields(motion, name)
    unused = [i for i in range(6) if i not in space.twist_index]
    assert all((*linear, *angular)[i] == 0.0 for i in unused)
    assert twist_fields_to_motion(linear, angular, name).tolist() == motion.tolist()


SPACES = st.builds(
    lambda axes, platform, gripper, stamped, limits: ActionSpaceSpec(
        name="generated",
        aliases=("gen",),
        axes=axes,
        platform=platform,
        gripper=gripper,
        stamped=stamped,
        raw_topic="vla/gen_raw",
        output_topic="gen_cmd",
        params_file="gen.yaml",
        max_velocity=tuple(limits[: len(axes)]),
        max_accel=tuple(2 * v for v in limits[: len(axes)]),
        max_decel=tuple(3 * v for v in limits[: len(axes)]),
        description="generated",
    ),
    st.lists(st.sampled_from(action_spaces.TWIST_AXES), min_size=1, max_size=6, unique=True).map(
        lambda picked: tuple(a for a in action_spaces.TWIST_AXES if a in picked)
    ),
    st.sampled_from(action_spaces.PLATFORMS),
    st.booleans(),
    st.booleans(),
    st.lists(st.floats(0.05, 2.0), min_size=6, max_size=6),
)


@given(space=SPACES, commands=st.lists(st.lists(st.floats(-5, 5), min_size=6, max_size=6)))
def test_any_registered_space_gets_a_working_safety_core(space, commands):
    """Property: whatever axes a registered space has, its defaults validate and every output
    stays inside them, with a gripper output only where the space has a gripper."""
    from vla_ros.safety.config import SafetyConfig
    from vla_ros.safety.validator import SafetyValidator

    action_spaces.register(space)
    try:
        config = SafetyConfig.for_mode("gen")
        config.validate()
        core = SafetyValidator(config)
        for step, six in enumerate(commands):
            now = 10.0 + 0.02 * step
            motion = space.from_twist(six)
            core.submit_command(motion, now if space.stamped else None, "base_link", now)
            output = core.step(now)
            assert len(output.motion) == space.dof
            assert all(
                abs(v) <= limit + 1e-9
                for v, limit in zip(output.motion, space.max_velocity, strict=True)
            )
            assert output.gripper is None or space.gripper
    finally:
        action_spaces.unregister("generated")


# -------------------------------------------------------------------------- a third space: arm6


def test_cli_accepts_a_registered_space_everywhere(arm6):
    from vla_ros.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["bringup", "--model-dir", "m", "--mode", "arm-nogripper"]).mode == (
        "arm6"
    )
    assert parser.parse_args(["make-tiny-model", "o", "--mode", "arm6"]).mode == "arm6"
    assert parser.parse_args(["bag", "check", "b", "--mode", "arm6"]).mode == "arm6"


def test_codec_and_safety_core_handle_arm6(arm6):
    from vla_ros.policy.codec import motion_to_twist_fields
    from vla_ros.safety.config import SafetyConfig, param_names
    from vla_ros.safety.validator import SafetyValidator

    assert motion_to_twist_fields([1, 2, 3, 4, 5, 6], "arm6") == ((1, 2, 3), (4, 5, 6))
    config = SafetyConfig.for_mode("arm-nogripper")
    config.validate()
    assert config.mode == "arm6"
    assert config.max_velocity == ARM6.max_velocity
    assert "workspace_min" in param_names("arm6")
    assert "stop_zone" not in param_names("arm6")
    core = SafetyValidator(config)
    assert not core.submit_command((1.0,) * 6, None, None, 100.0).accepted, "unstamped arm input"
    assert core.submit_command((1.0,) * 6, 100.0, "base_link", 100.0).accepted
    assert core.submit_gripper(1.0, 100.0).code == "no_gripper"
    for step in range(1, 20):
        output = core.step(100.0 + step * 0.02)
        assert output.gripper is None
        assert all(
            abs(v) <= limit + 1e-9
            for v, limit in zip(output.motion, ARM6.max_velocity, strict=True)
        )
    assert all(v > 0 for v in output.motion), "accelerating towards the clamped command"


def test_bag_checker_checks_arm6_traces(arm6):
    from vla_ros.safety.config import SafetyConfig
    from vla_ros.safety.invariants import TraceSample, check_trace

    config = SafetyConfig.for_mode("arm6")
    fast = [
        TraceSample(t=0.02 * i, motion=(0.0,) * 5 + (5.0,), last_valid_input_t=0.0) for i in (1, 2)
    ]
    assert {v.kind for v in check_trace(config, fast)} >= {"velocity_limit"}


@pytest.mark.ros
@pytest.mark.usefixtures("torch_one_thread")
def test_tiny_policy_and_stack_run_arm6(arm6, tmp_path: Path, spin_until):
    """The real tiny PaliGemma + the three nodes over DDS, in a space no module names."""
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.context import Context
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from vla_ros.bringup import StackOptions, build_stack, ros_args_for
    from vla_ros.policy.model import VLAPolicy
    from vla_ros.policy.tiny import make_tiny_model
    from vla_ros.policy.types import chunk_problem
    from vla_ros.safety.config import twist_vector
    from vla_ros.transport import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, make_executor

    model_dir = make_tiny_model(tmp_path / "tiny_arm6", "arm6", seed=3)
    policy = VLAPolicy.from_pretrained(model_dir)
    chunk = policy.step(np.zeros((64, 64, 3), dtype=np.uint8), "reach the cup")
    assert chunk.motion.shape == (policy.spec.chunk, 6)
    assert chunk.gripper is None
    assert chunk_problem(chunk, policy.spec) is None
    policy.reset()

    params_file = arm6_params_file(tmp_path)
    limits = yaml.safe_load(params_file.read_text())["vla_safety"]["ros__parameters"]
    options = StackOptions(mode="arm6", model_dir=str(model_dir), params_file=str(params_file))
    context = Context()
    rclpy.init(args=ros_args_for(options), context=context)
    nodes = build_stack(context, options, policy=policy)
    peer = Node("arm6_peer", context=context)
    executor = make_executor(context)
    try:
        for node in [*nodes, peer]:
            executor.add_node(node)
        commands: list[TwistStamped] = []
        peer.create_subscription(
            TwistStamped, "servo_node/delta_twist_cmds", commands.append, COMMAND_QOS
        )
        camera = peer.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
        instruction = peer.create_publisher(String, "vla/instruction", LATCHED_QOS)
        frame = [0]

        def publish_frame() -> None:
            frame[0] += 1
            image = np.full((96, 128, 3), 30 + 20 * (frame[0] // 5 % 8), dtype=np.uint8)
            msg = Image(height=96, width=128, encoding="rgb8", step=384, data=image.tobytes())
            msg.header.stamp = peer.get_clock().now().to_msg()
            camera.publish(msg)

        peer.create_timer(1 / 15, publish_frame)
        instruction.publish(String(data="reach the cup"))
        assert spin_until(executor, lambda: any(any(twist_vector(c)) for c in commands), 40.0), (
            "no arm6 command reached the robot topic"
        )
        topics = dict(peer.get_topic_names_and_types())
        assert "/gripper/command" not in topics
        assert "/vla/gripper_raw" not in topics
        for command in commands:
            assert command.header.frame_id == "base_link"
            motion = twist_vector(command)
            assert all(v <= m + 1e-9 for v, m in zip(motion, limits["max_velocity"], strict=True))
            assert all(v >= m - 1e-9 for v, m in zip(motion, limits["min_velocity"], strict=True))
    finally:
        executor.shutdown()
        for node in [*nodes, peer]:
            node.destroy_node()
        rclpy.shutdown(context=context)
