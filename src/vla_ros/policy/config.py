"""`policy.yaml`: everything about a policy that the Hugging Face backbone files do not say.

A model directory is the Hugging Face PaliGemma files (config.json, *.safetensors, tokenizer files,
preprocessor_config.json) plus `policy.yaml` (this schema) and `policy_head.safetensors` (action
token, LSTM and MLP heads). Every field is validated on load so that a wrong file fails with the
field's name instead of a shape error deep inside torch.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vla_ros import action_space as action_spaces
from vla_ros.files import read_mapping
from vla_ros.policy.types import MOTION_DOF, ActionSpace, PolicySpec

POLICY_FILE = "policy.yaml"
HEAD_FILE = "policy_head.safetensors"
FORMAT_VERSION = 1
HISTORY_MODES = ("window", "stateful")

# RoboVLMs CALVIN normalization bounds (brief, section 2).
ROBOVLMS_ACTION_MIN = -0.65
ROBOVLMS_ACTION_MAX = 0.65


@dataclass(frozen=True)
class PolicyConfig:
    """The contents of `policy.yaml`.

    `action_min`/`action_max` are the dataset-unit bounds the head was trained to map to [-1, 1];
    `action_scale` turns dataset units into SI velocities (m/s, rad/s) per motion dimension.
    """

    action_space: ActionSpace
    hidden_size: int
    window: int = 8
    chunk: int = 10
    lstm_hidden: int = 1024
    lstm_layers: int = 4
    mlp_hidden: tuple[int, ...] = (1024, 512, 256)
    history_mode: str = "window"
    action_period_s: float = 0.1
    action_min: tuple[float, ...] = ()
    action_max: tuple[float, ...] = ()
    action_scale: tuple[float, ...] = ()
    gripper_threshold: float = 0.5
    model_id: str = "unknown"
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def motion_dof(self) -> int:
        return MOTION_DOF[self.action_space]

    @property
    def has_gripper(self) -> bool:
        return action_spaces.get(self.action_space).gripper

    def spec(self, image_size: int, device: str = "cpu") -> PolicySpec:
        """What a node needs to know about this policy; the image size comes from the backbone."""
        return PolicySpec(
            action_space=self.action_space,
            chunk=self.chunk,
            window=self.window,
            action_period_s=self.action_period_s,
            image_size=image_size,
            model_id=self.model_id,
            device=device,
        )

    @classmethod
    def create(cls, action_space: str, hidden_size: int, **overrides: Any) -> PolicyConfig:
        """A config with RoboVLMs defaults filled in for the given action space."""
        if action_space not in MOTION_DOF:
            raise ValueError(
                f"action_space must be one of {sorted(MOTION_DOF)}, got {action_space!r}"
            )
        dof = MOTION_DOF[action_space]
        overrides.setdefault("action_min", (ROBOVLMS_ACTION_MIN,) * dof)
        overrides.setdefault("action_max", (ROBOVLMS_ACTION_MAX,) * dof)
        overrides.setdefault("action_scale", (1.0,) * dof)
        config = cls(action_space=action_space, hidden_size=hidden_size, **overrides)  # type: ignore[arg-type]
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"{POLICY_FILE}: format_version {self.format_version} is not supported "
                f"(this vla_ros reads {FORMAT_VERSION})"
            )
        if self.action_space not in MOTION_DOF:
            raise ValueError(
                f"{POLICY_FILE}: action_space must be one of {sorted(MOTION_DOF)}, "
                f"got {self.action_space!r}"
            )
        for name in ("hidden_size", "window", "chunk", "lstm_hidden", "lstm_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{POLICY_FILE}: {name} must be a positive integer, got {value!r}")
        if not self.mlp_hidden or any(
            isinstance(size, bool) or not isinstance(size, int) or size < 1
            for size in self.mlp_hidden
        ):
            raise ValueError(
                f"{POLICY_FILE}: mlp_hidden must be a non-empty list of positive integers, "
                f"got {list(self.mlp_hidden)!r}"
            )
        if self.history_mode not in HISTORY_MODES:
            raise ValueError(
                f"{POLICY_FILE}: history_mode must be one of {list(HISTORY_MODES)}, "
                f"got {self.history_mode!r}"
            )
        if not (_finite(self.action_period_s) and self.action_period_s > 0):
            raise ValueError(
                f"{POLICY_FILE}: action_period_s must be > 0, got {self.action_period_s!r}"
            )
        if not (_finite(self.gripper_threshold) and 0.0 < self.gripper_threshold < 1.0):
            raise ValueError(
                f"{POLICY_FILE}: gripper_threshold must be in (0, 1), "
                f"got {self.gripper_threshold!r}"
            )
        dof = self.motion_dof
        for name in ("action_min", "action_max", "action_scale"):
            values = getattr(self, name)
            if len(values) != dof or not all(_finite(v) for v in values):
                raise ValueError(
                    f"{POLICY_FILE}: {name} must list {dof} finite numbers for "
                    f"{self.action_space}, got {list(values)!r}"
                )
        for axis, (low, high) in enumerate(zip(self.action_min, self.action_max, strict=True)):
            if not low < high:
                raise ValueError(
                    f"{POLICY_FILE}: action_min[{axis}]={low} must be < action_max[{axis}]={high}"
                )

    @classmethod
    def load(cls, model_dir: str | Path) -> PolicyConfig:
        """Read and validate `policy.yaml`; unknown keys are kept in `extra`, not dropped,
        unless they look like a misspelled field."""
        path = Path(model_dir) / POLICY_FILE
        raw = read_mapping(path, "not a vla_ros model directory", "policy fields")
        known = {f.name for f in cls.__dataclass_fields__.values()} - {"extra"}
        missing = [name for name in ("action_space", "hidden_size") if name not in raw]
        if missing:
            raise ValueError(f"{path}: required field(s) missing: {', '.join(missing)}")
        kwargs = {key: value for key, value in raw.items() if key in known}
        for key in ("mlp_hidden", "action_min", "action_max", "action_scale"):
            if key in kwargs:
                if not isinstance(kwargs[key], list | tuple):
                    raise ValueError(f"{path}: {key} must be a list, got {kwargs[key]!r}")
                kwargs[key] = tuple(kwargs[key])
        extra = {key: value for key, value in raw.items() if key not in known}
        for key in extra:
            # Metadata (training record, provenance) is kept; a near-miss of a field is a typo
            # that would otherwise leave that field at its default.
            near = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.8)
            if near:
                raise ValueError(
                    f"{path}: {key!r} is not a policy field (did you mean {near[0]!r}?)"
                )
        config = cls(**kwargs, extra=extra)
        config.validate()
        return config

    def save(self, model_dir: str | Path) -> Path:
        """Write `policy.yaml` after validating, so no tool can produce a file `load` refuses."""
        self.validate()
        data = asdict(self)
        data.update(data.pop("extra"))
        for key in ("mlp_hidden", "action_min", "action_max", "action_scale"):
            data[key] = list(data[key])
        path = Path(model_dir) / POLICY_FILE
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
