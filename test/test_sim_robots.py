"""The simulated-robot registry: every scenario's robot is registered, its recorded topics come
from its action space, and a new robot is a registration (with its action space's)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from vla_ros import action_space as action_spaces
from vla_ros.evaluate import COMMON_TOPICS, record_topics
from vla_ros.sim import robots
from vla_ros.sim.scenario import resolve_scenarios


def test_every_built_in_scenario_has_a_registered_robot_whose_world_builds():
    for scenario in resolve_scenarios("all"):
        robot = robots.get(scenario.robot)
        assert robot.space.name == scenario.robot
        world = robot.world(scenario, dt=0.02, image_size=32)
        world.reset(0)
        assert len(robot.zero_command()) == robot.space.dof


def test_an_episode_records_the_action_space_s_topics():
    assert record_topics("mobile3") == ("/cmd_vel", "/vla/cmd_raw", "/odom", *COMMON_TOPICS)
    arm = record_topics("arm", demonstrations=True)
    assert arm[:5] == (
        "/servo_node/delta_twist_cmds",
        "/gripper/command",
        "/vla/arm_cmd_raw",
        "/vla/gripper_raw",
        "/vla/ee_pose",
    )
    assert arm[-2:] == ("/camera/image_raw", "/vla/arm_cmd_expert")


def test_unknown_robots_are_refused_by_name():
    with pytest.raises(ValueError, match="robot must be one of"):
        robots.get("hexapod")
    with pytest.raises(ValueError, match="registered already"):
        robots.register(robots.get("mobile3"))


@dataclass
class _ToyWorld:
    scenario: object
    dt: float = 0.02
    image_size: int = 32


def test_a_new_robot_is_two_registrations():
    """A base that only turns (wz): its action space and its sim robot; the episode topics
    follow without another edit."""
    space = replace(
        action_spaces.get("mobile3"),
        name="turntable",
        aliases=(),
        axes=("wz",),
        raw_topic="vla/turn_raw",
        output_topic="turn_cmd",
        max_velocity=(1.0,),
        max_accel=(2.0,),
        max_decel=(3.0,),
    )
    action_spaces.register(space)
    try:
        robots.register(
            robots.SimRobot("turntable", _ToyWorld, lambda *args: None, "/turn_state", ())
        )
        assert record_topics("turntable") == (
            "/turn_cmd",
            "/vla/turn_raw",
            "/turn_state",
            *COMMON_TOPICS,
        )
        assert robots.get("turntable").zero_command() == (0.0,)
    finally:
        robots.REGISTRY.pop("turntable", None)
        action_spaces.unregister("turntable")
    with pytest.raises(ValueError, match="robot must be one of"):
        robots.register(robots.SimRobot("unregistered", _ToyWorld, print, "/x", ()))
