"""End-effector workspace for the arm: an axis-aligned box and an optional sphere.

Like MoveIt Servo's position bounds, a bound that is already violated still lets the arm move back
inside. On top of that the linear velocity towards a bound shrinks with the distance left: linearly
within `margin`, along the braking curve sqrt(2·decel·d) so the decel-limited ramp can always stop
in time, and to d / lookahead so the predicted next position stays inside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Vector3 = tuple[float, float, float]


def _cap(distance: float, speed: float, decel: float, margin: float, lookahead: float) -> float:
    """Largest speed allowed towards a bound `distance` away (0 at or past the bound)."""
    if distance <= 0.0:
        return 0.0
    cap = min(distance / lookahead, math.sqrt(2.0 * decel * distance))
    if margin > 0.0 and distance < margin:
        cap = min(cap, speed * distance / margin)
    return cap


def limit_box(
    position: Sequence[float],
    velocity: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    decel: Sequence[float],
    margin: float,
    lookahead: float,
) -> tuple[Vector3, bool]:
    """Per-axis limit of the linear velocity; returns it and whether the box acted."""
    out = []
    for p, v, lo, hi, a in zip(position, velocity, low, high, decel, strict=True):
        if v > 0.0:
            limited = min(v, _cap(hi - p, v, a, margin, lookahead))
        elif v < 0.0:
            limited = -min(-v, _cap(p - lo, -v, a, margin, lookahead))
        else:
            limited = 0.0
        out.append(limited)
    result = (out[0], out[1], out[2])
    return result, result != tuple(velocity)


def limit_sphere(
    position: Sequence[float],
    velocity: Sequence[float],
    center: Sequence[float],
    radius: float,
    decel: float,
    margin: float,
    lookahead: float,
) -> tuple[Vector3, bool]:
    """Limit the radial (outward) part, then the tangential part so the prediction stays inside.

    Outside the sphere the bound becomes the current distance: only motion that does not increase
    it is allowed.
    """
    offset = [p - c for p, c in zip(position, center, strict=True)]
    r = math.sqrt(sum(o * o for o in offset))
    speed = math.sqrt(sum(v * v for v in velocity))
    if speed == 0.0:
        return (0.0, 0.0, 0.0), False
    unit = [o / r for o in offset] if r > 1e-12 else [v / speed for v in velocity]
    radial = sum(v * u for v, u in zip(velocity, unit, strict=True))
    tangent = [v - radial * u for v, u in zip(velocity, unit, strict=True)]
    bound = max(radius, r)
    if radial > 0.0:
        radial = min(radial, _cap(radius - r, radial, decel, margin, lookahead))
    radial = max(radial, -(r + bound) / lookahead)
    reach = r + radial * lookahead
    tangent_speed = math.sqrt(sum(t * t for t in tangent))
    room = math.sqrt(max(0.0, bound * bound - reach * reach)) / lookahead
    if tangent_speed > room:
        tangent = [t * room / tangent_speed for t in tangent]
    result = tuple(radial * u + t for u, t in zip(unit, tangent, strict=True))
    out = (result[0], result[1], result[2])
    return out, any(abs(a - b) > 1e-15 for a, b in zip(out, velocity, strict=True))


def box_holds(
    position: Sequence[float],
    velocity: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    decel: Sequence[float],
    lookahead: float,
) -> bool:
    """The hard part of `limit_box` (no margin slowdown): each axis within its braking cap."""
    for p, v, lo, hi, a in zip(position, velocity, low, high, decel, strict=True):
        if v > 0.0 and v > _cap(hi - p, v, a, 0.0, lookahead) + 1e-12:
            return False
        if v < 0.0 and -v > _cap(p - lo, -v, a, 0.0, lookahead) + 1e-12:
            return False
    return True


def sphere_holds(
    position: Sequence[float],
    velocity: Sequence[float],
    center: Sequence[float],
    radius: float,
    decel: float,
    lookahead: float,
) -> bool:
    """The hard part of `limit_sphere`: outward speed within the braking cap and the predicted
    position no further out than max(radius, current distance)."""
    offset = [p - c for p, c in zip(position, center, strict=True)]
    r = math.sqrt(sum(o * o for o in offset))
    bound = max(radius, r)
    reach = math.sqrt(sum((o + v * lookahead) ** 2 for o, v in zip(offset, velocity, strict=True)))
    if reach > bound + 1e-12:
        return False
    if r > 1e-12:
        radial = sum(v * o / r for v, o in zip(velocity, offset, strict=True))
        if radial > 0.0 and radial > _cap(radius - r, radial, decel, 0.0, lookahead) + 1e-12:
            return False
    return True


def limit_box_and_sphere(
    position: Sequence[float],
    velocity: Sequence[float],
    box: tuple[Sequence[float], Sequence[float]] | None,
    sphere: tuple[Sequence[float], float] | None,
    decel: Sequence[float],
    margin: float,
    lookahead: float,
) -> tuple[Vector3, bool]:
    """Box, then sphere, composed so that both hold: the sphere stage splits the velocity into
    radial and tangential parts and can re-add a component the box capped, so the result is
    checked against both and, if needed, clipped to the box and scaled down until the sphere
    holds too (zero always does)."""
    out: Vector3 = (velocity[0], velocity[1], velocity[2])
    acted = False
    if box is not None:
        out, hit = limit_box(position, out, box[0], box[1], decel, margin, lookahead)
        acted |= hit
    if sphere is None:
        return out, acted
    out, hit = limit_sphere(position, out, sphere[0], sphere[1], min(decel), margin, lookahead)
    acted |= hit
    if box is None or box_holds(position, out, box[0], box[1], decel, lookahead):
        return out, acted
    out, _ = limit_box(position, out, box[0], box[1], decel, 0.0, lookahead)
    scale = 1.0
    for _ in range(40):
        candidate = (out[0] * scale, out[1] * scale, out[2] * scale)
        if sphere_holds(position, candidate, sphere[0], sphere[1], min(decel), lookahead):
            return candidate, True
        scale *= 0.5
    return (0.0, 0.0, 0.0), True
