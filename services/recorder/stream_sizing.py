"""Sizing a recorder's pulls and buffers for one stream, and what is counted per stream.

Kept apart from the reader threads (inlet_reader.py) because these are pure decisions about a
stream's shape and rate: how much liblsl may buffer, how large one pull is, how a stream is
keyed and described in STATUS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pylsl

from shared_utils.streams.lsl import FORMAT_NAMES
from shared_utils.streams.xdf_writer import CHANNEL_FORMATS

#: liblsl's inlet buffer for a regular stream holds this many bytes at most (bounded memory) ...
INLET_BUFFER_BYTES = 256 * 2**20
#: ... but never less than this many seconds, nor more than this.
INLET_BUFFER_MIN_S, INLET_BUFFER_MAX_S = 1, 60
#: One pull lands in a buffer of at most this many bytes: small enough that the pulled block and
#: the chunk encoded from it stay in the CPU cache between pull, encode and ``writev`` (at 64 ch x
#: 1 MHz a 1 MB block encodes about twice as fast as an 8 MB one), large enough that a 1 MHz
#: stream needs only ~250 pulls a second ...
PULL_BUFFER_BYTES = 2**20
#: ... and a stream cycles through this many such buffers (pull and write overlap).
PULL_BUFFERS = 4


def stream_key(info: pylsl.StreamInfo) -> str:
    """Identity used to avoid recording one source twice: a stream with a source_id keeps its key
    when it comes back under a new uid, so the new outlet takes over from the lost reader."""
    sid = info.source_id()
    if sid:
        return f"src:{info.hostname()}:{info.name()}:{info.type()}:{sid}"
    return f"uid:{info.uid()}"


def inlet_buflen(info: pylsl.StreamInfo) -> int:
    """``max_buflen`` for the inlet: seconds for regular streams, x100 samples for irregular."""
    srate = info.nominal_srate()
    if srate <= 0:
        return 360  # 36 000 samples of an irregular stream
    width = info.channel_count() * (
        np.dtype(CHANNEL_FORMATS[channel_format(info)] or "<f8").itemsize
    )
    seconds = INLET_BUFFER_BYTES / max(1.0, srate * width)
    return int(min(INLET_BUFFER_MAX_S, max(INLET_BUFFER_MIN_S, seconds)))


def channel_format(info: pylsl.StreamInfo) -> str:
    return FORMAT_NAMES.get(info.channel_format(), "float32")


def pull_capacity(info: pylsl.StreamInfo, pull_timeout_s: float) -> int:
    """Samples per pull: room for two pull intervals at the nominal rate, within a byte cap."""
    srate = info.nominal_srate()
    dtype = CHANNEL_FORMATS[channel_format(info)]
    width = max(1, info.channel_count()) * (np.dtype(dtype).itemsize if dtype else 8)
    want = int(srate * pull_timeout_s * 2) if srate > 0 else 1024
    cap = max(64, PULL_BUFFER_BYTES // width)
    return max(64, min(want, cap))


@dataclass
class ReaderStats:
    """Per-stream figures for STATUS and the STOP reply."""

    samples: int = 0
    gaps: int = 0
    chunks: int = 0
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    offsets: int = 0
    lost: bool = False
    note: str = ""
    #: times this stream was reported lost (it may come back: a frozen source that resumes)
    losses: int = 0
    last_arrival: float | None = None  # time.monotonic() of the newest chunk
