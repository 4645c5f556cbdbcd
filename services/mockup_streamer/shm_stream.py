"""The mockup's synthetic signal at electrophysiology rates, into a same-host shared-memory ring.

``START|{"transport": "shm", "channels": 384, "srate": 30000, "dtype": "int16"}`` streams a
Neuropixels-sized signal (23 MB/s) through a ring (:class:`~shared_utils.streams.shm.ShmWriter`)
that the stream watcher, the decoder and the recorder on this host read directly; the ring's
writer also announces the stream on LSL (in full up to 32 MB/s, decimated above), so every LSL
tool still sees it. Markers go on LSL as for any mockup stream.

Why another generator: the exact one (:class:`~services.mockup_streamer.synth.SyntheticEEG`)
draws fresh Gaussian noise and sines for every value, about 2 CPU-seconds per second at 384 ch x
30 kHz. :class:`TiledEEG` keeps the same guarantees that matter to consumers (the high/low alpha
states on the same schedule, per-channel alpha gains and phases, mains noise, white noise of the
same level) from precomputed tables: one alpha and one mains period per channel, and a block of
noise read at a random offset per chunk (so nothing repeats periodically), about 25 µs per
1 ms chunk of 384 channels. It has no slow drift, and its noise rows recur (in random order).
Samples are in microvolts; integer formats hold whole microvolts (1 count = 1 µV).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from services.mockup_streamer.paced import SyntheticStream
from services.mockup_streamer.synth import SyntheticEEG
from shared_utils.checks import unknown_message
from shared_utils.errors import CommandError
from shared_utils.streams.lsl import default_channel_labels
from shared_utils.streams.shm import ShmError, ShmUnsupportedError, ShmWriter

TRANSPORTS = ("lsl", "shm")
DTYPES = ("float32", "int16", "int32")
LSL_COPIES = ("auto", "full", "decimated", "off")
NOISE_ROWS = 8192
MAX_TABLE_BYTES = 64e6


def check_transport(transport: str, dtype: str, capacity_s: float, lsl: str) -> None:
    """START's transport arguments, before anything is created."""
    if transport not in TRANSPORTS:
        raise CommandError(unknown_message("transport", transport, TRANSPORTS))
    if dtype not in DTYPES:
        raise CommandError(unknown_message("dtype", dtype, DTYPES))
    if transport == "lsl" and dtype != "float32":
        raise CommandError(
            f'dtype {dtype!r} needs transport "shm" (its stream is on LSL too); '
            "LSL mockup streams are float32"
        )
    if lsl not in LSL_COPIES:
        raise CommandError(unknown_message("lsl copy", lsl, LSL_COPIES))
    if not (math.isfinite(capacity_s) and 0 < capacity_s <= 60):
        raise CommandError(f"capacity_s must be > 0 and <= 60 s, got {capacity_s}")


def _period_table(srate: float, freq: float, phase: np.ndarray, amp: Any) -> np.ndarray:
    """``amp * sin(2 pi freq t + phase)`` over rows holding a whole number of cycles (one table
    period), within a memory cap; past it, one cycle rounded to whole samples (the frequency
    then shifts by less than half a sample per cycle)."""
    ratio = Fraction(srate).limit_denominator(10**6) / Fraction(freq).limit_denominator(10**6)
    rows, cycles = ratio.numerator, ratio.denominator  # samples for that many whole cycles
    if rows * len(phase) * 4 > MAX_TABLE_BYTES:
        rows, cycles = max(2, round(srate / freq)), 1
    t = np.arange(rows)[:, None] / rows
    return (amp * np.sin(2 * np.pi * cycles * t + phase)).astype(np.float32)


@dataclass
class TiledEEG(SyntheticEEG):
    """:class:`SyntheticEEG`'s signal from tables (see the module notes), in ``dtype``."""

    dtype: str = "float32"

    def __post_init__(self) -> None:
        super().__post_init__()
        sr = self.srate
        self._alpha = _period_table(sr, self.alpha_freq, self.alpha_phase, self.alpha_gain)
        self._line = None
        if self.line_uv > 0:
            self._line = _period_table(sr, self.line_freq, self.line_phase, self.line_uv)
        noise = self._rng.standard_normal((NOISE_ROWS, self.n_channels), dtype=np.float32)
        noise *= self.noise_uv
        self._noise = noise
        self._out = np.dtype(self.dtype)

    def generate(self, k0: int, n: int) -> np.ndarray:
        """Samples ``k0 .. k0+n-1`` as (n, channels) in ``dtype``; phase-continuous."""
        idx = k0 + np.arange(n)
        out = self._alpha.take(idx % len(self._alpha), axis=0)
        out *= self.amplitude(k0, n)[:, None].astype(np.float32)
        j = int(self._rng.integers(NOISE_ROWS))
        out += self._noise.take((j + np.arange(n)) % NOISE_ROWS, axis=0)
        if self._line is not None:
            out += self._line.take(idx % len(self._line), axis=0)
        if self._out.kind == "i":
            info = np.iinfo(self._out)
            np.rint(out, out=out)
            np.clip(out, info.min, info.max, out=out)
        return out.astype(self._out, copy=False)


class ShmSyntheticStream(SyntheticStream):
    """A paced synthetic stream whose samples go into a ring (its LSL announcement beside it).

    Wakes at most once per ``min_wake_s`` and writes every whole chunk that is due in one ring
    write, as a driver delivering a DMA block does: at 30 kHz with the default 10-sample chunk that
    is 1000 writes of 30 samples a second rather than 3000 of 10.
    """

    min_wake_s = 0.001
    writer: ShmWriter  # also the outlet (the base class drops its outlet reference on stop)

    def _push_due(self, now: float) -> None:
        assert self.t0 is not None
        due = int((now - self.t0) * self.srate)
        step = max(self.chunk, self.writer.max_chunk // self.chunk * self.chunk)
        while due - self.sent >= self.chunk:
            k0 = self.sent
            n = min((due - k0) // self.chunk * self.chunk, step)
            if self.marker_outlet is not None:
                for k, state in self.schedule.switches(k0, k0 + n):
                    self.marker_outlet.push_sample([state], self.t0 + k / self.srate)
                    self.markers_sent += 1
            self.writer.push_chunk(self.synth.generate(k0, n), self.t0 + (k0 + n - 1) / self.srate)
            self.sent += n

    def stop(self) -> None:
        """Stop pushing, close the ring (readers see it closed; its name is removed)."""
        super().stop()
        self.writer.close()

    def ring_info(self) -> dict[str, Any]:
        """Where the ring is and what goes on LSL (for START's reply and STATUS)."""
        w = self.writer
        return {
            "segment": w.segment,
            "capacity_s": w.capacity / w.srate,
            "lsl": w.announcer.plan if w.announcer is not None else {"mode": "off"},
        }

    def status(self) -> dict[str, Any]:
        st = super().status()
        st.update(transport="shm", dtype=self.writer.dtype.name, **self.ring_info())
        w = self.writer
        if self.running:
            st["readers"] = w.readers()
        st["reader_events"] = list(w.reader_events)
        return st


def make_shm_synthetic(
    *args: Any, dtype: str, capacity_s: float, lsl: str, **signal: Any
) -> ShmSyntheticStream:
    """Build (not start) a ring-backed synthetic stream from :func:`make_synthetic`'s arguments
    (``name, channels, srate, chunk, channel_names, schedule, markers, seed``) plus the ring's.

    Refusals become CommandErrors that say why (a live writer of that name, a ring too small for
    the rate, /dev/shm too small).
    """
    name, channels, srate, chunk, channel_names, schedule, markers, seed = args
    labels = list(channel_names) if channel_names else default_channel_labels(channels)
    try:
        writer = ShmWriter(
            name, len(labels), srate, dtype, capacity_s=capacity_s, stream_type="EEG",
            channel_names=labels, unit="microvolts", source_id=f"mockup-{name}-{os.getpid()}",
            lsl=lsl,
        )  # fmt: skip
    except (ShmError, ShmUnsupportedError, OSError, ValueError) as exc:
        raise CommandError(f"stream {name!r}: {exc}") from None
    if chunk > writer.max_chunk:
        writer.close()
        raise CommandError(
            f"chunk {chunk} is more than half the ring ({writer.capacity} samples = "
            f"{capacity_s:g} s); use a smaller chunk or a longer capacity_s"
        )
    try:
        synth = TiledEEG(len(labels), srate, schedule, seed=seed, dtype=dtype, **signal)
        stream = ShmSyntheticStream(name, labels, srate, chunk, synth, markers, outlet=writer)
        stream.writer = writer
        return stream
    except BaseException:
        writer.close()
        raise
