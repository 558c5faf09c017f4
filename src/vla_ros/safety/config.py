"""Safety validator configuration: one flat ROS parameter set, validated the same way everywhere.

The node, the bag checker and the tests all build a `SafetyConfig` through `from_params`, so a
refusal always names the offending parameter, whether it came from a YAML file at start-up or from
`ros2 param set` at run time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from vla_ros import action_space as action_spaces
from vla_ros import params as param_files

MODES = action_spaces.CHOICES
"""Accepted mode spellings, live from `vla_ros.action_space` (aliases become canonical)."""
GRIPPER_ON_ESTOP = ("hold", "open", "close")

AXIS_NAMES: Mapping[str, tuple[str, ...]] = action_spaces.view("axes")
"""Motion vector layout per mode; arm7 is the end-effector twist (linear then angular)."""

LINEAR_AXES: Mapping[str, tuple[int, ...]] = action_spaces.view("linear_axes")
ANGULAR_AXES: Mapping[str, tuple[int, ...]] = action_spaces.view("angular_axes")
TWIST_INDEX: Mapping[str, tuple[int, ...]] = action_spaces.view("twist_index")
"""Where each motion axis sits in a 6-vector (linear.x, .y, .z, angular.x, .y, .z)."""


def twist_vector(msg: Any) -> tuple[float, ...]:
    """A Twist (or the twist of a TwistStamped) as that 6-vector, for the node and bag tools."""
    twist = getattr(msg, "twist", msg)
    linear, angular = twist.linear, twist.angular
    return (linear.x, linear.y, linear.z, angular.x, angular.y, angular.z)


@dataclass(frozen=True)
class Param:
    """One safety parameter, declared once: the node's descriptor and start-up check,
    `validate()` (so `bag check --params` and the invariants), `loosened()` and `param_names()`
    all read it.

    `above` is an exclusive lower bound (the value must be greater), `low`/`high` inclusive
    ones; a tuple parameter applies them to every element. `scope` is the platform it belongs
    to (`base`, `arm` or `any`); `tighter` says which change makes the limit stricter (see
    `loosened`).
    """

    description: str
    tighter: str
    low: float | None = None
    high: float | None = None
    above: float | None = None
    scope: str = "any"
    choices: tuple[str, ...] | None = None
    per_axis: bool = False

    def problem(self, name: str, value: Any, labels: Sequence[str] = ()) -> str | None:
        """Why `value` is outside the declared bounds or choices, or None."""
        if self.choices is not None and value not in self.choices:
            return f"{name} must be one of {list(self.choices)}, got {value!r}"
        numbers = value if isinstance(value, tuple | list) else (value,)
        for index, number in enumerate(numbers):
            if isinstance(number, bool) or not isinstance(number, int | float):
                continue
            where = name
            if isinstance(value, tuple | list):
                label = f" ({labels[index]})" if self.per_axis and index < len(labels) else ""
                where = f"{name}[{index}]{label}"
            if not math.isfinite(number):
                return f"{where} must be finite, got {number}"
            if self.above is not None and number <= self.above:
                return f"{where} must be > {self.above:g}, got {number}"
            low_ok = self.low is None or number >= self.low
            high_ok = self.high is None or number <= self.high
            if low_ok and high_ok:
                continue
            if self.low is not None and self.high is not None:
                return f"{where} must be in [{self.low:g}, {self.high:g}], got {number}"
            if not low_ok:
                return f"{where} must be >= {self.low:g}, got {number}"
            return f"{where} must be <= {self.high:g}, got {number}"
        return None


@dataclass(frozen=True)
class SafetyConfig:
    """Every limit the validator enforces. Velocities in m/s and rad/s, times in seconds.

    Per-axis tuples follow `AXIS_NAMES[mode]`. Polygons are flat `(x1, y1, x2, y2, ...)` lists:
    zones and footprint in the robot base frame, the geofence in the odometry frame. An empty
    polygon (or a zero radius / zero time) disables that check.
    """

    mode: str = "mobile3"
    output_rate_hz: float = 50.0
    max_velocity: tuple[float, ...] = (0.5, 0.5, 1.0)
    min_velocity: tuple[float, ...] = (-0.5, -0.5, -1.0)
    max_linear_speed: float = 0.5
    max_angular_speed: float = 1.0
    scale_velocities: bool = False
    max_accel: tuple[float, ...] = (1.0, 1.0, 2.0)
    max_decel: tuple[float, ...] = (1.5, 1.5, 3.0)
    deadband: tuple[float, ...] = (0.0, 0.0, 0.0)
    max_input_magnitude: float = 10.0
    command_timeout: float = 0.5
    hold_zero_s: float = -1.0
    max_command_age: float = 0.5
    future_tolerance: float = 0.05
    accept_zero_stamp: bool = False
    command_frame: str = "base_link"
    min_confidence: float = 0.0
    max_confidence_age: float = 2.5
    fault_max_rejections: int = 10
    fault_window_s: float = 1.0
    lookahead_s: float = 0.1
    scan_timeout: float = 0.3
    scan_pose: tuple[float, ...] = (0.0, 0.0, 0.0)
    stop_zone: tuple[float, ...] = ()
    slowdown_zone: tuple[float, ...] = ()
    slowdown_ratio: float = 0.3
    footprint: tuple[float, ...] = ()
    time_to_collision_s: float = 0.0
    geofence: tuple[float, ...] = ()
    geofence_margin: float = 0.3
    odom_timeout: float = 0.3
    gripper_on_estop: str = "hold"
    pose_timeout: float = 0.2
    workspace_min: tuple[float, ...] = ()
    workspace_max: tuple[float, ...] = ()
    workspace_sphere_center: tuple[float, ...] = ()
    workspace_sphere_radius: float = 0.0
    workspace_margin: float = 0.05

    @property
    def dof(self) -> int:
        return len(AXIS_NAMES[self.mode])

    @property
    def axis_names(self) -> tuple[str, ...]:
        return AXIS_NAMES[self.mode]

    @property
    def space(self) -> action_spaces.ActionSpaceSpec:
        return action_spaces.get(self.mode)

    @property
    def scan_configured(self) -> bool:
        return bool(self.stop_zone or self.slowdown_zone or self.time_to_collision_s > 0)

    @property
    def workspace_configured(self) -> bool:
        return bool(self.workspace_min) or self.workspace_sphere_radius > 0

    @classmethod
    def for_mode(cls, mode: str, **overrides: Any) -> SafetyConfig:
        """Defaults that suit the mode (arm7: six axes, slower end-effector speeds)."""
        space = action_spaces.get(mode)
        base = replace(cls(), mode=space.name, **space.safety_defaults())
        return replace(base, **overrides)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SafetyConfig:
        """Build from a flat ROS parameter mapping; unknown names (use_sim_time...) are ignored."""
        defaults = cls.for_mode(params.get("mode", "mobile3"))
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in params or spec.name == "mode":
                continue
            values[spec.name] = _coerce(spec.name, params[spec.name], getattr(defaults, spec.name))
        return replace(defaults, **values)

    def validate(self) -> None:
        """Raise ValueError naming the first parameter that is unsafe or inconsistent."""
        if self.mode not in AXIS_NAMES:
            raise ValueError(f"mode must be one of {list(AXIS_NAMES)}, got {self.mode!r}")
        for spec in fields(self):
            reason = PARAMS[spec.name].problem(spec.name, getattr(self, spec.name), self.axis_names)
            if reason is not None:
                raise ValueError(reason)
        dof = self.dof
        for name in ("max_velocity", "min_velocity", "max_accel", "max_decel", "deadband"):
            if len(getattr(self, name)) != dof:
                raise ValueError(
                    f"{name} must have {dof} values ({', '.join(self.axis_names)}) in mode "
                    f"{self.mode}, got {len(getattr(self, name))}"
                )
        for axis, (low, high) in enumerate(zip(self.min_velocity, self.max_velocity, strict=True)):
            label = self.axis_names[axis]
            if low > high:
                raise ValueError(
                    f"min_velocity[{axis}] ({label}) = {low} must be <= max_velocity = {high}"
                )
            if low > 0 or high < 0:
                raise ValueError(
                    f"min_velocity[{axis}]..max_velocity[{axis}] ({label}) = [{low}, {high}] "
                    "must contain 0, otherwise the robot could never stop"
                )
        biggest = max(abs(v) for v in (*self.max_velocity, *self.min_velocity))
        if self.max_input_magnitude < biggest:
            raise ValueError(
                f"max_input_magnitude ({self.max_input_magnitude}) must be >= the largest "
                f"velocity limit ({biggest}); it marks inputs that are rejected, not clamped"
            )
        if self.space.stamped and not self.command_frame:
            raise ValueError(f"command_frame must name the twist frame in mode {self.mode}, got ''")
        if len(self.scan_pose) != 3:
            raise ValueError(f"scan_pose must be [x, y, yaw], got {len(self.scan_pose)} values")
        for name in ("stop_zone", "slowdown_zone", "footprint", "geofence"):
            _check_polygon(name, getattr(self, name))
        if self.time_to_collision_s > 0 and not self.footprint:
            raise ValueError("time_to_collision_s > 0 needs a footprint polygon")
        self._validate_workspace()
        self._validate_mode_scope()

    def _validate_workspace(self) -> None:
        if bool(self.workspace_min) != bool(self.workspace_max):
            raise ValueError("workspace_min and workspace_max must be set together (or both [])")
        if self.workspace_min:
            for name in ("workspace_min", "workspace_max"):
                if len(getattr(self, name)) != 3:
                    raise ValueError(
                        f"{name} must be [x, y, z], got {len(getattr(self, name))} values"
                    )
            for axis, (low, high) in enumerate(
                zip(self.workspace_min, self.workspace_max, strict=True)
            ):
                if low >= high:
                    raise ValueError(
                        f"workspace_min[{axis}] = {low} must be < workspace_max[{axis}] = {high}"
                    )
        if self.workspace_sphere_radius > 0 and len(self.workspace_sphere_center) != 3:
            raise ValueError(
                "workspace_sphere_center must be [x, y, z] when workspace_sphere_radius > 0, "
                f"got {len(self.workspace_sphere_center)} values"
            )

    def _validate_mode_scope(self) -> None:
        """A zone configured for the other kind of robot is a wrong file, not something to skip."""
        if self.space.platform == "arm":
            unused = [n for n in ("stop_zone", "slowdown_zone", "geofence") if getattr(self, n)]
            if self.time_to_collision_s > 0:
                unused.append("time_to_collision_s")
        else:
            unused = [n for n in ("workspace_min", "workspace_max") if getattr(self, n)]
            if self.workspace_sphere_radius > 0:
                unused.append("workspace_sphere_radius")
        if unused:
            raise ValueError(f"{unused[0]} is not used in mode {self.mode}; remove it")


_AXES = {"per_axis": True}
PARAMS: dict[str, Param] = {
    "mode": Param(
        "mobile3 (vx, vy, wz) or arm7 (end-effector twist + gripper); read-only",
        "fixed",
        choices=MODES,
    ),
    "output_rate_hz": Param("Rate of the command output timer", "higher", low=1.0, high=1000.0),
    "max_velocity": Param("Per-axis upper velocity limit (m/s, rad/s)", "each_lower", **_AXES),
    "min_velocity": Param(
        "Per-axis lower velocity limit; [min, max] must contain 0", "each_higher", **_AXES
    ),
    "max_linear_speed": Param("Norm limit on the linear part (vx, vy[, vz])", "lower", above=0.0),
    "max_angular_speed": Param(
        "Norm limit on the angular part (wz or wx, wy, wz)", "lower", above=0.0
    ),
    "scale_velocities": Param(
        "Scale the whole vector instead of clipping axes (keeps direction)", "true"
    ),
    "max_accel": Param(
        "Per-axis acceleration magnitude (speeding up), > 0", "each_lower", above=0.0, **_AXES
    ),
    "max_decel": Param(
        "Per-axis deceleration magnitude (slowing down), > 0", "each_higher", above=0.0, **_AXES
    ),
    "deadband": Param(
        "Per-axis output magnitude below which the output is 0", "each_higher", low=0.0, **_AXES
    ),
    "max_input_magnitude": Param(
        "Inputs with any |component| above this are rejected", "lower", above=0.0
    ),
    "command_timeout": Param(
        "No valid command for this long -> decelerate to zero", "lower", above=0.0
    ),
    "hold_zero_s": Param(
        "Keep publishing zero this long after a timeout stop; < 0 = forever", "hold_zero"
    ),
    "max_command_age": Param("Reject commands whose stamp is older than this", "lower", above=0.0),
    "future_tolerance": Param(
        "Reject commands stamped further than this in the future", "lower", low=0.0
    ),
    "accept_zero_stamp": Param(
        "Accept zero stamps (treated as receipt time) instead of rejecting", "false"
    ),
    "command_frame": Param(
        "Required frame_id of stamped commands, sensor poses and the arm output", "any_change"
    ),
    "min_confidence": Param(
        "Commands whose /vla/confidence is below this are replaced by zero",
        "higher",
        low=0.0,
        high=1.0,
    ),
    "max_confidence_age": Param(
        "With min_confidence > 0: no confidence this fresh -> zero (the gate fails closed)",
        "lower",
        above=0.0,
    ),
    "fault_max_rejections": Param(
        "More rejected commands than this within fault_window_s -> stop, latched until ~/reset;"
        " 0 disables",
        "zero_disables",
        low=0,
        high=100000,
    ),
    "fault_window_s": Param("Window of the fault latch's rejection count", "higher", above=0.0),
    "lookahead_s": Param(
        "Prediction horizon for zones, geofence and workspace", "higher", above=0.0
    ),
    "scan_timeout": Param(
        "A configured scan older than this -> stop", "lower", above=0.0, scope="base"
    ),
    "scan_pose": Param("Laser pose in the base frame [x, y, yaw]", "any_change", scope="base"),
    "stop_zone": Param(
        "Polygon (base frame): no motion that takes any obstacle point deeper",
        "zone",
        scope="base",
    ),
    "slowdown_zone": Param(
        "Polygon (base frame): scan points inside -> scale by slowdown_ratio",
        "zone",
        scope="base",
    ),
    "slowdown_ratio": Param(
        "Velocity scale while the slowdown zone is occupied",
        "lower",
        low=0.0,
        high=1.0,
        scope="base",
    ),
    "footprint": Param(
        "Robot footprint polygon for the time-to-collision check", "any_change", scope="base"
    ),
    "time_to_collision_s": Param(
        "Scale velocity by t_collision / this; 0 disables", "higher", low=0.0, scope="base"
    ),
    "geofence": Param(
        "Polygon in the odometry frame the robot must stay inside; [] disables",
        "zone",
        scope="base",
    ),
    "geofence_margin": Param(
        "Slow down within this distance of the geofence", "higher", low=0.0, scope="base"
    ),
    "odom_timeout": Param(
        "Odometry older than this (with a geofence) -> stop", "lower", above=0.0, scope="base"
    ),
    "gripper_on_estop": Param(
        "Gripper output under e-stop: hold, open or close",
        "any_change",
        scope="arm",
        choices=GRIPPER_ON_ESTOP,
    ),
    "pose_timeout": Param(
        "End-effector pose older than this (with a workspace) -> stop",
        "lower",
        above=0.0,
        scope="arm",
    ),
    "workspace_min": Param(
        "Workspace box lower corner [x, y, z]; [] disables the box", "each_higher", scope="arm"
    ),
    "workspace_max": Param("Workspace box upper corner [x, y, z]", "each_lower", scope="arm"),
    "workspace_sphere_center": Param(
        "Workspace sphere centre [x, y, z]", "any_change", scope="arm"
    ),
    "workspace_sphere_radius": Param(
        "Workspace sphere radius; 0 disables", "zero_disables", low=0.0, scope="arm"
    ),
    "workspace_margin": Param(
        "Slow down within this distance of a workspace bound", "higher", low=0.0, scope="arm"
    ),
}
"""Every SafetyConfig field's declaration, in field order."""


def param_names(mode: str) -> tuple[str, ...]:
    """Parameters that make sense in `mode` (the node declares only these)."""
    platform = action_spaces.get(mode).platform
    return tuple(name for name, param in PARAMS.items() if param.scope in ("any", platform))


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a list of numbers, got {value!r}")
    items = list(value)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise ValueError(f"{name} must be a list of numbers, got element {item!r}")
    return tuple(float(item) for item in items)


def _each_looser(old: tuple[float, ...], new: tuple[float, ...], higher_is_looser: bool) -> bool:
    """Per-element limits: none before means nothing was limited; removing or resizing them
    (or moving any element the loose way) loosens."""
    if not old:
        return False
    if len(old) != len(new):
        return True
    return any((y > x) if higher_is_looser else (y < x) for x, y in zip(old, new, strict=True))


_LOOSER: dict[str, Callable[[Any, Any], bool]] = {
    "lower": lambda a, b: b > a,
    "higher": lambda a, b: b < a,
    "zero_disables": lambda a, b: b == 0 or (a != 0 and b > a),
    "each_lower": lambda a, b: _each_looser(a, b, higher_is_looser=True),
    "each_higher": lambda a, b: _each_looser(a, b, higher_is_looser=False),
    "hold_zero": lambda a, b: a < 0 or 0 <= b < a,
    "true": lambda a, b: not b,
    "false": lambda a, b: bool(b),
    "zone": lambda a, b: bool(a),
    "any_change": lambda a, b: True,
    "fixed": lambda a, b: False,
}
"""Whether a change from a to b loosens, by a parameter's `tighter` kind: `lower`/`higher`
(which direction is stricter; a lower output rate is looser too, since the watchdog, ramps and
zones act later), `zero_disables` (lower is stricter, but 0 switches the check off), `each_*`
(per element), `hold_zero` (< 0 holds forever), `true`/`false` (the stricter setting), `zone`
(adding one tightens, changing or removing it loosens), `any_change` (no order: frames, poses,
polygons), `fixed` (not a limit)."""


def loosened(old: SafetyConfig, new: SafetyConfig) -> list[str]:
    """Names of the limits `new` makes less strict than `old`, in field order.

    Tightening (lower speeds, shorter timeouts, a zone added where there was none) is not
    listed. Changes whose effect cannot be ordered (another frame, another polygon, another
    laser pose) count as loosening: only an explicit permission may make them at run time.
    """
    names = []
    for name, param in PARAMS.items():
        a, b = getattr(old, name), getattr(new, name)
        if a != b and _LOOSER[param.tighter](a, b):
            names.append(name)
    return names


DEFAULT_INPUTS = ("vla", "teleop")
DEFAULT_LOCKS = ("pause",)
INPUT_FIELDS = ("topic", "priority", "timeout", "enable_topic")
GRIPPER_INPUT_FIELD = "gripper_topic"
"""Only where the action space has a gripper."""
LOCK_FIELDS = ("topic", "priority")
NODE_PARAMS = ("allow_runtime_loosening", "input_names", "lock_names")
UNSTAMPED_INPUT_PARAM = "input_stamped"
"""Only where the output is an unstamped Twist (its input may still be stamped)."""


def section_keys(
    mode: str, inputs: Sequence[str] = DEFAULT_INPUTS, locks: Sequence[str] = DEFAULT_LOCKS
) -> set[str]:
    """Every key the vla_safety node declares in `mode` with these inputs and locks: what its
    parameter-file section may hold (besides rcl's own, see `unknown_keys`)."""
    space = action_spaces.get(mode)
    fields_per_input = (*INPUT_FIELDS, GRIPPER_INPUT_FIELD) if space.gripper else INPUT_FIELDS
    keys = {*param_names(mode), *NODE_PARAMS}
    if not space.stamped:
        keys.add(UNSTAMPED_INPUT_PARAM)
    keys |= {f"inputs.{name}.{field}" for name in inputs for field in fields_per_input}
    keys |= {f"locks.{name}.{field}" for name in locks for field in LOCK_FIELDS}
    return keys


def unknown_keys(params: Mapping[str, Any]) -> list[str]:
    """A vla_safety section's keys the node would refuse to start with, each with the nearest
    real one: a misspelling would otherwise leave that limit at its default."""
    mode = params.get("mode", "mobile3")
    if not isinstance(mode, str) or mode not in MODES:
        return []  # validate() names a bad mode
    known = section_keys(
        mode,
        _names(params.get("input_names"), DEFAULT_INPUTS),
        _names(params.get("lock_names"), DEFAULT_LOCKS),
    )
    return param_files.unknown_keys(params, known)


def _names(value: Any, default: Sequence[str]) -> Sequence[str]:
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return value
    return default


def _check_polygon(name: str, flat: tuple[float, ...]) -> None:
    if not flat:
        return
    if len(flat) % 2 or len(flat) < 6:
        raise ValueError(
            f"{name} must be [x1, y1, x2, y2, x3, y3, ...] with at least 3 points, "
            f"got {len(flat)} numbers"
        )
    xs, ys = flat[0::2], flat[1::2]
    area = 0.5 * sum(
        xs[i] * ys[(i + 1) % len(xs)] - xs[(i + 1) % len(xs)] * ys[i] for i in range(len(xs))
    )
    if abs(area) < 1e-9:
        raise ValueError(f"{name} has zero area")
