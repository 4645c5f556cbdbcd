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
from typing import Any

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeout

from services.recorder.clocks import OffsetTrack
from services.recorder.stream_sizing import (
    PULL_BUFFERS,
    ReaderStats,
    channel_format,
    inlet_buflen,
    pull_capacity,
    stream_key,
)
from shared_utils.logging import get_logger
from shared_utils.streams.shm.inlet import RingInlet, ring_inlet_for, ring_summary
from shared_utils.streams.xdf_writer import CHANNEL_FORMATS, XdfWriteError, XdfWriter

log = get_logger("recorder.reader")


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
        transport: str = "auto",
    ) -> None:
        self.info = info
        self.transport = transport  # "auto": read the same-host shm ring behind the stream if any
        self.ring: RingInlet | None = None
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
        #: monotonic time of the last pulled sample (or of the opening), for loss detection
        self.last_data = time.monotonic()
        #: monotonic time the stream was reported lost (None while it is fine)
        self.lost_at: float | None = None
        #: the outlet closed the connection (LostError): this inlet is done for good
        self.connection_lost = False
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
            "uid": self.info.uid(),
            "name": self.name,
            "type": self.info.type(),
            "samples": s.samples,
            "gaps": s.gaps,
            "first_timestamp": s.first_timestamp,
            "last_timestamp": s.last_timestamp,
            "clock_offsets": s.offsets,
            "lost": s.lost,
            "losses": s.losses,
            "note": s.note,
            **ring_summary(self.ring),
            "hostname": self.info.hostname(),
            "source_id": self.info.source_id(),
            "idle_s": None
            if s.last_arrival is None
            else round(time.monotonic() - s.last_arrival, 3),
            **self.clock.summary(),
        }

    @property
    def running(self) -> bool:
        """Opened and its inlet still open (a silent stream reported lost may still be)."""
        ended = self._stop.is_set() or self.connection_lost or not self._thread.is_alive()
        return self.stream_id is not None and not ended

    def replaceable_by(self, info: pylsl.StreamInfo, rejoin_after_s: float) -> bool:
        """True when ``info`` should get a fresh reader (and XDF stream id) instead of this one:
        this stream was lost (or never answered) and ``info`` is a new outlet of the same source;
        or it is the very outlet that was lost, still on the network ``rejoin_after_s`` after
        the loss (a broken connection to a live outlet, not a dead one: the resolver forgets a
        dead outlet before that)."""
        if self.stream_id is None:  # never opened: retry once the reader gave up
            return not self._thread.is_alive() and info.uid() != self.info.uid()
        if not self.stats.lost or self.lost_at is None:
            return False
        if info.uid() != self.info.uid():
            return True
        return not self._thread.is_alive() and time.monotonic() - self.lost_at > rejoin_after_s

    def mark_lost(self, note: str) -> None:
        """Report this stream lost (STATUS ``lost``, the note); the data so far is kept."""
        if self.stats.lost:
            return
        self.lost_at = time.monotonic()
        self.stats.lost = True
        self.stats.losses += 1
        self.stats.note = note
        log.warning("stream lost", stream=self.name, samples=self.stats.samples, note=note)

    def mark_back(self, why: str) -> None:
        """A stream reported lost while its inlet stayed open is alive after all."""
        st = self.stats
        if st.lost and self.running:
            st.lost, self.lost_at = False, None
            st.note = f"{st.note}; back ({why}), recorded again"
            log.info("stream back", stream=self.name, why=why)

    # -- threads -----------------------------------------------------------------------------
    def _open(self) -> pylsl.StreamInlet | None:
        # No liblsl recovery: with it, an inlet whose outlet died waits silently forever (it
        # would reconnect a restarted source into this XDF stream, under the old header and
        # clock). Without it a closed connection raises LostError at once; the recording then
        # reports the loss and gives a source that comes back a new XDF stream.
        inlet = pylsl.StreamInlet(
            self.info, max_buflen=inlet_buflen(self.info), max_chunklen=0, recover=False
        )
        # A STOP that comes while the stream opens still lets it open (briefly): a stream that
        # was live and selected at START belongs in the file, if only as a header.
        deadline = time.monotonic() + self.open_timeout_s
        while True:
            if self._stop.is_set():
                deadline = min(deadline, time.monotonic() + 1.0)
            try:
                full = inlet.info(timeout=0.5)
                self.ring = ring_inlet_for(full, self.transport, log)
                if self.ring is not None:  # same host: read the ring, never the LSL copy
                    inlet.close_stream()
                    inlet, full = self._use_ring(self.ring)
                    break
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
        self.stream_id = self._next_id()
        self.last_data = time.monotonic()
        self.writer.add_stream(self.stream_id, full.as_xml())
        if self.local:
            self._write_offset(0.0)
        self.connected.set()
        return inlet

    def _use_ring(self, ring: RingInlet) -> tuple[RingInlet, Any]:
        """Record from ``ring`` (full rate, this machine's clock) instead of the LSL inlet."""
        self.info = ring.info()  # the LSL stream's info at the ring's full rate
        self.srate = ring.srate
        self._gap_s = 2.0 / self.srate + 0.05
        log.info("recording from the shm ring", stream=self.name, segment=ring.reader.segment)
        return ring, self.info

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
        fmt = channel_format(self.info)
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
            except LostError as e:
                self.connection_lost = True
                detail = f" ({e})" if self.ring is not None else ""
                self.mark_lost(
                    f"stream vanished during the recording; data up to then kept{detail}"
                )
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
        self.last_data = time.monotonic()
        if st.lost:  # reported lost while silent, and its data flows again
            self.mark_back("data flows again")

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
