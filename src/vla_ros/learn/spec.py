"""`dataset.yaml`: which topics of a bag become the images, instructions and actions.

Defaults match what the vla_ros stack and the simulator record on a mobile robot (camera,
`/vla/instruction`, `/cmd_vel`); an arm recording names its Servo twist and gripper topics.
Every field is validated so a typo fails with the field's name before any bag is read.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from vla_ros import action_space as action_spaces
from vla_ros.files import read_mapping
from vla_ros.policy.types import MOTION_DOF


class DatasetError(ValueError):
    """A dataset that cannot be built or read; the message names the bag, topic or file."""


@dataclass(frozen=True)
class DatasetSpec:
    """Topic map, control rate and episode rules of a dataset build.

    `control_rate_hz` is the rate of the resampled timeline; it becomes the policy's
    `action_period_s` (1 / rate), so it must be the rate the robot executes chunk actions at.
    Frames go through the resizes of deployment: the camera node's (to `camera_image_size`, its
    `image_size` parameter in config/*.yaml), then the policy preprocessor's (PIL filter
    `resample`, 3 = bicubic as in SigLIP) to the model's `image_size`.
    An episode ends at an instruction change, a message on a marker topic, a camera or action
    gap longer than `max_gap_s`, or a camera stamp that runs backwards (a restarted clock).
    """

    action_space: str = "mobile3"
    camera_topic: str = "/camera/image_raw"
    instruction_topic: str = "/vla/instruction"
    action_topic: str = "/cmd_vel"
    gripper_topic: str | None = None
    marker_topics: tuple[str, ...] = ("/vla/reset",)
    control_rate_hz: float = 10.0
    image_size: int = 224
    camera_image_size: int = 224
    resample: int = 3
    max_gap_s: float = 0.5
    min_episode_steps: int = 10
    val_fraction: float = 0.1
    header_stamps: bool = True
    seed: int = 0

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def motion_dof(self) -> int:
        return MOTION_DOF[self.action_space]

    @property
    def required_topics(self) -> tuple[str, ...]:
        topics = [self.camera_topic, self.instruction_topic, self.action_topic]
        if self.gripper_topic:
            topics.append(self.gripper_topic)
        return tuple(topics)

    def validate(self) -> DatasetSpec:
        """Raise DatasetError naming the first bad field; returns self for chaining."""
        if self.action_space not in MOTION_DOF:
            raise DatasetError(
                f"dataset spec: action_space must be one of {sorted(MOTION_DOF)}, "
                f"got {self.action_space!r}"
            )
        gripper = action_spaces.get(self.action_space).gripper
        if gripper and not self.gripper_topic:
            raise DatasetError(
                f"dataset spec: {self.action_space} needs gripper_topic (e.g. /gripper/command)"
            )
        if not gripper and self.gripper_topic:
            raise DatasetError(
                f"dataset spec: {self.action_space} has no gripper; leave gripper_topic unset"
            )
        for name in ("camera_topic", "instruction_topic", "action_topic"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.startswith("/"):
                raise DatasetError(f"dataset spec: {name} must be an absolute topic, got {value!r}")
        for name, low, high in (
            ("control_rate_hz", 0.1, 1000.0),
            ("max_gap_s", 1e-3, 3600.0),
            ("val_fraction", 0.0, 0.9),
        ):
            value = getattr(self, name)
            if not (_number(value) and low <= value <= high):
                raise DatasetError(
                    f"dataset spec: {name} must be in [{low}, {high}], got {value!r}"
                )
        # Images are stored at this size: 100000 px would ask for tens of GB before failing.
        for name, low, high in (
            ("image_size", 8, 4096),
            ("camera_image_size", 8, 4096),
            ("resample", 0, None),
            ("min_episode_steps", 1, None),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < low
                or (high is not None and value > high)
            ):
                bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
                raise DatasetError(
                    f"dataset spec: {name} must be an integer {bound}, got {value!r}"
                )
        if self.max_gap_s < self.period_s:
            raise DatasetError(
                f"dataset spec: max_gap_s ({self.max_gap_s}) must be >= one control period "
                f"({self.period_s:g} s)"
            )
        return self

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> DatasetSpec:
        """Read a spec file (YAML/JSON) if given; command-line overrides win over the file."""
        raw: dict[str, Any] = {}
        if path is not None:
            raw = read_mapping(path, "no dataset spec", "dataset fields", DatasetError)
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(raw) - known)
            if unknown:
                raise DatasetError(
                    f"{path}: unknown field(s) {', '.join(unknown)} (known: {sorted(known)})"
                )
        raw.update({key: value for key, value in overrides.items() if value is not None})
        if "marker_topics" in raw:
            markers = raw["marker_topics"]
            if isinstance(markers, str) or not isinstance(markers, list | tuple):
                raise DatasetError(f"dataset spec: marker_topics must be a list, got {markers!r}")
            raw["marker_topics"] = tuple(markers)
        return replace(cls(), **raw).validate()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["marker_topics"] = list(self.marker_topics)
        return data


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
