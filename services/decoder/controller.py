"""On/off control with hysteresis, optional smoothing and a minimum dwell time.

Why hysteresis: a probability hovering around one threshold would toggle the stimulator (or the
feedback) on every prediction. Adaptive DBS controllers switch on above an upper threshold and off
only below a lower one; the smoothing time constant and the dwell time add the usual guards
against brief excursions. Parameters live in an immutable object that ``SET`` swaps atomically,
so the live loop never sees half an update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ControlParams:
    """Thresholds apply to the smoothed value; times are in seconds of stream time."""

    on_threshold: float = 0.6
    off_threshold: float = 0.4
    smoothing_s: float = 0.0  # exponential smoothing time constant; 0 = none
    min_dwell_s: float = 0.0  # minimum time in a state before it may switch again

    def validated(self) -> ControlParams:
        """Return self, or raise ValueError saying which value is wrong."""
        if not self.off_threshold < self.on_threshold:
            raise ValueError(
                f"off_threshold ({self.off_threshold}) must be below on_threshold ({self.on_threshold})"
            )
        if not (0.0 <= self.off_threshold and self.on_threshold <= 1.0):
            raise ValueError(
                "thresholds apply to the positive class's probability: use "
                f"0 <= off_threshold < on_threshold <= 1 (got {self.off_threshold}, {self.on_threshold})"
            )
        if self.smoothing_s < 0 or self.min_dwell_s < 0:
            raise ValueError("smoothing_s and min_dwell_s must be >= 0")
        return self


class HysteresisController:
    """Feed (value, time) pairs; the state turns on at ``>= on`` and off at ``<= off``."""

    def __init__(self, params: ControlParams | None = None) -> None:
        self.params = (params or ControlParams()).validated()
        self.state = False
        self.smoothed: float | None = None
        self.switches = 0
        self._last_t: float | None = None
        self._since: float | None = None  # time of the last switch (or of the first update)

    def set(self, **changes: float) -> ControlParams:
        """Change parameters live; invalid combinations raise ValueError and change nothing."""
        self.params = replace(self.params, **changes).validated()
        return self.params

    def update(self, value: float, t: float) -> tuple[bool, bool]:
        """Advance to time ``t`` with a new value; returns (state, changed)."""
        p = self.params
        if self.smoothed is None or p.smoothing_s <= 0 or self._last_t is None:
            self.smoothed = value
        else:
            dt = max(t - self._last_t, 0.0)
            alpha = 1.0 - math.exp(-dt / p.smoothing_s)
            self.smoothed += alpha * (value - self.smoothed)
        self._last_t = t
        if self._since is None:
            self._since = t
        if t - self._since < p.min_dwell_s:
            return self.state, False
        new = self.state
        if not self.state and self.smoothed >= p.on_threshold:
            new = True
        elif self.state and self.smoothed <= p.off_threshold:
            new = False
        changed = new != self.state
        if changed:
            self.state = new
            self.switches += 1
            self._since = t
        return self.state, changed
