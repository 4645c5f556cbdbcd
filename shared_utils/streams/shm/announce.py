"""Announcing a ring on LSL, so consumers on other hosts (and tools like LabRecorder) see it.

The rule (:func:`lsl_plan`): the full stream goes on LSL when its byte rate is at most
``LSL_FULL_MAX_BYTES_S`` (32 MB/s: a quarter of a gigabit link per consuming host, and under a
third of the Python LSL inlet's measured ceiling on our reference box). Above that the LSL copy is
decimated by the smallest factor ``d`` that brings it under the budget (a divisor of the rate when
the rate is a whole number, so the LSL rate stays exact), each LSL sample being the mean of ``d``
ring samples (a boxcar low-pass: the slow bands survive, spikes do not; the raw band is only on
the ring), stamped with the mean of their timestamps. One Neuropixels probe (384 ch x 30 kHz
int16, 23 MB/s) goes on LSL in full; 1024 ch x 30 kHz int16 (61 MB/s) goes decimated x2 (15 kHz).

The LSL stream has the ring's name and carries ``desc/shm`` (segment, session, host, boot id,
ring uid, shape, what LSL gets), so a consumer that resolves it on the same host can read the ring
instead (:func:`ring_for_lsl`).
"""

from __future__ import annotations

import math
import socket
from typing import Any

import numpy as np

from shared_utils.streams.shm import _os

LSL_FULL_MAX_BYTES_S = 32e6
LSL_MAX_BUFFERED_S = 5  # liblsl reserves its send queue per consumer for this long


def lsl_plan(
    channels: int, srate: float, itemsize: int, mode: str = "auto",
    max_bytes_s: float = LSL_FULL_MAX_BYTES_S,
) -> dict[str, Any]:  # fmt: skip
    """What goes on LSL: ``{"mode": "full"|"decimated", "factor", "srate", "bytes_s"}``."""
    if mode not in ("auto", "full", "decimated"):
        raise ValueError(f"lsl must be 'auto', 'full', 'decimated' or 'off', got {mode!r}")
    rate_b = channels * srate * itemsize
    if mode == "full" or (mode == "auto" and rate_b <= max_bytes_s):
        return {"mode": "full", "factor": 1, "srate": srate, "bytes_s": rate_b}
    d = max(2, math.ceil(rate_b / max_bytes_s))
    if float(srate).is_integer():
        while int(srate) % d:
            d += 1
    return {"mode": "decimated", "factor": d, "srate": srate / d, "bytes_s": rate_b / d}


class _Decimator:
    """Mean of every ``factor`` consecutive samples, carrying the remainder to the next chunk.

    ``factor`` strided adds into a float accumulator (float32 where it is exact: 8/16-bit samples
    and factors up to 256), divided and rounded to the stream's type: about 10 µs per 1 ms chunk
    of 1024 channels, where ``ndarray.mean`` over a reshaped axis, or integer division, costs
    several times that.
    """

    def __init__(self, factor: int, channels: int, dtype: np.dtype) -> None:
        self.d, self.dtype = factor, dtype
        self.acc = np.float32 if dtype.itemsize <= 2 and factor <= 256 else np.float64
        self.carry = np.empty((0, channels), dtype=dtype)
        self.tcarry = np.empty(0, dtype=np.float64)

    def push(self, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if len(self.carry):
            x, t = np.concatenate((self.carry, x)), np.concatenate((self.tcarry, t))
        d = self.d
        nb = len(x) // d
        cut = nb * d
        self.carry, self.tcarry = x[cut:].copy(), t[cut:].copy()
        if nb == 0:
            return None
        y = x[0:cut:d].astype(self.acc)
        tt = t[0:cut:d].copy()
        for j in range(1, d):
            y += x[j:cut:d]
            tt += t[j:cut:d]
        tt /= d
        y /= d
        if self.dtype.kind in "iu":
            np.rint(y, out=y)
        return y.astype(self.dtype), tt


class LslAnnouncer:
    """The LSL outlet beside a ring (created and fed by :class:`.writer.ShmWriter`)."""

    def __init__(
        self, writer: Any, stream_type: str, mode: str = "auto", source_id: str = ""
    ) -> None:
        import pylsl

        from shared_utils.streams.lsl import describe_channels

        self.plan = lsl_plan(writer.channels, writer.srate, writer.dtype.itemsize, mode)
        fmt = {
            "float32": pylsl.cf_float32, "float64": pylsl.cf_double64, "int32": pylsl.cf_int32,
            "int16": pylsl.cf_int16, "int8": pylsl.cf_int8, "int64": pylsl.cf_int64,
        }[writer.dtype.name]  # fmt: skip
        host = socket.gethostname()
        info = pylsl.StreamInfo(
            writer.name, stream_type, writer.channels, self.plan["srate"], fmt,
            source_id or f"shm:{host}:{writer.segment}",
        )  # fmt: skip
        describe_channels(info, list(writer.channel_names))
        shm = info.desc().append_child("shm")
        for k, v in {
            "segment": writer.segment, "session": writer.session, "name": writer.name,
            "host": host, "boot_id": _os.boot_id(), "uid": writer.uid.hex(),
            "channels": writer.channels, "srate": writer.srate, "format": writer.dtype.name,
            "capacity": writer.capacity, "lsl_mode": self.plan["mode"],
            "decimation": self.plan["factor"], "lsl_srate": self.plan["srate"],
        }.items():  # fmt: skip
            shm.append_child_value(k, str(v))
        self.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=LSL_MAX_BUFFERED_S)
        f = self.plan["factor"]
        self._dec = _Decimator(f, writer.channels, writer.dtype) if f > 1 else None

    def push(self, x: np.ndarray, t: np.ndarray, regular: bool) -> None:
        """Send a chunk; ``regular``: its stamps are 1/srate apart, so the newest one is enough
        (liblsl spaces the others; pylsl converts a stamp array element by element in Python)."""
        if self._dec is not None:
            out = self._dec.push(x, t)
            if out is None:
                return
            x, t = out
        self.outlet.push_chunk(np.ascontiguousarray(x), float(t[-1]) if regular else t.tolist())

    def close(self) -> None:
        self.outlet = None  # liblsl closes the outlet when the last reference goes


def shm_desc(info: Any) -> dict[str, str] | None:
    """The ``desc/shm`` block of a full pylsl StreamInfo (from ``inlet.info()``), or None."""
    node = info.desc().child("shm")
    if node.empty():
        return None
    out, child = {}, node.first_child()
    while not child.empty():
        out[child.name()] = child.child_value()
        child = child.next_sibling()
    return out


def ring_for_lsl(info: Any) -> dict[str, str] | None:
    """Where the ring behind an LSL stream is, if it is readable here (same machine and boot,
    ring present with the same uid); else None (keep using LSL)."""
    d = shm_desc(info)
    if not d or d.get("boot_id") != _os.boot_id() or not d.get("boot_id"):
        return None
    from shared_utils.streams.shm import discovery

    try:
        fd, mm, view = discovery.open_ring(d.get("segment", ""))
    except (OSError, ValueError):
        return None
    try:
        return d if view.uid == d.get("uid") and discovery.writer_alive(fd) else None
    finally:
        discovery.close_ring(fd, mm, view)
