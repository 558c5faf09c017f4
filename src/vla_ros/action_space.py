"""The robot action spaces, in one registry: names, axes, units, messages, topics, default limits.

Policy, codec, safety, nodes, launch, bringup, bag tools and CLI all look an action space up here,
so a new kind of robot is one `register` call (plus its parameter file), not a hunt for branches.
Pure Python: no ROS, no torch, importable from launch files and `vla-ros --help`.

Canonical names carry the motion DOF count (`mobile3`, `arm7`); the short names (`mobile`, `arm`)
are aliases every command, node parameter and launch argument accepts and turns into the
canonical name at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TWIST_AXES = ("vx", "vy", "vz", "wx", "wy", "wz")
"""A Twist as a 6-vector: linear x, y, z then angular x, y, z."""
TWIST_TYPE = "geometry_msgs/msg/Twist"
TWIST_STAMPED_TYPE = "geometry_msgs/msg/TwistStamped"
GRIPPER_TYPE = "std_msgs/msg/Float64"
GRIPPER_RAW_TOPIC = "vla/gripper_raw"
GRIPPER_TOPIC = "gripper/command"
TELEOP_GRIPPER_TOPIC = "teleop/gripper"
"""The teleop input's optional gripper target; like the policy's, it acts only while it drives."""
DEFAULT_MODE = "mobile3"
"""The action space commands, launch files and nodes assume when none is given."""
PLATFORMS = ("base", "arm")
"""base: a planar mobile robot (laser zones, geofence, odometry apply); arm: an end effector
(workspace bounds and an end-effector pose apply)."""


@dataclass(frozen=True)
class ActionSpaceSpec:
    """Everything the stack needs to know about one action space.

    `axes` are the motion vector's components, a subsequence of `TWIST_AXES` in that order;
    `stamped` spaces command `TwistStamped` (stamp and frame checked), the others `Twist`.
    `max_velocity`/`max_accel`/`max_decel` are the safety defaults per axis (min = -max).
    """

    name: str
    aliases: tuple[str, ...]
    axes: tuple[str, ...]
    platform: str
    gripper: bool
    stamped: bool
    raw_topic: str
    output_topic: str
    params_file: str
    max_velocity: tuple[float, ...]
    max_accel: tuple[float, ...]
    max_decel: tuple[float, ...]
    description: str

    def __post_init__(self) -> None:
        where = [TWIST_AXES.index(a) if a in TWIST_AXES else -1 for a in self.axes]
        if not self.axes or -1 in where or where != sorted(set(where)):
            raise ValueError(
                f"{self.name}: axes must be a non-empty ordered subset of {TWIST_AXES}, "
                f"got {self.axes}"
            )
        if self.platform not in PLATFORMS:
            raise ValueError(f"{self.name}: platform must be one of {PLATFORMS}")
        for field_name in ("max_velocity", "max_accel", "max_decel"):
            values = getattr(self, field_name)
            if len(values) != len(self.axes) or not all(v > 0 for v in values):
                raise ValueError(
                    f"{self.name}: {field_name} needs {len(self.axes)} positive values, "
                    f"got {values}"
                )

    @property
    def dof(self) -> int:
        """Continuous motion dimensions (the gripper, if any, comes on top)."""
        return len(self.axes)

    @property
    def twist_index(self) -> tuple[int, ...]:
        """Where each motion axis sits in the Twist 6-vector."""
        return tuple(TWIST_AXES.index(a) for a in self.axes)

    @property
    def linear_axes(self) -> tuple[int, ...]:
        return tuple(i for i, a in enumerate(self.axes) if a.startswith("v"))

    @property
    def angular_axes(self) -> tuple[int, ...]:
        return tuple(i for i, a in enumerate(self.axes) if a.startswith("w"))

    @property
    def units(self) -> tuple[str, ...]:
        return tuple("m/s" if a.startswith("v") else "rad/s" for a in self.axes)

    @property
    def command_type(self) -> str:
        """ROS type name of the raw and the safe command."""
        return TWIST_STAMPED_TYPE if self.stamped else TWIST_TYPE

    @property
    def raw_types(self) -> tuple[str, ...]:
        """Types the safety node may read on `raw_topic` (unstamped spaces may opt into stamps)."""
        return (TWIST_STAMPED_TYPE,) if self.stamped else (TWIST_TYPE, TWIST_STAMPED_TYPE)

    @property
    def teleop_topic(self) -> str:
        """The safety node's always-enabled teleop input, named after the output it stands for."""
        return "teleop/" + self.output_topic.rsplit("/", 1)[-1]

    @property
    def output_topics(self) -> tuple[str, ...]:
        """Every topic the safety node commands the robot on."""
        return (self.output_topic, GRIPPER_TOPIC) if self.gripper else (self.output_topic,)

    def safety_defaults(self) -> dict[str, Any]:
        """Default velocity, speed-norm and ramp limits for `SafetyConfig.for_mode`.

        A space without linear (or angular) axes still gets a positive norm limit for that part,
        which the safety config requires; it constrains nothing there.
        """
        linear = [self.max_velocity[i] for i in self.linear_axes] or list(self.max_velocity)
        angular = [self.max_velocity[i] for i in self.angular_axes] or list(self.max_velocity)
        return {
            "max_velocity": self.max_velocity,
            "min_velocity": tuple(-v for v in self.max_velocity),
            "max_linear_speed": max(linear),
            "max_angular_speed": max(angular),
            "max_accel": self.max_accel,
            "max_decel": self.max_decel,
            "deadband": (0.0,) * self.dof,
        }

    def to_twist(self, motion: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Motion vector -> (linear xyz, angular xyz); axes the space lacks are exactly 0.0."""
        if len(motion) != self.dof:
            raise ValueError(f"{self.name} motion must have {self.dof} values, got {len(motion)}")
        six = [0.0] * 6
        for index, value in zip(self.twist_index, motion, strict=True):
            six[index] = float(value)
        return tuple(six[:3]), tuple(six[3:])

    def from_twist(self, six: Sequence[float]) -> tuple[float, ...]:
        """Twist 6-vector -> this space's motion vector (the inverse of `to_twist`)."""
        return tuple(float(six[i]) for i in self.twist_index)

    def describe(self) -> str:
        names = "/".join((self.name, *self.aliases))
        return f"{names}: {self.description}"


_REGISTRY: dict[str, ActionSpaceSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: ActionSpaceSpec) -> ActionSpaceSpec:
    """Add an action space; its name and aliases must be new."""
    taken = [n for n in (spec.name, *spec.aliases) if n in _ALIASES]
    if taken:
        raise ValueError(f"action space name {taken[0]!r} is already registered")
    _REGISTRY[spec.name] = spec
    for name in (spec.name, *spec.aliases):
        _ALIASES[name] = spec.name
    return spec


def unregister(name: str) -> None:
    """Remove a registered action space (tests that register their own)."""
    spec = _REGISTRY.pop(canonical(name))
    for alias in (spec.name, *spec.aliases):
        _ALIASES.pop(alias, None)


def names() -> tuple[str, ...]:
    """Canonical names, in registration order."""
    return tuple(_REGISTRY)


def choices() -> tuple[str, ...]:
    """Every accepted spelling: canonical names, then aliases."""
    return (*_REGISTRY, *(a for a, n in _ALIASES.items() if a != n))


def canonical(name: object, what: str = "mode") -> str:
    """The canonical name for `name` (an alias or a canonical name); ValueError if unknown,
    naming the parameter (`what`) and every accepted spelling."""
    if isinstance(name, str) and name.strip() in _ALIASES:
        return _ALIASES[name.strip()]
    raise ValueError(f"{what} must be one of {_spelled()}, got {name!r}")


def get(name: object, what: str = "mode") -> ActionSpaceSpec:
    """The spec for an action space name or alias; ValueError naming the choices if unknown."""
    return _REGISTRY[canonical(name, what)]


def find(dof: int, gripper: bool) -> ActionSpaceSpec | None:
    """The first registered space with this motion DOF and gripper (checkpoint import)."""
    return next((s for s in _REGISTRY.values() if s.dof == dof and s.gripper == gripper), None)


def _spelled() -> str:
    return ", ".join(
        f"{s.name} ({'/'.join(s.aliases)})" if s.aliases else s.name for s in _REGISTRY.values()
    )


class _Choices(Sequence[str]):
    """Live view of `choices()`: node parameters declared later see spaces registered since."""

    def __getitem__(self, index: Any) -> Any:
        return choices()[index]

    def __len__(self) -> int:
        return len(choices())

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and value in _ALIASES

    def __repr__(self) -> str:
        return repr(list(choices()))


class _View(Mapping[str, Any]):
    """Live `{canonical name: spec.<attribute>}` mapping for code that indexes tables by mode;
    only canonical names are keys, so stored files and parameters keep one spelling."""

    def __init__(self, attribute: str) -> None:
        self._attribute = attribute

    def __getitem__(self, name: str) -> Any:
        if name not in _REGISTRY:
            raise KeyError(name)
        return getattr(_REGISTRY[name], self._attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(_REGISTRY)


CHOICES: Sequence[str] = _Choices()
"""Every accepted spelling, live (for `ParamSpec(choices=...)`)."""


def view(attribute: str) -> Mapping[str, Any]:
    """A live mapping from each canonical name to one attribute of its spec."""
    return _View(attribute)


def mode_type(text: str) -> str:
    """argparse `type=`: an action space name or alias -> its canonical name."""
    try:
        return canonical(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_mode_argument(
    parser: argparse.ArgumentParser, default: str | None = DEFAULT_MODE, help_extra: str = ""
) -> None:
    """`--mode` with one spelling and help text for every command that takes an action space."""
    spaces = "; ".join(s.describe() for s in _REGISTRY.values())
    parser.add_argument(
        "--mode",
        type=mode_type,
        default=default,
        metavar="MODE",
        help=f"action space: {spaces}{help_extra}",
    )


register(
    ActionSpaceSpec(
        name="mobile3",
        aliases=("mobile",),
        axes=("vx", "vy", "wz"),
        platform="base",
        gripper=False,
        stamped=False,
        raw_topic="vla/cmd_raw",
        output_topic="cmd_vel",
        params_file="mobile.yaml",
        max_velocity=(0.5, 0.5, 1.0),
        max_accel=(1.0, 1.0, 2.0),
        max_decel=(1.5, 1.5, 3.0),
        description="planar base, Twist (vx, vy m/s; wz rad/s) on /cmd_vel",
    )
)
register(
    ActionSpaceSpec(
        name="arm7",
        aliases=("arm",),
        axes=TWIST_AXES,
        platform="arm",
        gripper=True,
        stamped=True,
        raw_topic="vla/arm_cmd_raw",
        output_topic="servo_node/delta_twist_cmds",
        params_file="arm.yaml",
        max_velocity=(0.25, 0.25, 0.25, 0.8, 0.8, 0.8),
        max_accel=(0.5, 0.5, 0.5, 1.6, 1.6, 1.6),
        max_decel=(1.0, 1.0, 1.0, 3.2, 3.2, 3.2),
        description="end-effector TwistStamped for MoveIt Servo + gripper (1 open, 0 closed)",
    )
)
