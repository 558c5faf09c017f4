"""Rolling latency statistics for diagnostics and run summaries."""

from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np


class LatencyStats:
    """Thread-safe rolling window of durations in milliseconds; percentiles on demand."""

    def __init__(self, window: int = 1000) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._samples: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, milliseconds: float) -> None:
        with self._lock:
            self._samples.append(float(milliseconds))
            self.count += 1

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) of the window, NaN when empty."""
        with self._lock:
            if not self._samples:
                return float("nan")
            return float(np.percentile(np.fromiter(self._samples, dtype=float), q))

    def summary(self) -> dict[str, float]:
        return {
            "count": float(self.count),
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
        }


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95 % (z = 1.96) Wilson score interval of a rate: 157/160 says more than 3/3 does, and
    unlike the normal approximation it stays inside [0, 1] at 0 % and 100 %."""
    if trials <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}], got {successes}")
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # At 0 and n the bound is exactly the rate; floating point would leave it a hair inside.
    low = 0.0 if successes == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if successes == trials else min(1.0, max(p, centre + half))
    return (low, high)
