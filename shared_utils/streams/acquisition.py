"""Moving samples from an LSL inlet into the watcher's ring buffer.

The half of :class:`~shared_utils.streams.watcher.StreamWatcher` that talks to liblsl: blocking
and non-blocking pulls (liblsl writing straight into the ring where it can), the background
acquisition thread that steps aside while a reader polls, clock-offset refresh and gap counting.
It is a base class rather than a separate object so that the hot path keeps one attribute lookup
per access (the B2 latency benchmark is level with Dareplane only that way); the state it uses is
created in ``StreamWatcher.__init__`` and ``_open``.
"""

from __future__ import annotations

import math
import threading
import time
from ctypes import byref, c_double, c_size_t, c_void_p
from typing import Any

import numpy as np
import pylsl
from pylsl.util import LostError, handle_error
from pylsl.util import TimeoutError as LSLTimeoutError

from shared_utils.streams.lsl import FORMAT_DTYPES, channel_labels
from shared_utils.streams.ring_buffer import RingBuffer
from shared_utils.streams.shm_acquisition import RingAcquisition

# ----------------------------------------------------------------------------- the watcher


class InletAcquisition(RingAcquisition):
    """Pulling and background acquisition for :class:`StreamWatcher` (see the module notes)."""

    def _open(self, info: pylsl.StreamInfo | None) -> None:
        """Open the stream ``info`` describes (None: the ring named ``self.name``, no LSL)."""
        self._shutdown_threads()  # also stops new read-side pulls
        with self._pull_lock:  # let a read-side pull already under way finish first
            self._stop.clear()
        self._last_read = -math.inf
        inlet, full = self._open_source(info)
        srate = full.nominal_srate()
        self._srate = srate
        self._numeric = full.channel_format() != pylsl.cf_string
        if srate > 0:
            keep = max(1, math.ceil(srate * self.buffer_size_s))
            default_pull = int(min(65536, max(1024, srate * 0.5)))
        else:
            keep = self.irregular_size
            default_pull = 1024
        self._max_pull = self.max_pull or default_pull
        n_ch = full.channel_count()
        dtype = FORMAT_DTYPES.get(full.channel_format(), np.float32)
        rb = self.ring_buffer
        if rb is None or rb.n_channels != n_ch or rb.dtype != np.dtype(dtype) or rb.keep != keep:
            rb = RingBuffer(keep, n_ch, dtype=dtype, slack=self._max_pull, mirror=self.mirror)
            # A new buffer (first connect, or the stream came back with another shape): counters
            # describe this buffer only.
            self.first_ts = self.last_ts = self.last_gap = None
            self.gaps = self.gap_samples_est = 0
        self.ring_buffer = rb
        self._total_at_open = rb.total
        # Direct liblsl pulls need pylsl's bound C function; fall back to pull_chunk otherwise.
        self._pull_fn = getattr(inlet, "do_pull_chunk", None)
        self._direct = bool(self.direct_pull and self._numeric and self._pull_fn is not None)
        self.inlet, self.stream = inlet, full
        self.name = full.name()
        self.ch_names = channel_labels(full)
        self.lost = False
        self.connected_at = pylsl.local_clock()
        with self._offset_lock:
            self._offset, self._offset_ready = 0.0, False
        self.log.info(
            "stream connected", stream=self.name, srate=srate, channels=n_ch, keep=keep,
            transport=getattr(inlet, "transport", "lsl"),
        )  # fmt: skip
        if self._ring is not None:  # the ring's stamps are on this machine's clock already
            self._offset_ready = True
        elif self.clock_sync:
            self._spawn(self._clock_loop, "clock")
        if self.background:
            self._start_acquire()
        else:
            self.update()

    def _open_source(self, info: pylsl.StreamInfo | None) -> tuple[Any, Any]:
        """(inlet, full info): the LSL inlet, or the same-host ring behind it (shm_acquisition).

        The full info is fetched before the data stream is opened, so a stream read from its
        ring never sends a sample over LSL.
        """
        if info is None:
            self._ring = self._open_ring_by_name(self.timeout_s)
            return self._ring, self._ring.info()
        srate = info.nominal_srate()
        # Inlet buffer: what we keep plus a margin for a late reader, not liblsl's 360 s.
        if srate > 0:
            buflen = max(2, math.ceil(self.buffer_size_s) + 1)
        else:
            buflen = max(2, math.ceil(self.irregular_size / 100) + 1)  # units of 100 samples
        flags = pylsl.proc_dejitter if self.dejitter else 0
        inlet = pylsl.StreamInlet(
            info, max_buflen=buflen, recover=self.recover, processing_flags=flags
        )
        full = inlet.info(timeout=self.timeout_s)
        self._ring = self._ring_behind(full)
        if self._ring is not None:
            inlet.close_stream()
            return self._ring, self._ring.info()
        inlet.open_stream(timeout=self.timeout_s)
        return inlet, full

    def _start_acquire(self) -> None:
        self._read_pulls = self.pull_on_read
        self._spawn(self._acquire_loop, "acquire")

    def _spawn(self, fn: Any, what: str) -> None:
        t = threading.Thread(target=fn, name=f"sw-{what}-{self.name}", daemon=True)
        self._threads.append(t)
        t.start()

    # ---------------------------------------------------------------------------- pulling
    def update(self) -> int:
        """Pull everything available now, without blocking; returns the number of samples added.

        With a background thread running this is a non-blocking top-up like any read (a no-op
        with ``pull_on_read=False``, or while another thread is pulling).
        """
        if self.background and any(t.is_alive() for t in self._threads):
            return self._read_pull()
        inlet, rb = self._inlet_ring()
        with self._pull_lock:
            return self._drain(inlet, rb)

    def _inlet_ring(self) -> tuple[pylsl.StreamInlet, RingBuffer]:
        inlet, rb = self.inlet, self.ring_buffer
        if inlet is None or rb is None:
            raise RuntimeError("not connected: call connect_to_stream() first")
        return inlet, rb

    def _drain(self, inlet: pylsl.StreamInlet, rb: RingBuffer) -> int:
        """Non-blocking pulls until liblsl has nothing left; caller holds ``_pull_lock``.

        Bounded by the ring's capacity, so a flooding source cannot trap the caller here.
        """
        added, cap, avail = 0, rb.capacity, inlet.samples_available
        while added < cap:
            n = self._pull_locked(inlet, rb, 0.0)
            added += n
            if n == 0 or not avail():  # liblsl is empty: no need for an empty pull to say so
                break
        return added

    def _read_pull(self) -> int:
        """A reader's top-up: move what liblsl already holds into the ring before reading.

        Never blocks: if another thread is pulling right now, its chunk lands in a moment anyway.
        Marks the reader as active, so the background thread steps aside (see the class notes).
        """
        if not self._read_pulls:
            return 0
        self._last_read = time.monotonic()
        if self.lost or not self._pull_lock.acquire(blocking=False):
            return 0
        try:
            inlet, rb = self.inlet, self.ring_buffer
            if inlet is None or rb is None or not self._read_pulls:
                return 0
            if not inlet.samples_available():  # the usual poll: a fraction of an empty pull
                return 0
            return self._drain(inlet, rb)
        except Exception as exc:  # a read must not fail for a pull problem; the thread reports it
            self.log.debug("read-side pull failed", stream=self.name, error=repr(exc))
            return 0
        finally:
            self._pull_lock.release()

    def _pull(self, timeout: float) -> int:
        """One pull into the ring (blocking up to ``timeout`` for the first sample)."""
        inlet, rb = self._inlet_ring()
        with self._pull_lock:
            return self._pull_locked(inlet, rb, timeout)

    def _pull_locked(self, inlet: pylsl.StreamInlet, rb: RingBuffer, timeout: float) -> int:
        """:meth:`_pull` for a caller that holds ``_pull_lock``."""
        try:
            if self._numeric and self._direct:
                n = self._pull_direct(inlet, rb, timeout)
            elif self._ring is not None:
                n = self._pull_ring(inlet, rb, timeout)
            elif self._numeric:
                slot = rb.write_slot(self._max_pull)
                _, ts = inlet.pull_chunk(
                    timeout=timeout,
                    max_samples=len(slot),
                    dest_obj=slot,
                    min_samples=1 if timeout > 0 else None,
                    as_numpy=True,
                )
                n = len(ts)
                if n:
                    self._commit(ts, lambda t: rb.commit(n, t))
            else:
                data, ts = inlet.pull_chunk(timeout=timeout, max_samples=self._max_pull)
                n = len(ts)
                if n:
                    tsa = np.asarray(ts, dtype=np.float64)
                    self._commit(tsa, lambda t: rb.add(data, t))
        except LostError:
            if not self.lost:
                self.log.warning("stream lost", stream=self.name)
            self.lost = True
            return 0
        return n

    def _pull_direct(self, inlet: pylsl.StreamInlet, rb: RingBuffer, timeout: float) -> int:
        """liblsl writes samples and timestamps straight into the ring: no allocation, no copy.

        Same low-latency pattern as pylsl's ``min_samples=1``: wait up to ``timeout`` for one
        sample (``timeout`` 0: take what is there), then drain what is already there without
        waiting. Raw addresses and one commit keep the per-chunk Python overhead small.
        """
        d0, t0, rows, pos = rb.write_ptrs(self._max_pull)
        n_ch, row_bytes = rb.n_channels, rb.row_bytes
        fn, ec, obj, avail = self._pull_fn, self._ec, inlet.obj, inlet.samples_available
        first = 1 if timeout > 0 else rows
        got = fn(obj, c_void_p(d0), c_void_p(t0), c_size_t(first * n_ch), c_size_t(first),
                 c_double(timeout), byref(ec)) // n_ch  # fmt: skip
        if ec.value:
            handle_error(ec)
        # liblsl hands a chunk over sample by sample, so the first look may see only its head:
        # keep draining (no waiting) while liblsl says more is there and the slot has room.
        while got and got < rows and avail():
            more = fn(obj, c_void_p(d0 + got * row_bytes), c_void_p(t0 + got * 8),
                      c_size_t((rows - got) * n_ch), c_size_t(rows - got), c_double(0.0),
                      byref(ec)) // n_ch  # fmt: skip
            if ec.value:
                handle_error(ec)
            if not more:
                break
            got += more
        if got:
            self._commit_slot(rb, pos, got)
        return got

    def _commit_slot(self, rb: RingBuffer, pos: int, n: int) -> None:
        """Publish ``n`` rows that liblsl wrote into the ring's write slot at row ``pos``."""
        ts = rb.ts[pos : pos + n]
        with self._offset_lock:
            if self._offset:
                ts += self._offset
            self._check_gaps(ts)
            rb.commit(n)
            if self.first_ts is None:
                self.first_ts = float(ts[0])
            self.last_ts = float(ts[-1])
        self._published()

    def _published(self) -> None:
        self.last_arrival = pylsl.local_clock()
        if self._n_waiting:  # read after the commit; a waiter counts itself before checking
            with self._cond:
                self._cond.notify_all()

    def _commit(self, ts: np.ndarray, store: Any) -> None:
        """Offset, gap-check and publish one chunk's timestamps (clock offset applied atomically)."""
        with self._offset_lock:
            if self._offset:
                ts = ts + self._offset
            self._check_gaps(ts)
            store(ts)
            if self.first_ts is None:
                self.first_ts = float(ts[0])
            self.last_ts = float(ts[-1])
        self._published()

    def _check_gaps(self, ts: np.ndarray) -> None:
        """Count holes in regular streams: an interval longer than ``gap_factor`` periods.

        ``gap_min_s`` keeps push-time jitter on sources that stamp with the wall clock from
        counting as lost data.
        """
        if self._srate <= 0:
            return
        limit = max(self.gap_factor / self._srate, self.gap_min_s)
        prev = self.last_ts
        if prev is not None and ts[0] - prev > limit:
            self._note_gap(prev, float(ts[0]))
        if len(ts) > 1:
            d = ts[1:] - ts[:-1]  # np.diff without its Python overhead
            if d.max() > limit:
                for i in np.flatnonzero(d > limit):
                    self._note_gap(float(ts[i]), float(ts[i + 1]))

    def _note_gap(self, before: float, after: float) -> None:
        self.gaps += 1
        missing = max(0, round((after - before) * self._srate) - 1)
        self.gap_samples_est += missing
        self.last_gap = {"at": before, "duration_s": after - before, "missing_est": missing}

    def _read_idle_left(self) -> float:
        """Seconds until the polling reader counts as idle (<= 0: it is idle, or there is none)."""
        if not self._read_pulls:
            return 0.0
        return self._last_read + self.read_idle_s - time.monotonic()

    def _acquire_loop(self) -> None:
        """Background acquisition: block inside liblsl until data arrives (no sleep polling).

        While a reader polls (and pulls on each read), step aside instead of racing it for the
        data: sleep until its reads stop for ``read_idle_s``, topping up once per wake-up.
        """
        while not self._stop.is_set():
            try:
                left = self._read_idle_left()
                if left > 0:
                    self._reader_mode = True
                    self._stop.wait(left)
                    if self._pull_lock.acquire(blocking=False):  # else a reader is pulling
                        try:
                            self._drain(*self._inlet_ring())
                        finally:
                            self._pull_lock.release()
                    continue
                self._reader_mode = False
                self._pull(self.pull_timeout_s)
            except Exception as exc:  # keep the watcher alive; the error is in the log
                self.log.error("acquisition error", stream=self.name, error=repr(exc))
                self._stop.wait(0.1)
            if self.lost and not self.recover:
                self._stop.wait(self.pull_timeout_s)

    def _clock_loop(self) -> None:
        """First time_correction (~0.65 s) off the hot path; later refreshes are instant."""
        inlet = self.inlet
        first = True
        while not self._stop.is_set() and inlet is self.inlet and inlet is not None:
            try:
                off = inlet.time_correction(timeout=2.0 if first else 0.5)
            except (LSLTimeoutError, LostError):
                self._stop.wait(1.0)
                continue
            except Exception as exc:
                self.log.warning("time_correction failed", stream=self.name, error=repr(exc))
                self._stop.wait(1.0)
                continue
            with self._offset_lock:
                if first and self.ring_buffer is not None:
                    # Samples that arrived on this inlet before the estimate get it retroactively
                    # (older ones, from before a re-attach, already carry their own offset).
                    since_open = self.ring_buffer.total - self._total_at_open
                    self.ring_buffer.shift_timestamps(off, newest=since_open)
                    if self.first_ts is not None:
                        self.first_ts += off
                    if self.last_ts is not None:
                        self.last_ts += off
                self._offset, self._offset_ready = off, True
            first = False
            self._stop.wait(5.0)

    def _shutdown_threads(self) -> None:
        self._read_pulls = False
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=max(2.0, 3 * self.pull_timeout_s))
        self._threads = []

    def _close_inlet(self) -> None:
        self._shutdown_threads()
        with self._pull_lock:  # a reader may be pulling from this inlet right now
            inlet, self.inlet = self.inlet, None
        if inlet is not None:
            try:
                inlet.close_stream()
            except Exception:  # already gone; nothing to release
                pass
