"""The episode state machine of the sim node (ROS-free): settle, run, end, abort."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from vla_ros.sim import robots
from vla_ros.sim.episode import Episode
from vla_ros.sim.scenario import resolve_scenarios


@dataclass
class Result:
    done: bool = False

    def as_dict(self) -> dict:
        return {"done": self.done}


@dataclass
class RecordingWorld:
    """Records the actions it is stepped with; ends the episode after `steps_to_done`."""

    steps_to_done: int = 3
    actions: list = field(default_factory=list)
    aborted: bool = False
    result: Result = field(default_factory=Result)
    layout: object = None

    def step(self, action):
        self.actions.append(action)
        self.result = Result(len(self.actions) >= self.steps_to_done)
        return self.result

    def abort(self):
        self.aborted = True


def _episode(robot="mobile3", world=None):
    scenario = resolve_scenarios("mobile" if robot == "mobile3" else "arm")[0]
    return Episode(robots.get(robot), world or RecordingWorld(), scenario, "go", now=0.0)


def test_settling_waits_for_the_settle_time_and_a_zero_command():
    episode = _episode()
    assert episode.advance(0.5, settle_s=1.0, command_timeout_s=0.2) is None
    episode.take_command((0.3, 0.0, 0.0), now=1.0)
    assert episode.advance(1.1, 1.0, 0.2) is None, "moving: the previous episode's motion"
    assert episode.state == "settling"
    # The moving command goes stale (a controller watchdog reads it as zero): now it may run.
    assert episode.advance(1.3, 1.0, 0.2) == "running"
    assert episode.world.actions == [], "the world does not step while settling"


def test_running_steps_the_world_with_the_fresh_command_until_it_ends():
    episode = _episode()
    assert episode.advance(1.0, 0.0, 0.2) == "running"
    episode.take_command((0.4, 0.0, 0.1), now=1.0)
    assert episode.advance(1.1, 0.0, 0.2) is None
    assert episode.advance(1.5, 0.0, 0.2) is None  # 0.5 s old: zero
    assert episode.advance(1.6, 0.0, 0.2) == "done"
    assert episode.world.actions == [(0.4, 0.0, 0.1), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)]
    assert episode.advance(1.7, 0.0, 0.2) is None
    assert len(episode.world.actions) == 3, "an ended episode does not step"


def test_a_robot_with_a_gripper_steps_with_its_gripper_command():
    episode = _episode("arm7")
    episode.advance(0.0, 0.0, 0.2)
    episode.take_command((0.1,) * 6, now=0.0)
    episode.take_gripper(1.0)
    episode.advance(0.1, 0.0, 0.2)
    assert episode.world.actions == [((0.1,) * 6, 1.0)]


@pytest.mark.parametrize(("steps", "live"), [(0, True), (1, True), (4, False)])
def test_only_a_live_episode_is_aborted(steps, live):
    episode = _episode(world=RecordingWorld(steps_to_done=3))
    for step in range(steps):
        episode.advance(float(step), 0.0, 0.2)
    assert episode.abort() is live
    assert episode.world.aborted is live


def test_frames_count_only_while_running():
    episode = _episode()
    episode.count_frame()
    episode.advance(0.0, 0.0, 0.2)
    episode.count_frame()
    episode.count_frame()
    assert episode.frames == 2
