"""When to run the VLM: event triggering with a rate bound, coalescing and a heartbeat.

One PaliGemma-3B frame costs 30-90 ms on a Jetson Orin, so the model runs only when something
calls for it. The clock is passed in as float seconds (the node clock, so sim time works) which
keeps this module pure and lets property tests drive it with arbitrary time sequences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

KEYFRAME_STAMP_TOLERANCE_S = 1e-6
"""Stamps cross the wire as (sec, nanosec) and come back as float seconds; allow the rounding."""


class Cause(str, Enum):
    """Why an inference ran. Declaration order is the priority used to name a coalesced firing."""

    START = "start"
    INSTRUCTION = "instruction"
    EXPLICIT = "explicit"
    SCENE_CHANGE = "scene_change"
    CHUNK_LOW = "chunk_low"
    HEARTBEAT = "heartbeat"
    FRAME = "frame"


_PRIORITY = {cause: rank for rank, cause in enumerate(Cause)}


_NEW_HISTORY = frozenset({Cause.START, Cause.INSTRUCTION, Cause.EXPLICIT})
"""Causes after which the history starts over (or the operator asked): a seen frame is fine."""


TRIGGER_BOUNDS: dict[str, tuple[float, float]] = {
    "scene_change_threshold": (0.0, 1.0),
    "chunk_low_threshold": (0, 1000),
    "min_interval_s": (0.0, 60.0),
    "max_interval_s": (0.01, 3600.0),
}
"""The one place the trigger's limits live: the inference node's parameter descriptors and
training's `--trigger-params` both take them from here."""


@dataclass(frozen=True)
class TriggerConfig:
    """Thresholds of `EventTrigger`; validated so a bad parameter is refused, not half-applied.

    `chunk_low_threshold` fires once per chunk when its remaining actions drop to this count;
    `max_interval_s` is the heartbeat: an idle trigger fires at least this often.
    `every_frame` makes every new frame an event (the per-frame baseline the evaluation compares
    event triggering against); the rate bound and `busy` still apply.
    """

    scene_change_threshold: float = 0.15
    chunk_low_threshold: int = 3
    min_interval_s: float = 0.2
    max_interval_s: float = 2.0
    every_frame: bool = False

    def __post_init__(self) -> None:
        for name, (low, high) in TRIGGER_BOUNDS.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
        if self.min_interval_s > self.max_interval_s:
            raise ValueError(
                f"min_interval_s ({self.min_interval_s}) must be <= "
                f"max_interval_s ({self.max_interval_s})"
            )


@dataclass(frozen=True)
class Firing:
    """One inference to start now: `cause` names it, `causes` lists every event it answers."""

    cause: Cause
    causes: frozenset[Cause]
    time_s: float


class EventTrigger:
    """Decides when the VLM runs; not thread-safe (the node holds one lock around it).

    Rules:
    - Without an instruction nothing fires and no event is accepted.
    - Accepted events stay pending until a `poll` may fire: instruction set, no inference running
      (`busy`), and at least `min_interval_s` since the previous start. All pending events then
      fire together exactly once (they coalesce); none is ever lost or fired twice.
    - `start` is pending after construction and after `reset()`.
    - `chunk_low` and `heartbeat` are conditions checked by `poll` while idle; `chunk_low` fires at
      most once per chunk (re-armed by each successful inference). A clock that runs backwards
      counts as a heartbeat at once, so a restarted sim or bag clock never silences the trigger.
    - A scene-change score is measured against the camera's reference keyframe, which follows the
      keyframe we publish after each successful inference. Scores of frames captured before that
      keyframe went out compare against an outdated reference and would fire the same change
      twice, so they are not events: they are ignored when the frame stamp is older than the last
      successful `finish`, and those that arrived while the inference ran are dropped by it. A
      change that really happened meanwhile shows up again in the next frame's score.
    """

    def __init__(self, config: TriggerConfig | None = None) -> None:
        self.config = config if config is not None else TriggerConfig()
        self._instruction: str | None = None
        self._pending: set[Cause] = {Cause.START}
        self._busy = False
        self._last_start_s: float | None = None
        self._reference_since_s = -math.inf
        self._keyframe_stamp_s: float | None = None
        self._chunk_armed = False

    @property
    def instruction(self) -> str | None:
        return self._instruction

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def pending(self) -> frozenset[Cause]:
        return frozenset(self._pending)

    def set_instruction(self, text: str) -> bool:
        """Store a new instruction; True when it differs from the current one (an event).

        Blank text clears the instruction: nothing fires until a real one arrives.
        """
        stripped = text.strip()
        if not stripped:
            changed = self._instruction is not None
            self._instruction = None
            self._pending &= {Cause.START}
            self._chunk_armed = False
            return changed
        if stripped == self._instruction:
            return False
        self._instruction = stripped
        self._pending.add(Cause.INSTRUCTION)
        return True

    def request(self) -> bool:
        """An explicit trigger; refused (False) without an instruction."""
        if self._instruction is None:
            return False
        self._pending.add(Cause.EXPLICIT)
        return True

    def scene_change(
        self, score: float, frame_stamp_s: float, reference_stamp_s: float | None = None
    ) -> bool:
        """Offer the score of a frame; True when it is accepted as a scene-change event.

        A score is only meaningful against the current keyframe: one from a frame taken before
        the last keyframe went out, or (when the scorer says which reference it used) one measured
        against an older keyframe or against none yet (`reference_stamp_s` <= 0), would re-fire
        for a change the last inference already saw. None means the scorer does not say.
        """
        outdated_reference = (
            reference_stamp_s is not None
            and self._keyframe_stamp_s is not None
            and (
                reference_stamp_s <= 0.0
                or reference_stamp_s < self._keyframe_stamp_s - KEYFRAME_STAMP_TOLERANCE_S
            )
        )
        if (
            self._instruction is None
            or not math.isfinite(score)
            or score <= self.config.scene_change_threshold
            or frame_stamp_s < self._reference_since_s
            or outdated_reference
        ):
            return False
        self._pending.add(Cause.SCENE_CHANGE)
        return True

    def new_frame(self) -> bool:
        """A new frame arrived; True when that is an event (`every_frame` mode, instruction set)."""
        if not self.config.every_frame or self._instruction is None:
            return False
        self._pending.add(Cause.FRAME)
        return True

    def reset(self) -> None:
        """Start over: drop pending events and the chunk, the next inference is a `start`.

        An inference already running still has to `finish`; its result belongs to the old episode
        and the caller discards it.
        """
        self._pending = {Cause.START}
        self._chunk_armed = False

    def time_until_allowed(self, now_s: float) -> float:
        """Seconds until the rate bound lets the next inference start (0 when it already may)."""
        last = self._last_start_s
        if last is None or now_s < last or now_s - last >= self.config.min_interval_s:
            return 0.0
        return last + self.config.min_interval_s - now_s

    def poll(
        self, now_s: float, remaining: int | None = None, fresh_frame: bool = True
    ) -> Firing | None:
        """Start an inference now if one is due; `remaining` = actions left in the executing chunk.

        `fresh_frame` False means the newest frame was already given to the policy: only causes
        that start a new history (start, instruction, explicit) may re-use it. Anything else waits
        pending for a new frame, because a repeated frame would enter the head's per-frame history
        twice. A returned firing marks the trigger busy until `finish`.
        """
        if self._instruction is None or self._busy:
            return None
        if self._last_start_s is not None and now_s < self._last_start_s:
            # The clock jumped back (sim reset, bag loop, NTP step): the rate bound and the
            # keyframe time belong to the old timeline and would stall the trigger until the
            # clock caught up, while the executor has already dropped its plan.
            self._last_start_s = None
            self._reference_since_s = -math.inf
            self._pending.add(Cause.HEARTBEAT)
        if (
            self._chunk_armed
            and remaining is not None
            and remaining <= self.config.chunk_low_threshold
        ):
            self._pending.add(Cause.CHUNK_LOW)
            self._chunk_armed = False
        if self.time_until_allowed(now_s) > 0:
            return None
        if (
            self._last_start_s is not None
            and now_s - self._last_start_s >= self.config.max_interval_s
        ):
            self._pending.add(Cause.HEARTBEAT)
        if not self._pending:
            return None
        if not fresh_frame and not self._pending & _NEW_HISTORY:
            return None
        causes = frozenset(self._pending)
        self._pending.clear()
        self._busy = True
        self._last_start_s = now_s
        return Firing(cause=min(causes, key=_PRIORITY.__getitem__), causes=causes, time_s=now_s)

    def finish(self, now_s: float, success: bool, keyframe_stamp_s: float | None = None) -> None:
        """The running inference ended; on success its chunk executes and its keyframe (the frame
        stamped `keyframe_stamp_s`) becomes the scene reference."""
        self._busy = False
        if success:
            self._chunk_armed = True
            self._reference_since_s = now_s
            self._keyframe_stamp_s = keyframe_stamp_s
            self._pending.discard(Cause.SCENE_CHANGE)
