"""Frame timing statistics, independent of PsychoPy so they can be unit-tested.

Durations are measured from flip return times (seconds, any monotonic clock). A frame counts as
dropped when its interval exceeds 1.5 nominal periods: under Xvfb there is no vsync, so the
nominal rate comes from configuration, not from PsychoPy's measurement.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class FrameStats:
    """Rolling frame-interval statistics over the last ``window`` frames."""

    def __init__(self, refresh_hz: float = 60.0, window: int = 600) -> None:
        self.period = 1.0 / refresh_hz
        self.intervals: deque[float] = deque(maxlen=window)
        self.n_frames = 0
        self.dropped = 0
        self.last_flip: float | None = None
        self._lock = threading.Lock()  # STATUS may be built on another thread

    def add(self, t_flip: float) -> None:
        """Record one flip; ``t_flip`` is when the flip returned."""
        with self._lock:
            if self.last_flip is not None:
                dt = t_flip - self.last_flip
                self.intervals.append(dt)
                if dt > 1.5 * self.period:
                    self.dropped += 1
            self.last_flip = t_flip
            self.n_frames += 1

    def reset_gap(self) -> None:
        """Forget the last flip (after an intentional pause in flipping, e.g. window reopened)."""
        self.last_flip = None

    def summary(self) -> dict[str, float | int | None]:
        """Frame rate, interval median/p95/sd in ms, and counts."""
        with self._lock:
            intervals = list(self.intervals)
        if not intervals:
            return {
                "fps": None,
                "frame_ms_median": None,
                "frame_ms_p95": None,
                "frame_ms_sd": None,
                "n_frames": self.n_frames,
                "dropped_frames": self.dropped,
            }
        a = np.asarray(intervals, float) * 1000.0
        return {
            "fps": round(1000.0 / float(np.mean(a)), 2),
            "frame_ms_median": round(float(np.median(a)), 3),
            "frame_ms_p95": round(float(np.percentile(a, 95)), 3),
            "frame_ms_sd": round(float(np.std(a)), 3),
            "n_frames": self.n_frames,
            "dropped_frames": self.dropped,
        }
