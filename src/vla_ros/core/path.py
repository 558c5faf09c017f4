"""The predicted chunk as a path of poses, for RViz and Foxglove (`nav_msgs/Path`).

A mobile base's (vx, vy, wz) are body-frame velocities, so the path is integrated in the plane
with the heading turning as it goes; an arm's twist is the end-effector velocity in the base
frame, so positions add up directly and the orientation integrates as a rotation vector.
"""

from __future__ import annotations

import math

import numpy as np

Pose = tuple[tuple[float, float, float], tuple[float, float, float, float]]
"""(x, y, z), (qx, qy, qz, qw)."""


def _quaternion(rotation_vector: np.ndarray) -> tuple[float, float, float, float]:
    angle = float(np.linalg.norm(rotation_vector))
    if angle < 1e-12:
        return (0.0, 0.0, 0.0, 1.0)
    axis = rotation_vector / angle
    s = math.sin(angle / 2.0)
    return (float(axis[0] * s), float(axis[1] * s), float(axis[2] * s), math.cos(angle / 2.0))


def planar_path(motion: np.ndarray, period_s: float) -> list[Pose]:
    """Poses at the start and after each action of a (chunk, 3) vx, vy, wz chunk."""
    x = y = yaw = 0.0
    poses: list[Pose] = [((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))]
    for vx, vy, wz in np.asarray(motion, dtype=float):
        x += (vx * math.cos(yaw) - vy * math.sin(yaw)) * period_s
        y += (vx * math.sin(yaw) + vy * math.cos(yaw)) * period_s
        yaw += wz * period_s
        poses.append(((x, y, 0.0), (0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0))))
    return poses


def spatial_path(linear: np.ndarray, angular: np.ndarray, period_s: float) -> list[Pose]:
    """Poses from (chunk, 3) linear and angular velocities given in the path's own frame."""
    position = np.zeros(3)
    rotation = np.zeros(3)
    poses: list[Pose] = [((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))]
    for v, w in zip(np.asarray(linear, dtype=float), np.asarray(angular, dtype=float), strict=True):
        position = position + v * period_s
        rotation = rotation + w * period_s
        poses.append((tuple(float(p) for p in position), _quaternion(rotation)))  # type: ignore[misc]
    return poses
