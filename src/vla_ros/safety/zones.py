"""Planar geometry for the mobile robot: laser-scan obstacle zones and the odometry geofence.

Semantics follow nav2_collision_monitor (stop / slowdown / approach by time-to-collision) with two
differences: the stop zone lets the robot escape (motion that takes no obstacle point deeper is
allowed, so touching a wall never wedges it), and every zone only shapes the target velocity; the
validator's deceleration limit still applies on the way down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_EPS = 1e-6
# The lookahead is checked at sub-steps at most a quarter of a zone's width apart (and never
# further than 5 cm), so a long horizon cannot carry a point from one side of a zone to the
# other between two checks; the count is bounded to keep the 50 Hz output cheap.
_MAX_SUBSTEP_M = 0.05
_MIN_SUBSTEP_M = 0.005
_MAX_SUBSTEPS = 256


def polygon(flat: Sequence[float]) -> np.ndarray:
    """(N, 2) vertices from a flat [x1, y1, x2, y2, ...] parameter list."""
    return np.asarray(flat, dtype=float).reshape(-1, 2)


def inside(poly: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon for (M, 2) points; a bounding-box test prunes first."""
    result = np.zeros(len(points), dtype=bool)
    if len(points) == 0:
        return result
    boxed = np.all((points >= poly.min(axis=0)) & (points <= poly.max(axis=0)), axis=1)
    if not boxed.any():
        return result
    x, y = points[boxed, 0:1], points[boxed, 1:2]
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    crosses = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    result[boxed] = np.logical_and(crosses, x < x_cross).sum(axis=1) % 2 == 1
    return result


def boundary_distance(poly: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest polygon edge."""
    start = poly
    edge = np.roll(poly, -1, axis=0) - poly
    length2 = np.maximum((edge**2).sum(axis=1), 1e-18)
    rel = points[:, None, :] - start[None, :, :]
    t = np.clip((rel * edge[None]).sum(axis=2) / length2, 0.0, 1.0)
    nearest = start[None] + t[..., None] * edge[None]
    return np.sqrt(((points[:, None, :] - nearest) ** 2).sum(axis=2)).min(axis=1)


def depth(poly: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How far each point is inside the polygon (distance to its boundary), 0 outside."""
    result = np.zeros(len(points))
    if len(points):
        mask = inside(poly, points)
        if mask.any():
            result[mask] = boundary_distance(poly, points[mask])
    return result


def radius(poly: np.ndarray) -> float:
    """Largest distance from the origin to any point of the polygon (its farthest vertex)."""
    return float(np.sqrt((poly**2).sum(axis=1)).max())


def width(poly: np.ndarray) -> float:
    """Smallest extent of the polygon across any of its edges' directions (its width if convex)."""
    edge = np.roll(poly, -1, axis=0) - poly
    length = np.maximum(np.hypot(edge[:, 0], edge[:, 1]), 1e-18)
    rel = poly[None, :, :] - poly[:, None, :]
    across = (
        np.abs(edge[:, None, 0] * rel[..., 1] - edge[:, None, 1] * rel[..., 0]) / length[:, None]
    )
    return float(across.max(axis=1).min())


def near(points: np.ndarray, reach: float) -> np.ndarray:
    """The points within `reach` of the origin: the only ones a zone of that radius can hold."""
    return points[(points**2).sum(axis=1) <= reach * reach]


def project(points: np.ndarray, vx: float, vy: float, wz: float, t: float) -> np.ndarray:
    """Where world-fixed points appear in the robot frame after `t` s of a constant twist."""
    theta = wz * t
    if abs(wz) < 1e-9:
        dx, dy = vx * t, vy * t
    else:
        dx = (vx * math.sin(theta) - vy * (1.0 - math.cos(theta))) / wz
        dy = (vx * (1.0 - math.cos(theta)) + vy * math.sin(theta)) / wz
    c, s = math.cos(theta), math.sin(theta)
    sx, sy = points[:, 0] - dx, points[:, 1] - dy
    return np.column_stack((c * sx + s * sy, c * sy - s * sx))


def scan_problem(
    count: int, angle_min: float, angle_increment: float, range_min: float, range_max: float
) -> str | None:
    """Why a LaserScan's geometry cannot be read (None if it can): malformed = missing data."""
    if count == 0:
        return "no ranges"
    values = (angle_min, angle_increment, range_min, range_max)
    if not all(math.isfinite(x) for x in values):
        return f"non-finite geometry {values}"
    if angle_increment == 0.0:
        return "angle_increment is 0"
    if range_min < 0.0 or range_min > range_max:
        return f"range_min {range_min} / range_max {range_max}"
    return None


def scan_points(
    ranges: Sequence[float] | np.ndarray,
    angle_min: float,
    angle_increment: float,
    range_min: float,
    range_max: float,
    scan_pose: Sequence[float],
) -> np.ndarray:
    """LaserScan returns as (N, 2) base-frame points, read per REP 117: -inf is an object closer
    than range_min (kept, at range_min), +inf no return and NaN an erroneous reading (dropped),
    finite values outside [range_min, range_max] dropped."""
    values = np.asarray(ranges, dtype=float)
    angles = angle_min + angle_increment * np.arange(len(values))
    values = np.where(np.isneginf(values), range_min, values)
    valid = np.isfinite(values) & (values >= range_min) & (values <= range_max)
    values, angles = values[valid], angles[valid]
    x0, y0, yaw = scan_pose
    return np.column_stack((x0 + values * np.cos(angles + yaw), y0 + values * np.sin(angles + yaw)))


def quaternion_yaw(x: float, y: float, z: float, w: float) -> float:
    """Yaw of a quaternion of any non-zero norm (the formula is made scale-invariant by
    normalising first). Raises ValueError for a zero or non-finite quaternion: no orientation."""
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"quaternion ({x}, {y}, {z}, {w}) has no orientation")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


@dataclass(frozen=True)
class ZoneResult:
    """Scale for the whole velocity vector, whether the stop zone forbids it, and what acted."""

    scale: float
    blocked: bool
    limits: tuple[str, ...]


class ObstacleZones:
    """Stop, slowdown and time-to-collision checks of one commanded twist against scan points."""

    def __init__(
        self,
        stop_zone: Sequence[float],
        slowdown_zone: Sequence[float],
        slowdown_ratio: float,
        footprint: Sequence[float],
        time_to_collision_s: float,
        lookahead_s: float,
    ) -> None:
        self.stop = polygon(stop_zone) if stop_zone else None
        self.slowdown = polygon(slowdown_zone) if slowdown_zone else None
        self.footprint = polygon(footprint) if footprint else None
        self.slowdown_ratio = slowdown_ratio
        self.ttc_s = time_to_collision_s
        self.lookahead_s = lookahead_s
        self._radius = {
            id(zone): radius(zone)
            for zone in (self.stop, self.slowdown, self.footprint)
            if zone is not None
        }
        self._substep = {
            id(zone): min(_MAX_SUBSTEP_M, max(_MIN_SUBSTEP_M, width(zone) / 4.0))
            for zone in (self.stop, self.footprint)
            if zone is not None
        }

    def evaluate(self, points: np.ndarray, motion: Sequence[float]) -> ZoneResult:
        """The most restrictive zone wins; zero motion is always allowed."""
        vx, vy, wz = motion
        if vx == 0.0 and vy == 0.0 and wz == 0.0:
            return ZoneResult(1.0, False, ())
        limits: list[str] = []
        for guard, name in ((self.stop, "stop_zone"), (self.footprint, "footprint")):
            if guard is not None and self._goes_deeper(guard, points, vx, vy, wz):
                return ZoneResult(0.0, True, (name,))
        scale = 1.0
        if self.slowdown is not None:
            candidates = near(points, self._radius[id(self.slowdown)])
            if len(candidates) and inside(self.slowdown, candidates).any():
                scale = self.slowdown_ratio
                limits.append("slowdown_zone")
        if self.ttc_s > 0 and self.footprint is not None:
            collision = self._time_to_collision(points, vx, vy, wz)
            if collision is not None and collision / self.ttc_s < scale:
                scale = collision / self.ttc_s
                limits.append("time_to_collision")
        return ZoneResult(scale, False, tuple(limits))

    def _goes_deeper(
        self, zone: np.ndarray, points: np.ndarray, vx: float, vy: float, wz: float
    ) -> bool:
        """Would any obstacle point get deeper into `zone` at any time within the lookahead?

        Per point, not only the deepest one, so a shallow obstacle cannot be pushed in while a
        deeper one holds the maximum. A point may only reach a depth that some obstacle point
        already had within the distance the motion moves points (`moved`): sliding along a wall
        brings each wall point to where its neighbour was, which is no new intrusion, and backing
        away or turning a point out is always allowed, so touching an obstacle never wedges it.
        Checked along the way, not only at the horizon: a point carried right through the zone
        ends outside it.
        """
        travel = math.hypot(vx, vy) * self.lookahead_s
        reach = self._radius[id(zone)] + travel + _EPS
        candidates = near(points, reach)
        if len(candidates) == 0:
            return False
        before = depth(zone, candidates)
        sweep = travel + abs(wz) * self.lookahead_s * reach
        steps = min(_MAX_SUBSTEPS, max(1, math.ceil(sweep / self._substep[id(zone)])))
        for step in range(1, steps + 1):
            fraction = step / steps
            projected = project(candidates, vx, vy, wz, self.lookahead_s * fraction)
            after = depth(zone, projected)
            deeper = np.flatnonzero(after > before + _EPS)
            if len(deeper) == 0:
                continue
            gaps = np.sqrt(((projected[deeper, None, :] - candidates[None, :, :]) ** 2).sum(axis=2))
            moved = sweep * fraction
            known = np.where(gaps <= moved + _EPS, before[None, :], 0.0).max(axis=1)
            if np.any(after[deeper] > known + _EPS):
                return True
        return False

    def _time_to_collision(
        self, points: np.ndarray, vx: float, vy: float, wz: float
    ) -> float | None:
        """Earliest time a point outside the footprint reaches its edge, None beyond the horizon.

        Exact rather than simulated: with a constant twist, world-fixed points move in the robot
        frame along straight lines (wz = 0) or circles about the instantaneous centre of rotation,
        so each point/edge pair is one line or circle intersection. Points already inside the
        footprint are left to the no-deeper rule, so a robot touching an obstacle can still back
        away (an approach check alone would report t = 0 forever).
        """
        footprint = self.footprint
        assert footprint is not None
        reach = self._radius[id(footprint)] + math.hypot(vx, vy) * self.ttc_s + _EPS
        candidates = near(points, reach)
        candidates = candidates[~inside(footprint, candidates)]
        if len(candidates) == 0:
            return None
        start = footprint[None, :, :]
        edge = (np.roll(footprint, -1, axis=0) - footprint)[None, :, :]
        q = candidates[:, None, :]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # Below 1e-4 rad/s the arc is a line to within micrometres over any sane horizon,
            # and the far-away rotation centre would only cost precision.
            if abs(wz) < 1e-4:
                times = _line_hits(q, start, edge, vx, vy)
            else:
                times = _circle_hits(q, start, edge, vx, vy, wz)
        times = times[np.isfinite(times) & (times > 1e-9) & (times <= self.ttc_s)]
        return float(times.min()) if len(times) else None


def _cross(ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
    return ax * by - ay * bx


def _line_hits(
    q: np.ndarray, start: np.ndarray, edge: np.ndarray, vx: float, vy: float
) -> np.ndarray:
    """Times at which points q - v·t cross the edges start + s·edge, s in [0, 1]."""
    rx, ry = q[..., 0] - start[..., 0], q[..., 1] - start[..., 1]
    ex, ey = edge[..., 0], edge[..., 1]
    denom = _cross(np.full_like(ex, vx), np.full_like(ey, vy), ex, ey)
    t = _cross(rx, ry, ex, ey) / denom
    s = _cross(rx, ry, np.full_like(rx, vx), np.full_like(ry, vy)) / -denom
    return np.where((np.abs(denom) > 1e-12) & (s >= 0) & (s <= 1), t, np.inf)


def _circle_hits(
    q: np.ndarray, start: np.ndarray, edge: np.ndarray, vx: float, vy: float, wz: float
) -> np.ndarray:
    """Times at which points rotating about the rotation centre by -wz·t cross the edges."""
    cx, cy = -vy / wz, vx / wz
    qx, qy = q[..., 0] - cx, q[..., 1] - cy
    ax, ay = start[..., 0] - cx, start[..., 1] - cy
    ex, ey = edge[..., 0], edge[..., 1]
    a = ex * ex + ey * ey
    b = ax * ex + ay * ey
    c = ax * ax + ay * ay - (qx * qx + qy * qy)
    root = np.sqrt(b * b - a * c)
    angle_q = np.arctan2(qy, qx)
    hits = []
    for s in ((-b - root) / a, (-b + root) / a):
        px, py = ax + s * ex, ay + s * ey
        turn = np.mod((angle_q - np.arctan2(py, px)) * math.copysign(1.0, wz), 2 * math.pi)
        hits.append(np.where((s >= 0) & (s <= 1), turn / abs(wz), np.inf))
    return np.minimum(hits[0], hits[1])


class Geofence:
    """A polygon (odometry frame) the robot centre must stay in; outside, only return is allowed."""

    def __init__(self, flat: Sequence[float], margin: float, lookahead_s: float) -> None:
        self.poly = polygon(flat)
        self.margin = margin
        self.lookahead_s = lookahead_s

    def linear_scale(
        self, x: float, y: float, yaw: float, vx: float, vy: float, decel: float
    ) -> tuple[float, str | None]:
        """Scale for (vx, vy) and the limit that acted; rotation in place is never limited."""
        speed = math.hypot(vx, vy)
        if speed == 0.0:
            return 1.0, None
        ux = (math.cos(yaw) * vx - math.sin(yaw) * vy) / speed
        uy = (math.sin(yaw) * vx + math.cos(yaw) * vy) / speed
        here = np.array([[x, y]])
        clearance = float(boundary_distance(self.poly, here)[0])
        if clearance < _EPS or not inside(self.poly, here)[0]:
            probe = here + _EPS * np.array([[ux, uy]])
            back = inside(self.poly, probe)[0] or boundary_distance(self.poly, probe)[0] < clearance
            return (1.0, "geofence_return") if back else (0.0, "geofence")
        room = self._ray_distance(x, y, ux, uy)
        allowed = min(speed, room / self.lookahead_s, math.sqrt(2.0 * decel * room))
        if self.margin > 0 and room < self.margin:
            allowed = min(allowed, speed * room / self.margin)
        if allowed >= speed:
            return 1.0, None
        return allowed / speed, "geofence"

    def _ray_distance(self, x: float, y: float, ux: float, uy: float) -> float:
        start = self.poly
        edge = np.roll(self.poly, -1, axis=0) - start
        denom = ux * edge[:, 1] - uy * edge[:, 0]
        rx, ry = start[:, 0] - x, start[:, 1] - y
        with np.errstate(divide="ignore", invalid="ignore"):
            along = (rx * edge[:, 1] - ry * edge[:, 0]) / denom
            on_edge = (rx * uy - ry * ux) / denom
        hits = along[(np.abs(denom) > 1e-12) & (along > 0) & (on_edge >= 0) & (on_edge <= 1)]
        return float(hits.min()) if len(hits) else 0.0
