"""Cheap scene-change score that tells the inference node when the view has moved on.

Choice: mean absolute difference of small colour thumbnails, with a per-value noise floor.
- Thumbnails (default 32x32, OpenCV INTER_AREA = box average) cost microseconds and average
  each thumbnail pixel over dozens to hundreds of camera pixels, which shrinks independent
  sensor noise by the square root of that count; JPEG blocking and mild blur vanish too.
- Colour, not grey: a red cup swapped for a green one of equal luminance is a real change.
- Differences up to `noise_floor` grey levels per value count as zero, so a static scene scores
  exactly 0 despite residual noise and rounding; above it the score grows linearly.
- Score = mean(max(|thumb - reference| - floor, 0)) / (255 - floor), hence always in [0, 1];
  0 for an identical frame, 1 only for a black<->white inversion, and monotone in the size and
  the strength of a change.
The reference is a keyframe chosen by the consumer (the frame the last inference used), so the
score measures "how different is now from what the policy last saw", not frame-to-frame jitter.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import cv2
import numpy as np


class SceneChangeDetector:
    """Scores frames against a reference keyframe; thread-safe (camera worker vs. keyframes)."""

    def __init__(
        self, thumbnail_size: int = 32, history: int = 64, noise_floor: float = 3.0
    ) -> None:
        if isinstance(thumbnail_size, bool) or not 2 <= int(thumbnail_size) <= 1024:
            raise ValueError(f"thumbnail_size must be in [2, 1024], got {thumbnail_size!r}")
        if isinstance(history, bool) or int(history) < 1:
            raise ValueError(f"history must be >= 1, got {history!r}")
        if not 0.0 <= noise_floor < 255.0:
            raise ValueError(f"noise_floor must be in [0, 255), got {noise_floor!r}")
        self.thumbnail_size = int(thumbnail_size)
        self.history = int(history)
        self.noise_floor = float(noise_floor)
        self._thumbnails: OrderedDict[int, np.ndarray] = OrderedDict()
        self._reference: np.ndarray | None = None
        self._reference_stamp_ns: int | None = None
        self._lock = threading.Lock()

    @property
    def reference_stamp_ns(self) -> int | None:
        """Stamp of the current reference keyframe, None before the first `set_reference`."""
        return self._reference_stamp_ns

    def update(self, rgb: np.ndarray, stamp_ns: int) -> float:
        """Score of `rgb` against the reference (1.0 without one); remembers its thumbnail."""
        thumbnail = self._thumbnail(rgb)
        stamp_ns = int(stamp_ns)
        with self._lock:
            self._thumbnails[stamp_ns] = thumbnail
            self._thumbnails.move_to_end(stamp_ns)
            while len(self._thumbnails) > self.history:
                self._thumbnails.popitem(last=False)
            reference = self._reference
        if reference is None:
            return 1.0
        excess = np.abs(thumbnail - reference) - self.noise_floor
        np.maximum(excess, 0.0, out=excess)
        return float(min(1.0, excess.mean() / (255.0 - self.noise_floor)))

    def set_reference(self, stamp_ns: int) -> bool:
        """Use the frame with this stamp as reference; True if it was still remembered.

        An unknown stamp (too old, or never seen) falls back to the newest frame, which is the
        best available estimate of what the consumer saw; with no frames at all nothing changes.
        """
        stamp_ns = int(stamp_ns)
        with self._lock:
            if stamp_ns in self._thumbnails:
                self._reference = self._thumbnails[stamp_ns]
                self._reference_stamp_ns = stamp_ns
                return True
            if self._thumbnails:
                newest = next(reversed(self._thumbnails))
                self._reference = self._thumbnails[newest]
                self._reference_stamp_ns = newest
            return False

    def _thumbnail(self, rgb: np.ndarray) -> np.ndarray:
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
            raise ValueError("scene frames must be uint8 numpy arrays")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise ValueError(f"scene frames must be (H, W, 3), got {rgb.shape}")
        size = (self.thumbnail_size, self.thumbnail_size)
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        return small.astype(np.float32)
