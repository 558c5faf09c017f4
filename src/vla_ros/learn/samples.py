"""Training samples as deployed: which frames a sample's history holds, and its target chunk.

The inference node feeds the LSTM one feature per *event*, not per control step: after an
inference, the next one starts when the chunk runs low (`chunk - chunk_low_threshold` actions
later), earlier on a scene change, but never sooner than `min_interval_s`, and at the latest at
the heartbeat. So at deployment consecutive history features are 2-7 control steps apart with
the shipped `config/mobile.yaml` (period 0.1 s, chunk 10). A policy trained on consecutive steps
(RoboVLMs) sees a different temporal spacing than it meets on the robot; `event` histories draw
each gap uniformly from that range instead. `step` histories (gap 1) reproduce RoboVLMs.

Pure numpy: the property tests drive these functions directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_ros.core.trigger import TRIGGER_BOUNDS, TriggerConfig

HISTORY_MODES = ("event", "step")


@dataclass(frozen=True)
class HistoryCadence:
    """Gaps between consecutive history frames, in control steps (inclusive range)."""

    mode: str
    min_steps: int
    max_steps: int

    def __post_init__(self) -> None:
        if self.mode not in HISTORY_MODES:
            raise ValueError(
                f"history mode must be one of {list(HISTORY_MODES)}, got {self.mode!r}"
            )
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(
                f"history gaps must satisfy 1 <= min ({self.min_steps}) <= max ({self.max_steps})"
            )

    def to_dict(self, period_s: float) -> dict[str, object]:
        """The `history_cadence` entry of policy.yaml."""
        return {
            "mode": self.mode,
            "min_steps": self.min_steps,
            "max_steps": self.max_steps,
            "period_s": period_s,
            "min_s": round(self.min_steps * period_s, 6),
            "max_s": round(self.max_steps * period_s, 6),
        }


def event_cadence(trigger: TriggerConfig, period_s: float, chunk: int) -> HistoryCadence:
    """The gap range the event trigger produces for a chunk of `chunk` actions of `period_s`."""
    if not (math.isfinite(period_s) and period_s > 0):
        raise ValueError(f"period_s must be > 0, got {period_s}")
    low = max(1, math.ceil(trigger.min_interval_s / period_s - 1e-9))
    chunk_low = max(1, chunk - trigger.chunk_low_threshold)
    heartbeat = max(1, math.floor(trigger.max_interval_s / period_s + 1e-9))
    high = max(low, min(chunk_low, heartbeat))
    return HistoryCadence("event", low, high)


def deployed_trigger(action_space: str, params: str | Path | None = None) -> TriggerConfig:
    """The trigger the inference node runs: from `params`, else the action space's shipped
    file (config/mobile.yaml or config/arm.yaml), whose trigger settings differ."""
    from vla_ros.params import default_params_file

    return trigger_from_params(params if params else default_params_file(action_space))


def trigger_from_params(path: str | Path, node: str = "vla_inference") -> TriggerConfig:
    """The TriggerConfig a parameter file gives the inference node (defaults where unset), read
    as rcl reads it: wildcard sections, then the node's section at any namespace
    (`/robot1/vla_inference:` too); bounds are the node's (`TRIGGER_BOUNDS`)."""
    from vla_ros.params import load_node_params

    params = load_node_params(path, node)
    return TriggerConfig(**{name: params[name] for name in TRIGGER_BOUNDS if name in params})


def history_indices(target: int, window: int, gaps: np.ndarray) -> np.ndarray:
    """Frame indices (oldest first, all >= 0, ending at `target`) of a history of <= `window`.

    `gaps` holds at least window - 1 gaps; the history stops early at the episode start, as
    the deployed history does after a reset.
    """
    if target < 0 or window < 1:
        raise ValueError(f"target must be >= 0 and window >= 1, got {target}, {window}")
    back = np.concatenate([[0], np.cumsum(gaps[: window - 1])])
    indices = target - back
    return indices[indices >= 0][::-1].astype(np.int64)


def draw_gaps(rng: np.random.Generator, cadence: HistoryCadence, count: int) -> np.ndarray:
    return rng.integers(cadence.min_steps, cadence.max_steps + 1, size=count)


def chunk_target(actions: np.ndarray, target: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Actions target..target+chunk-1 of an episode and the mask of those that exist.

    Past the episode end the last action is repeated under a zero mask (no loss there).
    """
    length = actions.shape[0]
    steps = np.arange(target, target + chunk)
    mask = (steps < length).astype(np.float32)
    return actions[np.minimum(steps, length - 1)], mask
