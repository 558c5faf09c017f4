"""Offline check of a recorded command trace against the safety limits.

Written independently of the validator's own arithmetic so it can catch the validator's bugs as
well as a misbehaving node seen in a bag. `vla-ros bag check` builds samples from a recording:

- `t`: time of the output in seconds (header stamp of TwistStamped outputs; for plain Twist the
  receive time of the bag record, then pass `time_tolerance_s` for the recording jitter).
- `motion`: the published command in the mode's axis order (mobile3: vx, vy, wz; arm7: vx, vy,
  vz, wx, wy, wz) or as a 6-vector twist (linear x, y, z, angular x, y, z).
- `estop`: True while the e-stop is engaged: the last /vla/estop value was true, or ~/status
  reported state "estop". A recording that misses a reset only makes the check stricter where
  it is true and weaker where it is false; it never hides motion during an e-stop.
- `last_valid_input_t`: time of the newest valid raw command at or before `t` (its stamp if it
  had one, else its receive time), None before the first one. Estimating it from the raw topic
  (every command taken as valid) can only make the watchdog check later, never stricter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from vla_ros.safety.config import ANGULAR_AXES, LINEAR_AXES, TWIST_INDEX, SafetyConfig

_EPS = 1e-9

Report = Callable[[str, str], None]


@dataclass(frozen=True)
class TraceSample:
    """One published output; see the module docstring for how to fill the fields from a bag."""

    t: float
    motion: Sequence[float]
    estop: bool = False
    last_valid_input_t: float | None = None


@dataclass(frozen=True)
class Violation:
    """One broken rule at sample `index`; `kind` is one of KINDS."""

    index: int
    t: float
    kind: str
    message: str


KINDS = (
    "shape",
    "non_finite",
    "unused_axis",
    "velocity_limit",
    "speed_norm",
    "accel",
    "watchdog",
    "estop",
    "silent",
)


def check_trace(
    config: SafetyConfig,
    samples: Iterable[TraceSample],
    *,
    time_tolerance_s: float = 0.0,
    max_gap_s: float | None = None,
) -> list[Violation]:
    """Every violation of limits, accel·dt (actual dt), watchdog, e-stop and silence in a trace.

    `time_tolerance_s` widens each dt (and the watchdog deadline) for timestamps with jitter.
    `max_gap_s` (default 5 output periods) is the longest silence allowed while the last output
    was non-zero. Samples must be in time order.
    """
    config.validate()
    gap_limit = max_gap_s if max_gap_s is not None else 5.0 / config.output_rate_hz
    violations: list[Violation] = []
    previous: tuple[float, tuple[float, ...]] | None = None
    brake: _Brake | None = None
    for index, sample in enumerate(samples):

        def report(kind: str, message: str, index: int = index, t: float = sample.t) -> None:
            violations.append(Violation(index, t, kind, message))

        motion = _motion(config, sample.motion, report)
        if motion is None:
            previous = None
            continue
        if not all(math.isfinite(v) for v in motion):
            report("non_finite", f"output {motion}")
            previous = None
            continue
        _check_limits(config, motion, report)
        if sample.estop:
            if any(v != 0.0 for v in motion):
                report("estop", f"output {motion} while the e-stop is engaged")
        elif previous is not None:
            dt = sample.t - previous[0]
            if dt < 0:
                report("shape", f"time went backwards by {-dt:.6f} s")
            else:
                _check_step(config, previous[1], motion, dt + time_tolerance_s, report)
                if dt > gap_limit and any(v != 0.0 for v in previous[1]):
                    report("silent", f"{dt:.3f} s without output while moving {previous[1]}")
        brake = _check_watchdog(config, sample, motion, previous, brake, time_tolerance_s, report)
        previous = (sample.t, motion)
    return violations


@dataclass
class _Brake:
    """The deceleration owed after a timeout: zero by `deadline`, magnitudes never growing."""

    valid_t: float | None
    deadline: float
    ceiling: tuple[float, ...]


def _motion(
    config: SafetyConfig, values: Sequence[float], report: Report
) -> tuple[float, ...] | None:
    values = tuple(float(v) for v in values)
    if len(values) == config.dof:
        return values
    if len(values) == 6:
        used = TWIST_INDEX[config.mode]
        for i, value in enumerate(values):
            if i not in used and value != 0.0:
                report("unused_axis", f"twist component {i} = {value} is not used in {config.mode}")
        return tuple(values[i] for i in used)
    report("shape", f"{len(values)} values, expected {config.dof} or 6")
    return None


def _check_limits(config: SafetyConfig, motion: tuple[float, ...], report: Report) -> None:
    names = config.axis_names
    for i, value in enumerate(motion):
        if value > config.max_velocity[i] + _EPS or value < config.min_velocity[i] - _EPS:
            report(
                "velocity_limit",
                f"{names[i]} = {value:.6f} outside [{config.min_velocity[i]}, "
                f"{config.max_velocity[i]}]",
            )
    for axes, limit, label in (
        (LINEAR_AXES[config.mode], config.max_linear_speed, "linear"),
        (ANGULAR_AXES[config.mode], config.max_angular_speed, "angular"),
    ):
        norm = math.sqrt(sum(motion[i] ** 2 for i in axes))
        if norm > limit + _EPS:
            report("speed_norm", f"{label} speed {norm:.6f} > {limit}")


def _reach(v: float, accel: float, decel: float, dt: float) -> tuple[float, float]:
    """Values reachable from v in dt: brake at `decel` towards 0, speed up at `accel`."""

    def towards(sign: float) -> float:
        if v == 0.0 or (v > 0) == (sign > 0):
            return v + sign * accel * dt
        braking = abs(v) / decel
        if braking >= dt:
            return v + sign * decel * dt
        return sign * accel * (dt - braking)

    return towards(-1.0), towards(1.0)


def _check_step(
    config: SafetyConfig,
    before: tuple[float, ...],
    after: tuple[float, ...],
    dt: float,
    report: Report,
) -> None:
    """Each axis moved within its reachable interval; a deadband may snap a value to/from zero."""
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        accel, decel, band = config.max_accel[i], config.max_decel[i], config.deadband[i]
        if a == 0.0 and band > 0.0:
            low, high = _reach(-band, accel, decel, dt)[0], _reach(band, accel, decel, dt)[1]
        else:
            low, high = _reach(a, accel, decel, dt)
        tolerance = _EPS * max(1.0, abs(a), abs(b))
        if b == 0.0:
            ok = low - band - tolerance <= 0.0 <= high + band + tolerance
        else:
            ok = low - tolerance <= b <= high + tolerance
        if not ok:
            report(
                "accel",
                f"{config.axis_names[i]} {a:.6f} -> {b:.6f} in {dt:.6f} s; reachable "
                f"[{low:.6f}, {high:.6f}] (accel {accel}, decel {decel})",
            )


def _check_watchdog(
    config: SafetyConfig,
    sample: TraceSample,
    motion: tuple[float, ...],
    previous: tuple[float, tuple[float, ...]] | None,
    brake: _Brake | None,
    tolerance: float,
    report: Report,
) -> _Brake | None:
    """After `command_timeout` without a valid input the output must brake to zero in time."""
    valid_t = sample.last_valid_input_t
    timed_out = valid_t is None or sample.t - valid_t > config.command_timeout
    if sample.estop or not timed_out:
        return None
    if brake is None or brake.valid_t != valid_t:
        if previous is None:
            return None
        start_t, start = previous
        # An output zeroed by the deadband may hide a velocity of up to the deadband, which
        # still has to brake (and, with scale_velocities, paces the other axes).
        hidden = [abs(v) if v != 0.0 else b for v, b in zip(start, config.deadband, strict=True)]
        braking = max(v / d for v, d in zip(hidden, config.max_decel, strict=True))
        brake = _Brake(valid_t, start_t + braking, tuple(abs(v) for v in start))
    for i, value in enumerate(motion):
        if abs(value) > brake.ceiling[i] + _EPS:
            report(
                "watchdog",
                f"{config.axis_names[i]} grew to {value:.6f} after the command timeout",
            )
    if sample.t > brake.deadline + tolerance + _EPS and any(v != 0.0 for v in motion):
        report(
            "watchdog",
            f"output {motion} not zero {sample.t - brake.deadline:.3f} s after it could have "
            "braked to zero",
        )
    brake.ceiling = tuple(abs(v) for v in motion)
    return brake
