"""One LSL stream into one XDF stream: the per-stream threads of a recording.

Each reader owns its pylsl inlet (buffer sized to the stream's byte rate, not liblsl's 360 s
default, which reserves gigabytes at high rates) and pulls into a small ring of preallocated
arrays, so the hot path allocates nothing per chunk. Every pull ends after at most
``pull_timeout_s``; a per-stream writer thread hands each pulled chunk to the kernel through the
:class:`~shared_utils.streams.xdf_writer.XdfWriter` while the next pull runs (a write that waits for the
disk no longer stalls the inlet). A ``kill -9`` therefore loses at most the pull interval plus the
at most two chunks queued behind a slow disk.

Clock offsets: a stream from this host shares the recorder's clock (liblsl's ``local_clock`` is the
machine's monotonic clock), so its offset is exactly 0 and is written without probing, right
after the header; pyxdf then has an offset for every stream even in a file cut short by a crash.
Streams from other hosts are probed with ``time_correction`` in a separate thread so the first,
~0.6 s probe never delays data.
"""

from __future__ import annotations

import platform
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeout

from services.recorder.clocks import OffsetTrack
from shared_utils.logging import get_logger
from shared_utils.streams.lsl import FORMAT_NAMES
from shared_utils.streams.xdf_writer import CHANNEL_FORMATS, XdfWriteError, XdfWriter

log = get_logger("recorder.reader")

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
    """Identity used to avoid recording one source twice: a recoverable stream (with a source_id)
    comes back under a new uid after a restart and the inlet reconnects to it by itself."""
    sid = info.source_id()
    if sid:
        return f"src:{info.hostname()}:{info.name()}:{info.type()}:{sid}"
    return f"uid:{info.uid()}"


def describe(info: pylsl.StreamInfo) -> dict[str, Any]:
    """The LIST view of a stream."""
    return {
        "name": info.name(),
        "type": info.type(),
        "channel_count": info.channel_count(),
        "nominal_srate": info.nominal_srate(),
        "channel_format": FORMAT_NAMES.get(info.channel_format(), str(info.channel_format())),
        "source_id": info.source_id(),
        "hostname": info.hostname(),
        "uid": info.uid(),
    }


def inlet_buflen(info: pylsl.StreamInfo) -> int:
    """``max_buflen`` for the inlet: seconds for regular streams, x100 samples for irregular."""
    srate = info.nominal_srate()
    if srate <= 0:
        return 360  # 36 000 samples of an irregular stream
    width = info.channel_count() * (np.dtype(CHANNEL_FORMATS[_fmt(info)] or "<f8").itemsize)
    seconds = INLET_BUFFER_BYTES / max(1.0, srate * width)
    return int(min(INLET_BUFFER_MAX_S, max(INLET_BUFFER_MIN_S, seconds)))


def _fmt(info: pylsl.StreamInfo) -> str:
    return FORMAT_NAMES.get(info.channel_format(), "float32")


def pull_capacity(info: pylsl.StreamInfo, pull_timeout_s: float) -> int:
    """Samples per pull: room for two pull intervals at the nominal rate, within a byte cap."""
    srate = info.nominal_srate()
    dtype = CHANNEL_FORMATS[_fmt(info)]
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
    last_arrival: float | None = None  # time.monotonic() of the newest chunk


class StreamReader:
    """Record one LSL stream into ``writer`` under the stream id handed out by ``next_id``."""

    def __init__(
        self,
        info: pylsl.StreamInfo,
        writer: XdfWriter,
        next_id: Callable[[], int],
        on_write_error: Callable[[XdfWriteError], None],
        *,
        pull_timeout_s: float = 0.1,
        offset_interval_s: float = 3.0,
        probe_local_offsets: bool = False,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.info = info
        self.key = stream_key(info)
        self.name = info.name()
        self.writer = writer
        self._next_id = next_id
        self._on_write_error = on_write_error
        self.pull_timeout_s = pull_timeout_s
        self.offset_interval_s = offset_interval_s
        self.open_timeout_s = open_timeout_s
        self.local = info.hostname() == platform.node() and not probe_local_offsets
        self.srate = info.nominal_srate()
        self.stream_id: int | None = None
        self.stats = ReaderStats()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._write_failed = threading.Event()
        self._inlet: pylsl.StreamInlet | None = None
        self._gap_s = 2.0 / self.srate + 0.05 if self.srate > 0 else None
        self._thread = threading.Thread(target=self._run, name=f"rec-{self.name}", daemon=True)
        self._clock_thread: threading.Thread | None = None
        self._last_offset = 0.0
        self.clock = OffsetTrack()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the threads to drain what is queued, write a last offset and end."""
        self._stop.set()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._clock_thread is not None:
            self._clock_thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def summary(self) -> dict[str, Any]:
        s = self.stats
        return {
            "id": self.stream_id,
            "name": self.name,
            "type": self.info.type(),
            "samples": s.samples,
            "gaps": s.gaps,
            "first_timestamp": s.first_timestamp,
            "last_timestamp": s.last_timestamp,
            "clock_offsets": s.offsets,
            "lost": s.lost,
            "note": s.note,
            "hostname": self.info.hostname(),
            "source_id": self.info.source_id(),
            "idle_s": None
            if s.last_arrival is None
            else round(time.monotonic() - s.last_arrival, 3),
            **self.clock.summary(),
        }

    def replaceable_by(self, info: pylsl.StreamInfo) -> bool:
        """True when this reader ended (stream lost, or never answered) and ``info`` is a new
        outlet of the same source, which then gets a fresh reader and XDF stream id."""
        ended = self.stats.lost or self.stream_id is None
        return ended and not self._thread.is_alive() and info.uid() != self.info.uid()

    # -- threads -----------------------------------------------------------------------------
    def _open(self) -> pylsl.StreamInlet | None:
        # recover only where liblsl can (a source_id): otherwise the inlet would wait forever
        # for a stream that cannot come back instead of reporting it lost
        inlet = pylsl.StreamInlet(
            self.info,
            max_buflen=inlet_buflen(self.info),
            max_chunklen=0,
            recover=bool(self.info.source_id()),
        )
        deadline = time.monotonic() + self.open_timeout_s
        while not self._stop.is_set():
            try:
                full = inlet.info(timeout=0.5)
                inlet.open_stream(timeout=max(0.5, deadline - time.monotonic()))
                break
            except LslTimeout:
                if time.monotonic() > deadline:
                    self.stats.note = "stream did not answer; not recorded"
                    log.warning("stream did not answer", stream=self.name)
                    return None
            except LostError:
                self.stats.note = "stream vanished before it could be opened; not recorded"
                return None
        else:
            return None
        self.stream_id = self._next_id()
        self.writer.add_stream(self.stream_id, full.as_xml())
        if self.local:
            self._write_offset(0.0)
        self.connected.set()
        return inlet

    def _run(self) -> None:
        try:
            inlet = self._open()
            if inlet is None:
                return
            self._inlet = inlet
            del inlet  # self._inlet is the only reference, so releasing it frees liblsl's inlet
            if not self.local:
                self._clock_thread = threading.Thread(
                    target=self._clock_loop, name=f"rec-clock-{self.name}", daemon=True
                )
                self._clock_thread.start()
            log.info("recording stream", stream=self.name, id=self.stream_id)
            self._pull_loop(self._inlet)
            if self.local:
                self._write_offset(0.0)
            elif self._clock_thread is not None:
                self._clock_thread.join(1.5)
                self._probe_offset(timeout=0.5)
        except XdfWriteError as e:
            self._on_write_error(e)
        except Exception as e:  # keep the file and the other streams going
            self.stats.note = f"reader failed: {e!r}"
            log.exception("stream reader failed", stream=self.name)
        finally:
            self._release_inlet()
            self.connected.set()

    def _release_inlet(self) -> None:
        """Give the inlet's sockets, ports and threads back to liblsl once this stream is done.

        pylsl destroys the liblsl inlet when the last reference goes; a recorder that kept them
        would hold LSL's 32 service ports after a few recordings and hide new streams machine-wide.
        """
        inlet, self._inlet = self._inlet, None
        if inlet is None:
            return
        try:
            inlet.close_stream()
        except Exception:  # closing a lost stream may raise; it is released either way
            pass

    def _pull_loop(self, inlet: pylsl.StreamInlet) -> None:
        """Pull into a ring of buffers; a writer thread writes them, so a write that waits for
        the disk overlaps with the next pull instead of stalling it."""
        fmt = _fmt(self.info)
        cap = pull_capacity(self.info, self.pull_timeout_s)
        n_ch = self.info.channel_count()
        pool = (
            [None]
            if fmt == "string"
            else [np.empty((cap, n_ch), dtype=CHANNEL_FORMATS[fmt]) for _ in range(PULL_BUFFERS)]
        )
        # at most PULL_BUFFERS - 1 buffers are queued or being written: the next one is free
        queue_: queue.Queue[tuple[np.ndarray, Any] | None] = queue.Queue(PULL_BUFFERS - 2)
        writer = threading.Thread(
            target=self._write_loop, args=(queue_,), name=f"rec-write-{self.name}", daemon=True
        )
        writer.start()
        try:
            self._pull_into(inlet, pool, cap, queue_)
        finally:
            queue_.put(None)
            writer.join()

    def _pull_into(
        self, inlet: pylsl.StreamInlet, pool: list[Any], cap: int, queue_: queue.Queue
    ) -> None:
        draining = False
        i = 0
        while not self._write_failed.is_set():
            if self._stop.is_set() and not draining:
                draining = True  # one more pass that only takes what is already queued
            try:
                data, ts = inlet.pull_chunk(
                    timeout=0.02 if draining else self.pull_timeout_s,
                    max_samples=cap,
                    dest_obj=pool[i % len(pool)],
                    as_numpy=True,
                )
            except LostError:
                self.stats.lost = True
                self.stats.note = "stream vanished during the recording; data up to then kept"
                log.warning("stream lost", stream=self.name, samples=self.stats.samples)
                return
            n = len(ts)
            if n:
                queue_.put((ts, data))
                i += 1
            if self.local and time.monotonic() - self._last_offset >= self.offset_interval_s:
                self._write_offset(0.0)
            if draining and n < cap:
                return

    def _write_loop(self, queue_: queue.Queue) -> None:
        while (item := queue_.get()) is not None:
            if self._write_failed.is_set():
                continue  # keep taking items so the puller never blocks on a dead writer
            try:
                self._record(*item)
            except XdfWriteError as e:
                self._write_failed.set()
                self._on_write_error(e)

    def _record(self, ts: np.ndarray, data: Any) -> None:
        st = self.stats
        assert self.stream_id is not None
        self.writer.write_samples(self.stream_id, ts, data)
        if self._gap_s is not None:
            if st.last_timestamp is not None and ts[0] - st.last_timestamp > self._gap_s:
                st.gaps += 1
            if len(ts) > 1:
                st.gaps += int(np.count_nonzero(np.diff(ts) > self._gap_s))
        if st.first_timestamp is None:
            st.first_timestamp = float(ts[0])
        st.last_timestamp = float(ts[-1])
        st.last_arrival = time.monotonic()
        st.samples += len(ts)
        st.chunks += 1

    def _write_offset(self, offset: float) -> None:
        assert self.stream_id is not None
        now = pylsl.local_clock()
        self.writer.write_clock_offset(self.stream_id, now - offset, offset)
        self.stats.offsets += 1
        self._last_offset = time.monotonic()
        drift_ms = self.clock.add(offset)
        if drift_ms is not None:
            log.warning(
                "clock offset drifted by more than 1 ms during the recording",
                stream=self.name,
                host=self.info.hostname(),
                drift_ms=round(drift_ms, 3),
            )

    def _probe_offset(self, timeout: float) -> bool:
        inlet = self._inlet
        if inlet is None:
            return False
        try:
            offset = inlet.time_correction(timeout=timeout)
        except (LslTimeout, LostError):
            return False
        self._write_offset(offset)
        return True

    def _clock_loop(self) -> None:
        """Offsets for a stream from another host: first as soon as measured, then periodically."""
        try:
            while not self._stop.is_set():
                if not self._probe_offset(timeout=1.0):
                    if self._stop.wait(0.5):
                        return
                    continue
                if self._stop.wait(self.offset_interval_s):
                    return
        except XdfWriteError as e:
            self._on_write_error(e)
