"""Input arbitration, twist_mux style, and the publish-on-arrival rate limit. No ROS in here.

Several command sources (the policy, a joystick, a teleop console) feed the one validator. Each
has a priority and a timeout; the highest-priority source with a fresh command drives, so a
joystick takes over as soon as it publishes and hands back when it goes quiet. Locks (Bool
topics) block every source at or below their priority. A *gated* source counts only while its
enable input is true: the policy's source is enabled by /vla/active, which the inference node
holds true only while an instruction is active, so a stray publisher on /vla/cmd_raw with no
instruction drives nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class InputSpec:
    """One command source. `timeout` <= 0 means: only the validator's command_timeout."""

    name: str
    priority: int = 0
    timeout: float = 0.0
    gated: bool = False


@dataclass(frozen=True)
class LockSpec:
    """A lock blocks every source whose priority is <= its own while engaged."""

    name: str
    priority: int = 0


DEFAULT_INPUTS = (InputSpec("vla"),)
"""The core's default: one ungated source, i.e. the validator before arbitration existed."""


class Arbiter:
    """Which sources may submit, and which one drives."""

    def __init__(self, inputs: Sequence[InputSpec], locks: Sequence[LockSpec] = ()) -> None:
        names = [spec.name for spec in inputs]
        if not names:
            raise ValueError("at least one input source is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"input names must be unique, got {names}")
        lock_names = [spec.name for spec in locks]
        if len(set(lock_names)) != len(lock_names):
            raise ValueError(f"lock names must be unique, got {lock_names}")
        for spec in inputs:
            if not math.isfinite(spec.timeout):
                raise ValueError(f"input {spec.name}: timeout must be finite")
        self.inputs = {spec.name: spec for spec in inputs}
        self.locks = {spec.name: spec for spec in locks}
        self._enabled = {spec.name: not spec.gated for spec in inputs}
        self._engaged = {spec.name: False for spec in locks}

    def set_enabled(self, name: str, enabled: bool) -> None:
        if name not in self.inputs:
            raise KeyError(f"unknown input {name!r}")
        self._enabled[name] = bool(enabled) or not self.inputs[name].gated

    def set_lock(self, name: str, engaged: bool) -> None:
        if name not in self.locks:
            raise KeyError(f"unknown lock {name!r}")
        self._engaged[name] = bool(engaged)

    def enabled(self, name: str) -> bool:
        return self._enabled[name]

    def engaged_locks(self) -> tuple[str, ...]:
        return tuple(name for name, on in self._engaged.items() if on)

    def refusal(self, name: str) -> tuple[str, str] | None:
        """(code, detail) if `name` may not submit now, else None."""
        spec = self.inputs.get(name)
        if spec is None:
            return "unknown_source", f"{name!r} is not one of {sorted(self.inputs)}"
        if not self._enabled[name]:
            return "source_disabled", f"{name} is not enabled"
        for lock, engaged in self._engaged.items():
            if engaged and spec.priority <= self.locks[lock].priority:
                return "source_locked", f"{name} blocked by lock {lock}"
        return None

    def pick(self, fresh: Sequence[str]) -> str | None:
        """The allowed source of highest priority among `fresh` (first declared on a tie)."""
        best: InputSpec | None = None
        for spec in self.inputs.values():
            allowed = spec.name in fresh and self.refusal(spec.name) is None
            if allowed and (best is None or spec.priority > best.priority):
                best = spec
        return None if best is None else best.name


class RateLimiter:
    """Token bucket at `rate_hz` holding up to `burst` tokens.

    Lets a command be published the moment it arrives when inputs come at (or jitter around) the
    output rate, and caps a flood at the output rate; the output timer fills the gaps.
    """

    def __init__(self, rate_hz: float, burst: float = 2.0) -> None:
        if rate_hz <= 0 or burst < 1:
            raise ValueError("rate_hz must be > 0 and burst >= 1")
        self.rate_hz = rate_hz
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def allow(self, now_s: float) -> bool:
        """Take a token if one is there (time in seconds, any monotonic clock)."""
        if self._last is not None and now_s > self._last:
            self._tokens = min(self.burst, self._tokens + (now_s - self._last) * self.rate_hz)
        elif self._last is not None and now_s < self._last:
            self._tokens = min(self._tokens, 1.0)
        self._last = now_s
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
