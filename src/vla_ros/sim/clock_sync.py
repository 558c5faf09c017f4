"""When the sim holds its clock: for a controller that fell behind, or for a slow inference.

Pure (the wall clock is injected), so the node only wires `/vla/busy` and its timer to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ClockHold:
    """A hold of the sim clock that gives up after a wall-clock timeout; counts both."""

    def __init__(self, wall: Callable[[], float] = time.monotonic) -> None:
        self.holds = 0
        self.timeouts = 0
        self._wall = wall
        self._since: float | None = None

    def holding(self, timeout_s: float) -> bool:
        """True while the hold (started by the first call since `release`) is younger than
        `timeout_s`; False once, when it times out, and the hold is released."""
        wall = self._wall()
        if self._since is None:
            self._since = wall
        if wall - self._since < timeout_s:
            self.holds += 1
            return True
        self.timeouts += 1
        self._since = None
        return False

    def release(self) -> None:
        self._since = None


class PolicyLockstep:
    """Every inference costs at most `latency_s` sim seconds: past that, the clock holds until
    the inference node reports it done (or the wall-clock timeout gives up on it)."""

    def __init__(self, wall: Callable[[], float] = time.monotonic) -> None:
        self.hold = ClockHold(wall)
        self._busy_since: float | None = None

    def busy(self, computing: bool, sim_s: float) -> None:
        """The inference node's `/vla/busy` at sim time `sim_s`."""
        if not computing:
            self._busy_since = None
            self.hold.release()
        elif self._busy_since is None:
            self._busy_since = sim_s

    def waiting(self, sim_s: float, latency_s: float, timeout_s: float) -> bool:
        """True when the clock must not advance at `sim_s`; `latency_s` < 0 never holds."""
        if latency_s < 0.0 or self._busy_since is None or sim_s - self._busy_since < latency_s:
            return False
        if self.hold.holding(timeout_s):
            return True
        self._busy_since = None
        return False
