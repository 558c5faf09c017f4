"""One simulated episode's life, ROS-free: `settling` -> `running` -> `done`.

After a reset the robot is held at its start pose (`settling`) until `settle_s` of sim time
passed *and* the incoming command is zero, so the previous episode's motion can never leak into
the next; then it is `running` and the world steps on the latest command. A command older than
`command_timeout_s` counts as zero, as a base controller's own watchdog does. The world's
result ends the episode (`done`). The sim node only wires this to topics: it publishes the
instruction on `running`, clears it on `done`, and reports `status()` as `~/episode`.
"""

from __future__ import annotations

import math
from typing import Any

from vla_ros.sim.robots import SimRobot
from vla_ros.sim.scenario import Scenario

LIVE_STATES = ("settling", "running")


class Episode:
    """The scenario, world and command of the episode a reset started."""

    def __init__(
        self, robot: SimRobot, world: Any, scenario: Scenario, instruction: str, now: float
    ) -> None:
        self.robot = robot
        self.world = world
        self.scenario = scenario
        self.instruction = instruction
        self.state = "settling"
        self.since = now
        self.frames = 0
        self.command: tuple[float, ...] = robot.zero_command()
        self.command_t = -math.inf
        self.gripper: float | None = None

    def take_command(self, command: tuple[float, ...], now: float) -> None:
        """The safety node's latest output for this robot, in its action space's axes."""
        self.command = command
        self.command_t = now

    def take_gripper(self, value: float) -> None:
        self.gripper = value

    def advance(self, now: float, settle_s: float, command_timeout_s: float) -> str | None:
        """One sim step at time `now`; the state it moved to, or None."""
        fresh = now - self.command_t <= command_timeout_s
        command = self.command if fresh else self.robot.zero_command()
        if self.state == "settling":
            if now - self.since >= settle_s and not any(command):
                return self._enter("running", now)
        elif self.state == "running":
            action = (command, self.gripper) if self.robot.space.gripper else command
            if self.world.step(action).done:
                return self._enter("done", now)
        return None

    def abort(self) -> bool:
        """A reset while the episode lives: the world records the abort (its result says so).
        False if the episode had ended already."""
        if self.state not in LIVE_STATES:
            return False
        self.world.abort()
        return True

    def count_frame(self) -> None:
        """A camera frame went out; only those of the running episode count."""
        if self.state == "running":
            self.frames += 1

    def status(self, now: float) -> dict[str, Any]:
        """The `~/episode` report: state, layout, frames and the world's result so far."""
        layout = self.world.layout
        return {
            "state": self.state,
            "t": round(now, 6),
            "scenario": self.scenario.name,
            "source": self.scenario.source,
            "seed": layout.seed,
            "instruction": self.instruction,
            "robot": self.scenario.robot,
            "layout": {
                "start": layout.start,
                "cup": layout.cup,
                "boxes": [[b.x, b.y, b.yaw, *b.size] for b in layout.boxes],
                "blocks": [list(block) for block in layout.blocks],
            },
            "frames": self.frames,
            "result": self.world.result.as_dict(),
        }

    def _enter(self, state: str, now: float) -> str:
        self.state, self.since = state, now
        return state
