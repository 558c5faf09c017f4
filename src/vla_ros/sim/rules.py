"""Success rules of an episode, computed from the pose trace the world reports each step.

Mobile: goal reached (robot centre within `goal_tolerance_m` of the cup), collision (any contact
of the robot with a box), timeout, compliance (each box passed on the instructed side: the side
of the box the robot was on when its progress along the start->cup line crossed the box centre),
path length and SPL. Success = goal reached, no collision, compliant, before the time limit.
SPL = success * shortest / max(path, shortest) (Anderson et al. 2018), where `shortest` is the
polyline start -> the box corners on the instructed side (grown by the robot radius) -> the goal
circle, a lower bound of any collision-free path on that side.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vla_ros.sim.scenario import ROBOT_RADIUS_M, Layout, Scenario

SIDE_SIGN = {"left": 1.0, "right": -1.0}


@dataclass
class EpisodeOutcome:
    """What every episode (mobile or arm) ends with; `outcome` is running or how it ended."""

    scenario: str
    seed: int
    outcome: str = "running"
    success: bool = False
    reached: bool = False
    collision: bool = False
    timeout: bool = False
    compliant: bool = False
    path_length_m: float = 0.0
    shortest_m: float = 0.0
    spl: float = 0.0
    time_s: float = 0.0
    final_distance_m: float = math.inf

    @property
    def done(self) -> bool:
        return self.outcome != "running"

    def finish(self, outcome: str) -> None:
        """The one finish rule of every robot: success is the "success" outcome, and only a
        success scores SPL (shortest path over the path driven, at most 1)."""
        self.outcome = outcome
        self.success = outcome == "success"
        if self.success:
            self.spl = self.shortest_m / max(self.path_length_m, self.shortest_m)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpisodeResult(EpisodeOutcome):
    """One mobile episode; `outcome` is running | success | collision | timeout | wrong_side |
    aborted; `sides` says on which side each box was passed."""

    sides: list[str | None] = field(default_factory=list)


def route_frame(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Origin (the start) and unit direction of the start -> cup line."""
    origin = np.array(layout.start[:2])
    direction = np.array(layout.cup) - origin
    return origin, direction / np.linalg.norm(direction)


def side_corners(layout: Layout, side: str, inflate: float) -> list[np.ndarray]:
    """For each box in route order, its two footprint corners (grown by `inflate`) furthest to
    `side` of the route line, in route order: the points a path on that side must go around."""
    origin, u = route_frame(layout)
    normal = np.array([-u[1], u[0]]) * SIDE_SIGN[side]
    points = []
    for box in sorted(layout.boxes, key=lambda b: float(np.dot([b.x, b.y] - origin, u))):
        corners = box.corners(inflate)
        lateral = (corners - origin) @ normal
        outer = corners[np.argsort(lateral)[-2:]]
        progress = (outer - origin) @ u
        points += list(outer[np.argsort(progress)])
    return points


def shortest_length(layout: Layout, side: str, goal_tolerance: float) -> float:
    """Length of the polyline start -> side corners (grown by the robot radius) -> goal circle."""
    points = [np.array(layout.start[:2]), *side_corners(layout, side, ROBOT_RADIUS_M)]
    length = sum(float(np.linalg.norm(b - a)) for a, b in itertools.pairwise(points))
    to_goal = float(np.linalg.norm(np.array(layout.cup) - points[-1]))
    return length + max(0.0, to_goal - goal_tolerance)


class MobileEpisode:
    """Follows one mobile episode step by step; `update` returns the (possibly final) result."""

    def __init__(self, scenario: Scenario, layout: Layout) -> None:
        self.scenario = scenario
        self.layout = layout
        self._origin, self._u = route_frame(layout)
        self._box_progress = [
            float(np.dot(np.array([b.x, b.y]) - self._origin, self._u)) for b in layout.boxes
        ]
        self._last_xy: np.ndarray | None = None
        self.trajectory: list[tuple[float, float]] = []
        self.result = EpisodeResult(
            scenario.name,
            layout.seed,
            sides=[None] * len(layout.boxes),
            shortest_m=shortest_length(layout, scenario.side, scenario.goal_tolerance_m),
        )

    def _box_side(self, index: int, xy: np.ndarray) -> str:
        box = self.layout.boxes[index]
        offset = xy - np.array([box.x, box.y])
        cross = self._u[0] * offset[1] - self._u[1] * offset[0]
        return "left" if cross > 0 else "right"

    def update(self, t: float, x: float, y: float, contact: bool) -> EpisodeResult:
        """Feed the pose after a step (t = seconds since the episode started)."""
        result = self.result
        if result.done:
            return result
        xy = np.array([x, y])
        self.trajectory.append((x, y))
        if self._last_xy is not None:
            result.path_length_m += float(np.linalg.norm(xy - self._last_xy))
            before = float(np.dot(self._last_xy - self._origin, self._u))
            now = float(np.dot(xy - self._origin, self._u))
            for index, progress in enumerate(self._box_progress):
                if result.sides[index] is None and before < progress <= now:
                    result.sides[index] = self._box_side(index, xy)
        self._last_xy = xy
        result.time_s = t
        result.final_distance_m = float(np.linalg.norm(xy - np.array(self.layout.cup)))
        result.compliant = all(side == self.scenario.side for side in result.sides)
        if contact:
            result.collision = True
            result.finish("collision")
        elif result.final_distance_m <= self.scenario.goal_tolerance_m:
            result.reached = True
            result.finish("success" if result.compliant else "wrong_side")
        elif t >= self.scenario.time_limit_s:
            result.timeout = True
            result.finish("timeout")
        return result

    def abort(self) -> EpisodeResult:
        """The episode was cut short (a reset mid-episode, the run stopped)."""
        if not self.result.done:
            self.result.finish("aborted")
        return self.result
