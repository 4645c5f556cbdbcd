"""Filter-bank log band power, computed the same way offline (training) and online (live loop).

Why one implementation for both: a classifier only transfers from a recording to a live stream if
the features are computed identically. Both paths run the same causal Butterworth band-pass
cascade from a zero initial state and take ``log(mean(y**2))`` over a trailing window, so an
epoch ending at sample ``n`` of a recording yields the feature the live loop would produce after
receiving sample ``n``.

The live path filters a few samples at a time. ``scipy.signal.sosfilt`` costs ~20 us per call and
band, so for short chunks each band's cascade is rewritten as one small state-space system
(state = the stacked DF2T section states, i.e. exactly scipy's ``zi`` layout) and all bands and
channels advance together with one batched matrix product per sample (a few us). Long chunks go
through ``sosfilt``; both paths share the same state, so they can be mixed freely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BANDS: tuple[tuple[float, float], ...] = ((4.0, 8.0), (8.0, 13.0), (13.0, 30.0))
_EPS = 1e-12  # floor under the power so log() of a flat channel stays finite


def _signal():  # noqa: ANN202
    """scipy.signal, imported on first use: importing it costs ~1 s of module start-up."""
    import scipy.signal

    return scipy.signal


_SOSFILT_MIN_CHUNK = 24  # from this many samples on, scipy's C loop beats the per-sample path


def design_bank(bands: list[list[float]] | tuple, srate: float, order: int = 2) -> np.ndarray:
    """Band-pass SOS coefficients, shape (n_bands, n_sections, 6), validated against ``srate``."""
    if srate <= 0:
        raise ValueError(f"sampling rate must be > 0, got {srate}")
    if order < 1 or order > 8:
        raise ValueError(f"filter order must be 1..8, got {order}")
    if not bands:
        raise ValueError("need at least one frequency band")
    nyq = srate / 2.0
    out = []
    for band in bands:
        if len(band) != 2:
            raise ValueError(f"a band is [low_hz, high_hz], got {band!r}")
        lo, hi = float(band[0]), float(band[1])
        if not 0 < lo < hi < nyq:
            raise ValueError(
                f"band {lo}-{hi} Hz must satisfy 0 < low < high < {nyq:g} Hz (Nyquist)"
            )
        out.append(_signal().butter(order, [lo, hi], btype="bandpass", fs=srate, output="sos"))
    return np.asarray(out, dtype=np.float64)


def _section_step(sos_band: np.ndarray, z: np.ndarray, x: float) -> tuple[np.ndarray, float]:
    """One DF2T sample through a cascade of sections (scipy's convention); returns (z', y)."""
    z = z.copy()
    for s, (b0, b1, b2, _a0, a1, a2) in enumerate(sos_band):
        z0, z1 = z[2 * s], z[2 * s + 1]
        y = b0 * x + z0
        z[2 * s] = b1 * x - a1 * y + z1
        z[2 * s + 1] = b2 * x - a2 * y
        x = y
    return z, x


def state_space(sos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-band state-space matrices (A, B, C, D) equivalent to each SOS cascade.

    The cascade is linear in (state, input), so the matrices are read off by stepping it once per
    basis vector. Shapes: A (bands, n, n), B (bands, n, 1), C (bands, 1, n), D (bands, 1, 1) with
    n = 2 * n_sections.
    """
    n_bands, n_sec, _ = sos.shape
    n = 2 * n_sec
    a = np.zeros((n_bands, n, n))
    b = np.zeros((n_bands, n, 1))
    c = np.zeros((n_bands, 1, n))
    d = np.zeros((n_bands, 1, 1))
    for k in range(n_bands):
        for j in range(n):
            e = np.zeros(n)
            e[j] = 1.0
            zj, yj = _section_step(sos[k], e, 0.0)
            a[k, :, j], c[k, 0, j] = zj, yj
        zx, yx = _section_step(sos[k], np.zeros(n), 1.0)
        b[k, :, 0], d[k, 0, 0] = zx, yx
    return a, b, c, d


def filter_offline(sos: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Causally filter a whole recording (samples, channels) -> (samples, bands, channels)."""
    data = np.asarray(data, dtype=np.float64)
    return np.stack([_signal().sosfilt(band, data, axis=0) for band in sos], axis=1)


def window_log_power(filtered: np.ndarray, ends: np.ndarray, n_window: int) -> np.ndarray:
    """Log mean power of ``filtered`` over ``n_window`` samples ending at (excluding) ``ends``.

    ``filtered`` is (samples, bands, channels); returns (len(ends), bands * channels), band-major
    per channel, the layout the live extractor produces.
    """
    sq = filtered.reshape(filtered.shape[0], -1) ** 2
    csum = np.concatenate([np.zeros((1, sq.shape[1])), np.cumsum(sq, axis=0)])
    ends = np.asarray(ends, dtype=int)
    if ends.size and (ends.min() < n_window or ends.max() > sq.shape[0]):
        raise ValueError("window extends outside the recording")
    power = (csum[ends] - csum[ends - n_window]) / n_window
    return np.log(np.maximum(power, _EPS))


@dataclass
class FeatureSettings:
    """What defines the features; stored in the model file."""

    bands: list[list[float]]
    order: int
    window_s: float

    def n_window(self, srate: float) -> int:
        """Window length in samples at ``srate`` (at least 2)."""
        return max(2, round(self.window_s * srate))


class OnlineBandPower:
    """Streaming filter bank + trailing-window power: push chunks, read the current features.

    Keeps a ring of squared filtered samples and a running sum, so a feature read costs
    O(bands * channels) whatever the window length. The running sum is recomputed from the ring
    once per ring turn so that floating-point drift cannot accumulate.
    """

    def __init__(self, sos: np.ndarray, n_channels: int, n_window: int) -> None:
        self.sos = np.asarray(sos, dtype=np.float64)
        self.n_bands, self.n_sec, _ = self.sos.shape
        self.n_channels = n_channels
        self.n_window = n_window
        a, b, c, d = state_space(self.sos)
        n = 2 * self.n_sec
        # One matrix per band maps [state; input] to [output; next state], so a sample costs a
        # single batched product. The state lives in the first n rows of ``_zx`` (``_z`` is a
        # view of them, in scipy's zi layout for the sosfilt path); the last row holds the input.
        self._m = np.block([[c, d], [a, b]])  # (bands, n + 1, n + 1)
        self._zx = np.zeros((self.n_bands, n + 1, n_channels))
        self._z = self._zx[:, :n, :]
        n_feat = self.n_bands * n_channels
        self._ring = np.zeros((n_window, n_feat))
        self._sum = np.zeros(n_feat)
        self._pos = 0
        self.n_seen = 0

    @property
    def ready(self) -> bool:
        """True once a full window has been seen (features before that would be biased low)."""
        return self.n_seen >= self.n_window

    def _filter(self, chunk: np.ndarray) -> np.ndarray:
        """Advance the filter state by ``chunk`` (k, channels); returns (k, bands * channels)."""
        k = chunk.shape[0]
        if k < _SOSFILT_MIN_CHUNK:
            out = np.empty((k, self.n_bands, self.n_channels))
            m, zx, n = self._m, self._zx, 2 * self.n_sec
            for i in range(k):
                zx[:, n] = chunk[i]
                r = m @ zx
                out[i] = r[:, 0]
                zx[:, :n] = r[:, 1:]
            return out.reshape(k, -1)
        out = np.empty((k, self.n_bands, self.n_channels))
        for j in range(self.n_bands):
            zi = self._z[j].reshape(self.n_sec, 2, self.n_channels)
            out[:, j], zf = _signal().sosfilt(self.sos[j], chunk, axis=0, zi=zi)
            self._z[j] = zf.reshape(2 * self.n_sec, self.n_channels)
        return out.reshape(k, -1)

    def push(self, chunk: np.ndarray) -> None:
        """Feed new samples (k, channels), oldest first."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[1] != self.n_channels:
            raise ValueError(f"expected (k, {self.n_channels}) samples, got {chunk.shape}")
        sq = self._filter(chunk) ** 2
        n, k = self.n_window, sq.shape[0]
        if k == 1:  # the closed-loop case: one sample per pull
            row = sq[0]
            self._sum += row - self._ring[self._pos]
            self._ring[self._pos] = row
            self._pos += 1
            if self._pos == n:
                self._pos = 0
                self._sum = self._ring.sum(axis=0)
        elif k >= n:  # the chunk alone fills the window
            self._ring[:] = sq[-n:]
            self._pos = 0
            self._sum = self._ring.sum(axis=0)
        else:
            end = self._pos + k
            if end <= n:
                self._sum += sq.sum(axis=0) - self._ring[self._pos : end].sum(axis=0)
                self._ring[self._pos : end] = sq
            else:
                first = n - self._pos
                self._sum += sq.sum(axis=0)
                self._sum -= self._ring[self._pos :].sum(axis=0) + self._ring[: k - first].sum(
                    axis=0
                )
                self._ring[self._pos :] = sq[:first]
                self._ring[: k - first] = sq[first:]
            self._pos = end % n
            if end >= n:  # one ring turn completed: refresh the sum exactly
                self._sum = self._ring.sum(axis=0)
        self.n_seen += k

    def features(self) -> np.ndarray:
        """Log mean power over the trailing window, (bands * channels,), band-major."""
        return np.log(np.maximum(self._sum / self.n_window, _EPS))
