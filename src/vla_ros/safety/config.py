"""Safety validator configuration: one flat ROS parameter set, validated the same way everywhere.

The node, the bag checker and the tests all build a `SafetyConfig` through `from_params`, so a
refusal always names the offending parameter, whether it came from a YAML file at start-up or from
`ros2 param set` at run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from vla_ros import action_space as action_spaces

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


MOBILE_ONLY = frozenset(
    {
        "scan_timeout",
        "scan_pose",
        "stop_zone",
        "slowdown_zone",
        "slowdown_ratio",
        "footprint",
        "time_to_collision_s",
        "geofence",
        "geofence_margin",
        "odom_timeout",
    }
)
ARM_ONLY = frozenset(
    {
        "gripper_on_estop",
        "pose_timeout",
        "workspace_min",
        "workspace_max",
        "workspace_sphere_center",
        "workspace_sphere_radius",
        "workspace_margin",
    }
)


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
            value = getattr(self, spec.name)
            numbers = value if isinstance(value, tuple) else (value,)
            for number in numbers:
                if isinstance(number, float) and not math.isfinite(number):
                    raise ValueError(f"{spec.name} must be finite, got {number}")
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
        for name in ("max_accel", "max_decel"):
            for axis, value in enumerate(getattr(self, name)):
                if value <= 0:
                    raise ValueError(
                        f"{name}[{axis}] ({self.axis_names[axis]}) must be > 0 (a magnitude), "
                        f"got {value}"
                    )
        for axis, value in enumerate(self.deadband):
            if value < 0:
                raise ValueError(f"deadband[{axis}] must be >= 0, got {value}")
        positive = (
            "output_rate_hz",
            "max_linear_speed",
            "max_angular_speed",
            "max_input_magnitude",
            "command_timeout",
            "max_command_age",
            "lookahead_s",
            "scan_timeout",
            "odom_timeout",
            "pose_timeout",
            "max_confidence_age",
            "fault_window_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.output_rate_hz > 1000:
            raise ValueError(f"output_rate_hz must be <= 1000, got {self.output_rate_hz}")
        biggest = max(abs(v) for v in (*self.max_velocity, *self.min_velocity))
        if self.max_input_magnitude < biggest:
            raise ValueError(
                f"max_input_magnitude ({self.max_input_magnitude}) must be >= the largest "
                f"velocity limit ({biggest}); it marks inputs that are rejected, not clamped"
            )
        non_negative = (
            "future_tolerance",
            "time_to_collision_s",
            "geofence_margin",
            "workspace_sphere_radius",
            "workspace_margin",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.fault_max_rejections < 0:
            raise ValueError(
                f"fault_max_rejections must be >= 0 (0 disables), got {self.fault_max_rejections}"
            )
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if not 0.0 <= self.slowdown_ratio <= 1.0:
            raise ValueError(f"slowdown_ratio must be in [0, 1], got {self.slowdown_ratio}")
        if self.gripper_on_estop not in GRIPPER_ON_ESTOP:
            raise ValueError(
                f"gripper_on_estop must be one of {list(GRIPPER_ON_ESTOP)}, "
                f"got {self.gripper_on_estop!r}"
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


PARAM_DOCS: dict[str, tuple[str, float | None, float | None]] = {
    "mode": ("mobile3 (vx, vy, wz) or arm7 (end-effector twist + gripper); read-only", None, None),
    "output_rate_hz": ("Rate of the command output timer", 1.0, 1000.0),
    "max_velocity": ("Per-axis upper velocity limit (m/s, rad/s)", None, None),
    "min_velocity": ("Per-axis lower velocity limit; [min, max] must contain 0", None, None),
    "max_linear_speed": ("Norm limit on the linear part (vx, vy[, vz])", 0.0, None),
    "max_angular_speed": ("Norm limit on the angular part (wz or wx, wy, wz)", 0.0, None),
    "scale_velocities": (
        "Scale the whole vector instead of clipping axes (keeps direction)",
        None,
        None,
    ),
    "max_accel": ("Per-axis acceleration magnitude (speeding up), > 0", None, None),
    "max_decel": ("Per-axis deceleration magnitude (slowing down), > 0", None, None),
    "deadband": ("Per-axis output magnitude below which the output is 0", None, None),
    "max_input_magnitude": ("Inputs with any |component| above this are rejected", 0.0, None),
    "command_timeout": ("No valid command for this long -> decelerate to zero", 0.0, None),
    "hold_zero_s": (
        "Keep publishing zero this long after a timeout stop; < 0 = forever",
        None,
        None,
    ),
    "max_command_age": ("Reject commands whose stamp is older than this", 0.0, None),
    "future_tolerance": ("Reject commands stamped further than this in the future", 0.0, None),
    "accept_zero_stamp": (
        "Accept zero stamps (treated as receipt time) instead of rejecting",
        None,
        None,
    ),
    "command_frame": (
        "Required frame_id of stamped commands, sensor poses and the arm output",
        None,
        None,
    ),
    "min_confidence": (
        "Commands whose /vla/confidence is below this are replaced by zero",
        0.0,
        1.0,
    ),
    "max_confidence_age": (
        "With min_confidence > 0: no confidence this fresh -> zero (the gate fails closed)",
        0.0,
        None,
    ),
    "fault_max_rejections": (
        "More rejected commands than this within fault_window_s -> stop, latched until ~/reset;"
        " 0 disables",
        0,
        100000,
    ),
    "fault_window_s": ("Window of the fault latch's rejection count", 0.0, None),
    "lookahead_s": ("Prediction horizon for zones, geofence and workspace", 0.0, None),
    "scan_timeout": ("A configured scan older than this -> stop", 0.0, None),
    "scan_pose": ("Laser pose in the base frame [x, y, yaw]", None, None),
    "stop_zone": (
        "Polygon (base frame): no motion that takes any obstacle point deeper",
        None,
        None,
    ),
    "slowdown_zone": (
        "Polygon (base frame): scan points inside -> scale by slowdown_ratio",
        None,
        None,
    ),
    "slowdown_ratio": ("Velocity scale while the slowdown zone is occupied", 0.0, 1.0),
    "footprint": ("Robot footprint polygon for the time-to-collision check", None, None),
    "time_to_collision_s": ("Scale velocity by t_collision / this; 0 disables", 0.0, None),
    "geofence": (
        "Polygon in the odometry frame the robot must stay inside; [] disables",
        None,
        None,
    ),
    "geofence_margin": ("Slow down within this distance of the geofence", 0.0, None),
    "odom_timeout": ("Odometry older than this (with a geofence) -> stop", 0.0, None),
    "gripper_on_estop": ("Gripper output under e-stop: hold, open or close", None, None),
    "pose_timeout": ("End-effector pose older than this (with a workspace) -> stop", 0.0, None),
    "workspace_min": ("Workspace box lower corner [x, y, z]; [] disables the box", None, None),
    "workspace_max": ("Workspace box upper corner [x, y, z]", None, None),
    "workspace_sphere_center": ("Workspace sphere centre [x, y, z]", None, None),
    "workspace_sphere_radius": ("Workspace sphere radius; 0 disables", 0.0, None),
    "workspace_margin": ("Slow down within this distance of a workspace bound", 0.0, None),
}
"""Description, lower and upper bound of every parameter, for the node's declarations."""


def param_names(mode: str) -> tuple[str, ...]:
    """Parameters that make sense in `mode` (the node declares only these)."""
    skip = ARM_ONLY if action_spaces.get(mode).platform == "base" else MOBILE_ONLY
    return tuple(f.name for f in fields(SafetyConfig) if f.name not in skip)


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


# A lower output rate is looser too: the watchdog, the ramps and every zone act later.
_TIGHTER_IS_HIGHER = frozenset(
    {
        "min_confidence",
        "lookahead_s",
        "time_to_collision_s",
        "geofence_margin",
        "workspace_margin",
        "output_rate_hz",
    }
)
_TIGHTER_IS_LOWER = frozenset(
    {
        "max_linear_speed",
        "max_angular_speed",
        "max_input_magnitude",
        "command_timeout",
        "max_command_age",
        "future_tolerance",
        "scan_timeout",
        "odom_timeout",
        "pose_timeout",
        "max_confidence_age",
        "slowdown_ratio",
    }
)
# Lower is tighter, except 0: it switches these checks off, so it is the loosest value.
_ZERO_DISABLES = frozenset({"fault_max_rejections", "workspace_sphere_radius"})
_ANY_CHANGE = frozenset(
    {"command_frame", "scan_pose", "gripper_on_estop", "workspace_sphere_center", "footprint"}
)
_ZONES = frozenset({"stop_zone", "slowdown_zone", "geofence"})


def loosened(old: SafetyConfig, new: SafetyConfig) -> list[str]:
    """Names of the limits `new` makes less strict than `old`, in field order.

    Tightening (lower speeds, shorter timeouts, a zone added where there was none) is not
    listed. Changes whose effect cannot be ordered (another frame, another polygon, another
    laser pose) count as loosening: only an explicit permission may make them at run time.
    """
    names = []
    for spec in fields(SafetyConfig):
        name = spec.name
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if name in _ZERO_DISABLES:
            worse = b == 0 or (a != 0 and b > a)
        elif name in _TIGHTER_IS_LOWER:
            worse = b > a
        elif name in _TIGHTER_IS_HIGHER or name == "fault_window_s":
            worse = b < a
        elif name == "max_velocity" or name == "max_accel":
            worse = len(a) != len(b) or any(y > x for x, y in zip(a, b, strict=True))
        elif name in ("min_velocity", "max_decel", "deadband"):
            worse = len(a) != len(b) or any(y < x for x, y in zip(a, b, strict=True))
        elif name == "hold_zero_s":
            worse = a < 0 or (0 <= b < a)
        elif name in ("scale_velocities", "accept_zero_stamp"):
            worse = b if name == "accept_zero_stamp" else not b
        elif name in _ZONES:
            worse = bool(a)
        elif name == "workspace_min":
            worse = bool(a) and (not b or any(y < x for x, y in zip(a, b, strict=True)))
        elif name == "workspace_max":
            worse = bool(a) and (not b or any(y > x for x, y in zip(a, b, strict=True)))
        elif name in _ANY_CHANGE:
            worse = True
        else:  # mode: not a limit (and it cannot change at run time anyway)
            worse = False
        if worse:
            names.append(name)
    return names


def unknown_keys(params: Mapping[str, Any], extra: Sequence[str] = ()) -> list[str]:
    """Keys of a vla_safety parameter section that no parameter is called: a misspelling there
    would otherwise fall back to the default silently. `extra` names node-level parameters."""
    known = {spec.name for spec in fields(SafetyConfig)} | set(extra) | {"use_sim_time"}
    return sorted(k for k in params if k not in known and not _is_ros_builtin(k))


def _is_ros_builtin(name: str) -> bool:
    return name.startswith("qos_overrides.") or name == "start_type_description_service"


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
