"""Synthetic EEG with a known ground truth, so a decoder has something real to find.

Signal per channel (microvolts): white noise + a slow random drift + mains line noise + a ~10 Hz
alpha rhythm whose amplitude follows a two-state schedule ("high" / "low"). The schedule is a
pure function of the sample index, so markers can be stamped at exactly the first sample of each
new state and tests can recompute the truth. No LSL here: generation is testable on its own.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from shared_utils.checks import unknown_message

STATES = ("high", "low")


@dataclass
class StateSchedule:
    """Alternating "high"/"low" segments in samples: fixed ``period_s`` or seeded random lengths.

    Boundaries are generated lazily as far as they are asked for, so the schedule is unbounded.
    """

    srate: float
    period_s: float = 4.0
    random_durations: bool = False
    min_period_s: float = 2.0
    max_period_s: float = 6.0
    first: str = "high"
    seed: int | None = None
    starts: list[int] = field(default_factory=lambda: [0])
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.first not in STATES:
            raise ValueError(unknown_message("first state", self.first, STATES))
        self._rng = np.random.default_rng(self.seed)

    def _duration(self) -> int:
        secs = (
            self._rng.uniform(self.min_period_s, self.max_period_s)
            if self.random_durations
            else self.period_s
        )
        return max(1, round(secs * self.srate))

    def _extend_to(self, k: int) -> None:
        while self.starts[-1] <= k:
            self.starts.append(self.starts[-1] + self._duration())

    def state_index(self, k: int) -> int:
        """Segment number that sample ``k`` falls in."""
        self._extend_to(k)
        return bisect.bisect_right(self.starts, k) - 1

    def state_at(self, k: int) -> str:
        """ "high" or "low" for sample ``k``."""
        i = self.state_index(k)
        return STATES[(STATES.index(self.first) + i) % 2]

    def switches(self, k0: int, k1: int) -> list[tuple[int, str]]:
        """(first sample, new state) for every segment starting in ``[k0, k1)`` (incl. sample 0)."""
        self._extend_to(k1)
        lo = bisect.bisect_left(self.starts, k0)
        hi = bisect.bisect_left(self.starts, k1)
        return [(s, self.state_at(s)) for s in self.starts[lo:hi]]

    def next_switch(self, k: int) -> int:
        """First sample of the segment after the one containing ``k``."""
        return self.starts[self.state_index(k) + 1]


@dataclass
class SyntheticEEG:
    """Chunk generator; call :meth:`generate` with consecutive sample ranges.

    Defaults give log alpha-band power about 4 natural-log units apart between states on every
    channel (channel gains 0.6-1.0), far above window-to-window scatter.
    """

    n_channels: int
    srate: float
    schedule: StateSchedule
    alpha_freq: float = 10.0
    alpha_high_uv: float = 20.0
    alpha_low_uv: float = 2.5
    noise_uv: float = 5.0
    drift_uv: float = 2.0
    line_freq: float = 50.0
    line_uv: float = 8.0
    seed: int | None = None
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        n = self.n_channels
        self.alpha_gain = self._rng.uniform(0.6, 1.0, n)
        self.alpha_phase = self._rng.uniform(0, 2 * np.pi, n)
        self.line_phase = self._rng.uniform(0, 2 * np.pi, n)
        self._drift_zi = np.zeros((1, n))
        self._amps = np.array([self.alpha_high_uv, self.alpha_low_uv])

    def amplitude(self, k0: int, n: int) -> np.ndarray:
        """Alpha amplitude per sample of ``[k0, k0 + n)`` following the schedule."""
        out = np.empty(n)
        for start, _ in [(k0, None), *self.schedule.switches(k0 + 1, k0 + n)]:
            state = self.schedule.state_at(start)
            out[start - k0 :] = self._amps[STATES.index(state)]
        return out

    def generate(self, k0: int, n: int) -> np.ndarray:
        """Samples ``k0 .. k0+n-1`` as float32 (n, channels); phase-continuous across calls."""
        t = (k0 + np.arange(n))[:, None] / self.srate
        noise = self._rng.standard_normal((n, self.n_channels)) * self.noise_uv
        # Drift: a leaky integrator of white noise (state kept between chunks).
        drive = self._rng.standard_normal((n, self.n_channels)) * self.drift_uv * 0.1
        from scipy.signal import lfilter  # lazy: keeps module start-up under a second

        drift, self._drift_zi = lfilter([1.0], [1.0, -0.995], drive, axis=0, zi=self._drift_zi)
        line = self.line_uv * np.sin(2 * np.pi * self.line_freq * t + self.line_phase)
        amp = self.amplitude(k0, n)[:, None] * self.alpha_gain
        alpha = amp * np.sin(2 * np.pi * self.alpha_freq * t + self.alpha_phase)
        return (noise + drift + line + alpha).astype(np.float32)
