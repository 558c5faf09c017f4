"""`TrainConfig`: every option of `vla-ros train`, declared once (default, help, choices) and
validated here; the CLI is generated from it. Torch-free, so building the `vla-ros` parser stays
cheap."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from vla_ros.learn.recipes import RECIPES

LR_SCHEDULES = ("constant", "cosine")
HISTORIES = ("event", "step")
STRATEGIES = ("ddp", "fsdp")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")

_TYPES: dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "str | None": str,
    "int | None": int,
    "float | None": float,
}
"""Annotation (as written, see `from __future__ import annotations`) -> argparse type."""


def option(
    default: Any = MISSING,
    help: str | Callable[[], str] = "",
    *,
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
    metavar: str | None = None,
    cli: bool = True,
) -> Any:
    """A TrainConfig field with what its `--option` says; `cli=False` keeps it off the CLI.
    A callable help or choices is read when used, so a registry's later entries count."""
    metadata = {"help": help, "choices": choices, "metavar": metavar, "cli": cli}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (stored next to the model for reproducibility)."""

    dataset: str = option(help="dataset directory from `dataset build`")
    init: str = option(help="model directory to start from")
    out: str = option(help="model directory to write")
    recipe: str = option(
        "head",
        lambda: "; ".join(f"{name}: {recipe.help}" for name, recipe in RECIPES.items()),
        choices=lambda: tuple(RECIPES),
    )
    epochs: int = option(10, "passes over the training split")
    max_steps: int | None = option(None, "stop after this many steps")
    max_minutes: float | None = option(
        None,
        "stop (and save) after this many minutes of training; the head recipe's feature "
        "caching and the first validation come before the clock starts",
    )
    batch_size: int = option(4, "per process")
    grad_accum: int = option(1, "gradient accumulation steps per optimizer step")
    lr: float = option(2e-5, "RoboVLMs: 2e-5")
    weight_decay: float = option(0.0, "AdamW weight decay (default: 0)")
    warmup_steps: int = option(0, "linear learning-rate warm-up steps (default: 0)")
    history: str = option(
        "event",
        "event: history spaced like the event trigger (train as deployed); step: per step",
        choices=HISTORIES,
    )
    window: int | None = option(
        None, "history frames per sample; saved in policy.yaml (default: the init model's)"
    )
    lr_schedule: str = option(
        "constant",
        "after warm-up: constant, or cosine decay to 0 over --epochs/--max-steps",
        choices=LR_SCHEDULES,
    )
    trigger_params: str | None = option(
        None,
        "params file whose trigger spaces the history "
        "(default: the model's config/mobile.yaml or config/arm.yaml)",
    )
    lora_rank: int = option(16, "lora: adapter rank r (alpha = 2r)")
    lora_vision: bool = option(False, "LoRA on SigLIP too")
    gradient_checkpointing: bool = option(
        False, "lora/full: recompute decoder activations in backward (3B on one 24 GB GPU)"
    )
    keep_best: bool = option(
        False, "save the weights of the epoch with the lowest validation loss, not the last"
    )
    strategy: str = option(
        "ddp", "multi-process data parallelism: DDP replicas or FSDP sharding", choices=STRATEGIES
    )
    mixed_precision: str = option(
        "auto",
        "Accelerate mixed precision; auto: bf16 on a CUDA GPU that supports it, else no",
        choices=MIXED_PRECISION,
    )
    seed: int = option(0, "seed of initialisation, sample order and history gaps (default: 0)")
    checkpoint_every: int = option(
        200, "save a resumable checkpoint under --out/checkpoints this often", metavar="STEPS"
    )
    resume: bool = option(False, "continue from --out/checkpoints")
    workers: int = option(0, "DataLoader worker processes")
    progress: bool = option(True, "no progress bar")
    overwrite: bool = option(False, "replace a non-empty --out")
    budget_calibration_steps: int = option(30, cli=False)
    """With `max_minutes` and the cosine schedule: steps timed before the run fixes how many
    steps fit the time budget, so the cosine ends at zero when time runs out (without this, a
    capped run stops at whatever rate its epoch plan had reached, often near the peak)."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One `--option` per field: a field without default is required, a bool is a flag
        (`--no-name` where it defaults to true)."""
        for spec in fields(cls):
            meta = spec.metadata
            if not meta.get("cli", True):
                continue
            flag = "--" + spec.name.replace("_", "-")
            kind = _TYPES[str(spec.type)]
            if kind is bool:
                if spec.default:
                    parser.add_argument(
                        "--no-" + spec.name.replace("_", "-"),
                        dest=spec.name,
                        action="store_false",
                        help=_live(meta["help"]),
                    )
                else:
                    parser.add_argument(flag, action="store_true", help=_live(meta["help"]))
                continue
            extra: dict[str, Any] = {"type": kind, "help": _live(meta["help"])}
            if spec.default is MISSING:
                extra["required"] = True
            else:
                extra["default"] = spec.default
            if meta["choices"] is not None:
                extra["choices"] = _live(meta["choices"])
            if meta["metavar"] is not None:
                extra["metavar"] = meta["metavar"]
            parser.add_argument(flag, **extra)

    def to_argv(self) -> list[str]:
        """The `vla-ros train` options that make this configuration: every value spelled out
        (so the line still means the same run after a default changes), a flag where a bool
        differs from its default, nothing for an unset optional value."""
        argv: list[str] = []
        for spec in fields(self):
            if not spec.metadata.get("cli", True):
                continue
            value = getattr(self, spec.name)
            flag = spec.name.replace("_", "-")
            if isinstance(value, bool):
                if value != spec.default:
                    argv.append(f"--{flag}" if value else f"--no-{flag}")
            elif value is not None:
                argv += [f"--{flag}", repr(value) if isinstance(value, float) else str(value)]
        return argv

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        names = [spec.name for spec in fields(cls)]
        return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the first option out of range; returns self."""
        for spec in fields(self):
            choices = _live(spec.metadata.get("choices"))
            value = getattr(self, spec.name)
            if choices is not None and value not in choices:
                raise ValueError(f"{spec.name} must be one of {list(choices)}, got {value!r}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        for name in ("epochs", "batch_size", "grad_accum", "lora_rank", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.max_minutes is not None and not (
            math.isfinite(self.max_minutes) and self.max_minutes > 0
        ):
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        RECIPES[self.recipe].check(self)
        if self.budget_calibration_steps < 1:
            raise ValueError(
                f"budget_calibration_steps must be >= 1, got {self.budget_calibration_steps}"
            )
        return self


def _live(value: Any) -> Any:
    return value() if callable(value) else value
