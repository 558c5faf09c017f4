"""Simulated robots by name: one `register` call says which world, expert and recorded topics a
robot has. Its name is its action space's (`vla_ros.action_space`), whose topics, axes and
Twist packing the sim node, the expert node and `sim eval` take from there.

ROS-free; the nodes and `vla_ros.evaluate` read it, so adding a robot is one registration here
plus its world/expert module and a scenario file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vla_ros import action_space as action_spaces
from vla_ros.sim.arm import ArmExpert, ArmWorld
from vla_ros.sim.expert import MobileExpert, NoiseConfig
from vla_ros.sim.scenario import Layout, Scenario
from vla_ros.sim.world import MobileWorld

ARM_EXPERT_NOISE = 0.15
"""ArmExpert noise scale for noisy demonstrations: a drift of about 2 cm in the approach, so the
demonstrations cover off-path poses and, with the clean label, how to come back from them."""


@dataclass(frozen=True)
class SimRobot:
    """`world(scenario, dt=, image_size=)` builds its world; `expert(scenario, layout, seed,
    noisy)` its scripted expert. `state_topic` is the pose it publishes (odometry or the end
    effector's) and `demo_topics` what `sim collect` records besides the camera."""

    name: str
    world: Callable[..., Any]
    expert: Callable[..., Any]
    state_topic: str
    demo_topics: tuple[str, ...]

    @property
    def space(self) -> action_spaces.ActionSpaceSpec:
        return action_spaces.get(self.name)

    def command_topics(self) -> tuple[str, ...]:
        """The safety node's outputs and the raw commands before it, as an episode records them."""
        space = self.space
        topics = ["/" + space.output_topic]
        if space.gripper:
            topics.append("/" + action_spaces.GRIPPER_TOPIC)
        topics.append("/" + space.raw_topic)
        if space.gripper:
            topics.append("/" + action_spaces.GRIPPER_RAW_TOPIC)
        return tuple(topics)

    def zero_command(self) -> tuple[float, ...]:
        return (0.0,) * self.space.dof


REGISTRY: dict[str, SimRobot] = {}


def register(robot: SimRobot) -> SimRobot:
    action_spaces.get(robot.name, "robot")  # a robot drives a registered action space
    if robot.name in REGISTRY:
        raise ValueError(f"sim robot {robot.name!r} is registered already")
    REGISTRY[robot.name] = robot
    return robot


def get(name: str) -> SimRobot:
    """The robot of an action space (aliases accepted); ValueError naming the simulated ones."""
    canonical = action_spaces.canonical(name, "robot")
    if canonical not in REGISTRY:
        raise ValueError(f"no simulated robot for {canonical!r}; simulated: {sorted(REGISTRY)}")
    return REGISTRY[canonical]


def _mobile_expert(scenario: Scenario, layout: Layout, seed: int, noisy: bool) -> MobileExpert:
    return MobileExpert(scenario, layout, noise=NoiseConfig() if noisy else None, seed=seed)


def _arm_expert(scenario: Scenario, layout: Layout, seed: int, noisy: bool) -> ArmExpert:
    return ArmExpert(scenario, layout, seed=seed, noise=ARM_EXPERT_NOISE if noisy else 0.0)


register(SimRobot("mobile3", MobileWorld, _mobile_expert, "/odom", ("/scan", "/vla/cmd_expert")))
register(SimRobot("arm7", ArmWorld, _arm_expert, "/vla/ee_pose", ("/vla/arm_cmd_expert",)))
