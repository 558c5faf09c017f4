"""Rolling latency statistics for diagnostics and run summaries."""

from __future__ import annotations

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
