"""Plays predicted action chunks against the clock so the robot keeps moving between inferences.

Action k of a chunk is meant for `frame_stamp + k * period` (the frame the model saw, not the time
the model finished), so the actions whose slot passed while the model ran are skipped: this is
the latency compensation that keeps a 100 ms model from replaying stale motion. A frame stamped
after `now` (camera clock skew, or a clock that jumped back while the model ran) counts from `now`
instead, so a chunk never holds its first action for longer than one period.

Temporal blending (optional): overlapping chunks each predict an action for the current slot.
They are combined by an exponentially weighted average, newest first: with `blend_weight` = a,
the newest chunk gets weight a, the one before a(1-a), then a(1-a)^2, ..., and the oldest still
covering the slot takes the remaining (1-a)^(n-1) so the weights sum to 1. a = 1 means "newest
only"; smaller a smooths more and reacts slower. The gripper is binary and is never averaged: it
always comes from the newest chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vla_ros.policy.types import ActionChunk

_SLOT_EPS = 1e-9
"""Slot boundaries computed from float seconds: k * period must land in slot k, not k - 1."""


def blend_weights(count: int, blend_weight: float) -> np.ndarray:
    """Exponential weights for `count` candidates ordered newest first; non-negative, sum 1."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not 0.0 < blend_weight <= 1.0:
        raise ValueError(f"blend_weight must be in (0, 1], got {blend_weight}")
    keep = 1.0 - blend_weight
    weights = np.array([blend_weight * keep**index for index in range(count)], dtype=float)
    weights[-1] = keep ** (count - 1)
    return weights


@dataclass(frozen=True)
class _Scheduled:
    stamp_s: float
    motion: np.ndarray
    gripper: np.ndarray | None

    def index_at(self, now_s: float, period_s: float) -> int:
        """Slot of `now_s`, never negative."""
        return max(0, math.floor((now_s - self.stamp_s) / period_s + _SLOT_EPS))

    @property
    def length(self) -> int:
        return int(self.motion.shape[0])


class ChunkExecutor:
    """Time-indexed playback of action chunks; not thread-safe (the node holds the lock).

    The clock must not run backwards: if it does (a bag replay loops, sim time restarts) every
    stored chunk is dropped so an old plan cannot replay against the wrong time, and the node
    falls back to a zero command until the next inference.
    """

    def __init__(
        self,
        action_period_s: float,
        blend: bool = False,
        blend_weight: float = 0.5,
        max_chunks: int = 8,
    ) -> None:
        if not (math.isfinite(action_period_s) and action_period_s > 0):
            raise ValueError(f"action_period_s must be > 0, got {action_period_s}")
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
        self.action_period_s = float(action_period_s)
        self.max_chunks = max_chunks
        self.blend = False
        self.blend_weight = 1.0
        self.configure(blend, blend_weight)
        self._chunks: list[_Scheduled] = []
        self._last_now_s = -math.inf

    def configure(self, blend: bool, blend_weight: float) -> None:
        """Switch blending at run time; applies from the next command on."""
        if not 0.0 < blend_weight <= 1.0:
            raise ValueError(f"blend_weight must be in (0, 1], got {blend_weight}")
        self.blend = bool(blend)
        self.blend_weight = float(blend_weight)

    def reset(self) -> None:
        """Drop every chunk (reset service, cleared instruction, policy failure): zero follows."""
        self._chunks = []
        self._last_now_s = -math.inf

    def set_chunk(self, chunk: ActionChunk, frame_stamp_s: float, now_s: float) -> int:
        """Schedule `chunk` from the frame it was computed on; returns the actions already late.

        Without blending the new chunk replaces whatever was left of the previous one.
        """
        if not math.isclose(chunk.action_period_s, self.action_period_s, rel_tol=1e-6):
            raise ValueError(
                f"chunk action_period_s {chunk.action_period_s} differs from the executor's "
                f"{self.action_period_s}"
            )
        if not math.isfinite(frame_stamp_s):
            raise ValueError(f"frame_stamp_s must be finite, got {frame_stamp_s}")
        if not np.all(np.isfinite(chunk.motion)):
            raise ValueError("chunk motion contains NaN or Inf")
        if chunk.gripper is not None and not np.all(np.isfinite(chunk.gripper)):
            raise ValueError("chunk gripper contains NaN or Inf")
        self._advance(now_s)
        gripper = None if chunk.gripper is None else np.array(chunk.gripper, dtype=float)
        start_s = min(float(frame_stamp_s), now_s)
        entry = _Scheduled(start_s, np.array(chunk.motion, dtype=float), gripper)
        if self.blend:
            self._chunks = [*self._live(now_s), entry][-self.max_chunks :]
        else:
            self._chunks = [entry]
        return min(entry.length, entry.index_at(now_s, self.action_period_s))

    def remaining(self, now_s: float) -> int:
        """Actions of the newest chunk not yet finished (the current one included); 0 if none."""
        self._advance(now_s)
        if not self._chunks:
            return 0
        newest = self._chunks[-1]
        return max(0, newest.length - newest.index_at(now_s, self.action_period_s))

    def upcoming(self, now_s: float) -> np.ndarray | None:
        """Motion rows of the newest chunk from the current slot on; None when nothing is left."""
        self._advance(now_s)
        if not self._chunks:
            return None
        newest = self._chunks[-1]
        index = newest.index_at(now_s, self.action_period_s)
        return newest.motion[index:].copy() if index < newest.length else None

    def command_at(self, now_s: float) -> tuple[np.ndarray, float | None] | None:
        """The command for `now_s`: (motion, gripper or None), or None when nothing is left."""
        self._advance(now_s)
        live = self._live(now_s)
        if not live:
            return None
        newest = live[-1]
        newest_index = newest.index_at(now_s, self.action_period_s)
        gripper = None if newest.gripper is None else float(newest.gripper[newest_index])
        if not self.blend or len(live) == 1:
            return newest.motion[newest_index].copy(), gripper
        candidates = np.stack(
            [entry.motion[entry.index_at(now_s, self.action_period_s)] for entry in reversed(live)]
        )
        weights = blend_weights(len(live), self.blend_weight)
        return weights @ candidates, gripper

    def _live(self, now_s: float) -> list[_Scheduled]:
        return [
            entry
            for entry in self._chunks
            if entry.index_at(now_s, self.action_period_s) < entry.length
        ]

    def _advance(self, now_s: float) -> None:
        if not math.isfinite(now_s):
            raise ValueError(f"now_s must be finite, got {now_s}")
        if now_s < self._last_now_s:
            self._chunks = []
        self._last_now_s = now_s
