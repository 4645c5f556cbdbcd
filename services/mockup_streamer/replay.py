"""Replay an XDF file's streams as live LSL streams at their original timing.

All streams share one time origin (the earliest timestamp in the file), so their relative timing,
including markers against data, is preserved. Each stream gets its own thread that pushes, at
each wake-up, every sample whose original offset is due, stamped ``t0 + (t_orig - t_first)``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import pylsl

from shared_utils.logging import get_logger
from shared_utils.streams.lsl import default_channel_labels
from shared_utils.streams.xdf_reader import XdfStream, read_xdf

log = get_logger("mockup_streamer")

_FORMATS = {
    "float32": pylsl.cf_float32,
    "double64": pylsl.cf_double64,
    "int8": pylsl.cf_int8,
    "int16": pylsl.cf_int16,
    "int32": pylsl.cf_int32,
    "int64": pylsl.cf_int64,
    "string": pylsl.cf_string,
}


def load_xdf_streams(path: str) -> list[XdfStream]:
    """The file's streams that hold samples, with their raw timestamps (no clock sync, no
    dejitter: replay reproduces what was recorded)."""
    streams = read_xdf(path, synchronize_clocks=False, dejitter=False)
    out = [s for s in streams if s.n_samples > 0]
    if not out:
        raise ValueError(f"{path} holds no stream with samples")
    return out


class ReplayStream:
    """One replayed stream with its own thread; shares ``t_origin`` with its siblings."""

    def __init__(self, spec: XdfStream, name: str, t_origin: float, loop: bool) -> None:
        self.name = name
        self.spec = spec
        self.loop = loop
        self.t_origin = t_origin
        fmt = _FORMATS.get(spec.channel_format, pylsl.cf_float32)
        n = spec.channel_count
        info = pylsl.StreamInfo(name, spec.type, n, spec.srate, fmt, f"replay-{name}-{os.getpid()}")
        if spec.labels != default_channel_labels(n):  # the file named its channels
            info.set_channel_labels(spec.labels)
        self.outlet = pylsl.StreamOutlet(info)
        self.string = fmt == pylsl.cf_string
        self.offsets = spec.time_stamps - t_origin  # when each sample is due, from replay start
        self.sent = 0
        self.loops = 0
        self.t0: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"replay-{name}-{os.getpid()}", daemon=True
        )

    def start(self, t0: float, span: float) -> None:
        self.t0, self.span = t0, span
        self._thread.start()

    def _push(self, i0: int, i1: int, base: float) -> None:
        ts = (base + self.offsets[i0:i1]).tolist()
        data = self.spec.time_series
        if self.string:
            self.outlet.push_chunk([list(r) for r in data[i0:i1]], ts)
        else:
            self.outlet.push_chunk(np.ascontiguousarray(data[i0:i1]), ts)
        self.sent += i1 - i0

    def _run(self) -> None:
        assert self.t0 is not None
        n = len(self.offsets)
        i = 0
        base = self.t0
        try:
            while not self._stop.is_set():
                now = pylsl.local_clock() - base
                j = int(np.searchsorted(self.offsets, now, side="right"))
                if j > i:
                    self._push(i, j, base)
                    i = j
                if i >= n:
                    if not self.loop:
                        break
                    self.loops += 1
                    i, base = 0, base + self.span
                    continue
                self._stop.wait(max(0.0005, min(0.05, self.offsets[i] - now)))
        except Exception as exc:
            log.error("replay failed", stream=self.name, error=repr(exc))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self.outlet = None  # type: ignore[assignment]

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        total = len(self.offsets)
        return {
            "kind": "replay",
            "running": self.running,
            "srate": self.spec.srate,
            "channels": self.spec.channel_count,
            "samples": self.sent,
            "samples_in_file": total,
            "loops": self.loops,
            "done": not self.running and self.sent >= total,
        }


def make_replay(path: str, prefix: str, loop: bool) -> list[ReplayStream]:
    """Outlets for every stream in ``path`` (named ``prefix + original``), not yet started."""
    specs = load_xdf_streams(path)
    t_origin = min(float(s.time_stamps[0]) for s in specs)
    t_end = max(float(s.time_stamps[-1]) for s in specs)
    rate = max((s.srate for s in specs), default=0.0)
    span = (t_end - t_origin) + (1.0 / rate if rate > 0 else 0.001)
    streams = [ReplayStream(s, prefix + (s.name or "replay"), t_origin, loop) for s in specs]
    for r in streams:
        r.span = span
    return streams


def start_all(streams: list[ReplayStream], delay_s: float = 0.0) -> float:
    """Start every replay thread against one shared LSL-clock origin ``delay_s`` from now.

    The delay lets consumers (recorders, watchers) attach to the new outlets before the first
    sample is due; 50 ms head room is always added so every thread starts in time.
    """
    t0 = pylsl.local_clock() + 0.05 + delay_s
    for r in streams:
        r.start(t0, r.span)
    return t0
