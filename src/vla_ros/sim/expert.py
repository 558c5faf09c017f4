"""Scripted mobile expert: waypoints around the boxes on the instructed side + pure pursuit.

The plan is start -> the outer corners of each box on the instructed side (grown by the robot
radius plus a clearance) -> the cup. Tracking is differential drive (vy = 0, what the deployed
safety limits allow): pure pursuit on a lookahead point, turning in place when the heading error
is large, slowing down near the goal and holding the acceleration the safety node allows.

Noise injection (`ExpertNoise`) perturbs the commands with smooth random noise and short
"drift" bursts while the robot is clear of the boxes, so recorded demonstrations contain
deviations and the expert's recoveries from them; `label` is the clean command for the same
pose, so a policy learns the recovery, not the noise. Everything is a function of the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vla_ros.sim.rules import side_corners
from vla_ros.sim.scenario import ROBOT_RADIUS_M, Layout, Scenario

if TYPE_CHECKING:
    from vla_ros.sim.world import MobileWorld


@dataclass(frozen=True)
class ExpertConfig:
    """Tracking gains and limits; speeds stay inside config/mobile.yaml's safety limits."""

    clearance_m: float = 0.35
    lookahead_m: float = 0.35
    max_speed: float = 0.4
    max_turn: float = 0.9
    turn_gain: float = 2.2
    turn_in_place_rad: float = 1.0
    max_accel: float = 0.45
    max_turn_accel: float = 1.4
    goal_slowdown_m: float = 0.5


@dataclass(frozen=True)
class NoiseConfig:
    """Command noise: OU noise (std, time constant) plus drift bursts (rate per second, length,
    turn rate), bursts only while every box is at least `burst_clearance_m` away."""

    speed_std: float = 0.05
    turn_std: float = 0.25
    tau_s: float = 0.5
    burst_rate_hz: float = 0.15
    burst_s: tuple[float, float] = (0.4, 1.0)
    burst_turn: float = 0.7
    burst_clearance_m: float = 0.6


def plan(layout: Layout, side: str, clearance_m: float) -> np.ndarray:
    """Waypoints (N, 2): start, corners around the boxes on `side`, cup."""
    corners = side_corners(layout, side, ROBOT_RADIUS_M + clearance_m)
    return np.array([layout.start[:2], *corners, layout.cup], dtype=float)


class MobileExpert:
    """`command(pose, dt)` -> body-frame (vx, vy, wz) for the scenario's instructed side."""

    def __init__(
        self,
        scenario: Scenario,
        layout: Layout,
        config: ExpertConfig | None = None,
        noise: NoiseConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.scenario = scenario
        self.layout = layout
        self.config = config or ExpertConfig()
        self.waypoints = plan(layout, scenario.side, self.config.clearance_m)
        self._segment = 0
        self._last = np.zeros(2)
        self._noise = noise
        self._rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED])
        self._ou = np.zeros(2)
        self._burst_left_s = 0.0
        self._burst_turn = 0.0
        self.label: tuple[float, float, float] = (0.0, 0.0, 0.0)
        """The clean command for the latest pose (no noise, no ramp): what a demonstration
        should teach, also while the noise has pushed the robot off the plan."""

    def _project(self, xy: np.ndarray) -> tuple[int, float]:
        """Nearest point on the remaining path (segments never go backwards)."""
        best = (self._segment, 0.0, math.inf)
        for index in range(self._segment, len(self.waypoints) - 1):
            a, b = self.waypoints[index], self.waypoints[index + 1]
            ab = b - a
            t = float(np.clip(np.dot(xy - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0))
            distance = float(np.linalg.norm(a + t * ab - xy))
            if distance < best[2] - 1e-9:
                best = (index, t, distance)
        return best[0], best[1]

    def _lookahead(self, xy: np.ndarray) -> np.ndarray:
        segment, t = self._project(xy)
        self._segment = segment
        remaining = self.config.lookahead_m
        a, b = self.waypoints[segment], self.waypoints[segment + 1]
        point = a + t * (b - a)
        while True:
            left = float(np.linalg.norm(b - point))
            if left >= remaining or segment + 2 >= len(self.waypoints):
                if left < 1e-9:
                    return b
                return point + (b - point) * min(1.0, remaining / left)
            remaining -= left
            segment += 1
            point, a, b = b, b, self.waypoints[segment + 1]

    def clearance(self, xy: np.ndarray) -> float:
        """Distance from the robot's edge to the nearest box."""
        return (
            min(
                (box.distance(float(xy[0]), float(xy[1])) for box in self.layout.boxes),
                default=math.inf,
            )
            - ROBOT_RADIUS_M
        )

    def command(self, pose: tuple[float, float, float], dt: float) -> tuple[float, float, float]:
        """The next command for the robot at `pose` (x, y, yaw), `dt` after the previous one."""
        cfg = self.config
        xy = np.array(pose[:2])
        goal = self.waypoints[-1]
        distance = float(np.linalg.norm(goal - xy))
        arrived = distance <= self.scenario.goal_tolerance_m * 0.5
        if arrived:
            wanted = np.zeros(2)
        else:
            target = self._lookahead(xy)
            heading = math.atan2(target[1] - xy[1], target[0] - xy[0])
            error = math.atan2(math.sin(heading - pose[2]), math.cos(heading - pose[2]))
            turn = float(np.clip(cfg.turn_gain * error, -cfg.max_turn, cfg.max_turn))
            speed = 0.0
            if abs(error) < cfg.turn_in_place_rad:
                speed = cfg.max_speed * math.cos(error) ** 2
                speed = min(speed, cfg.max_speed * max(0.25, distance / cfg.goal_slowdown_m))
            wanted = np.array([speed, turn])
        self.label = (float(wanted[0]), 0.0, float(wanted[1]))
        if self._noise is not None and not arrived:
            wanted = wanted + self._perturb(xy, dt)
            wanted[0] = max(0.0, wanted[0])
        limits = np.array([cfg.max_accel, cfg.max_turn_accel]) * max(dt, 1e-6)
        self._last = self._last + np.clip(wanted - self._last, -limits, limits)
        return (float(self._last[0]), 0.0, float(self._last[1]))

    def _perturb(self, xy: np.ndarray, dt: float) -> np.ndarray:
        noise = self._noise
        assert noise is not None
        decay = math.exp(-dt / noise.tau_s)
        scale = math.sqrt(1.0 - decay**2)
        self._ou = self._ou * decay + scale * self._rng.standard_normal(2) * (
            noise.speed_std,
            noise.turn_std,
        )
        if self._burst_left_s > 0.0:
            self._burst_left_s -= dt
        elif (
            self.clearance(xy) > noise.burst_clearance_m
            and self._rng.random() < noise.burst_rate_hz * dt
        ):
            self._burst_left_s = float(self._rng.uniform(*noise.burst_s))
            self._burst_turn = float(self._rng.choice([-1.0, 1.0])) * noise.burst_turn
        burst = self._burst_turn if self._burst_left_s > 0.0 else 0.0
        return self._ou + np.array([0.0, burst])


def run_expert(
    world: MobileWorld,
    seed: int,
    *,
    noise: NoiseConfig | None = None,
    max_steps: int | None = None,
) -> list[tuple[float, float, float]]:
    """Drive `world` for one episode with the expert, in process and without ROS; returns the
    pose after every step (the trajectory). The result is on `world.result`."""
    layout = world.reset(seed)
    expert = MobileExpert(world.scenario, layout, noise=noise, seed=seed)
    steps = max_steps if max_steps is not None else int(world.scenario.time_limit_s / world.dt) + 2
    poses = []
    for _ in range(steps):
        result = world.step(expert.command(world.odom().pose, world.dt))
        poses.append(world.odom().pose)
        if result.done:
            break
    return poses
