"""StreamWatcher: one LSL inlet feeding a preallocated ring buffer, read safely from any thread.

Why not Dareplane's or mne-lsl's: resolving must never hang (Dareplane waits forever), the inlet
buffer must be sized to the need (liblsl reserves memory for 360 s by default), writes must be
O(chunk) and reads O(window) (mne-lsl rolls the whole buffer per chunk), a background thread must
not cost latency (it blocks in liblsl while nobody reads, and a polling reader pulls what liblsl
already holds itself, so it sees data as early as Dareplane's ``update()`` loop), and readers need a
fill count, an atomic ``pop_new()`` and gap detection. Dareplane's names (``connect_to_stream``,
``update``, ``unfold_buffer``, ``unfold_buffer_t``, ``n_new``, ``buffer``, ``curr_i``) keep working so
their modules port unchanged.

No socket or server imports here: services wrap this in their own thin command layer.
"""

from __future__ import annotations

import math
import threading
import time
from ctypes import byref, c_double, c_int, c_size_t, c_void_p
from typing import Any

import numpy as np
import pylsl
from pylsl.util import LostError, handle_error
from pylsl.util import TimeoutError as LSLTimeoutError

from shared_utils.logging import get_logger
from shared_utils.ring_buffer import RingBuffer

log = get_logger("stream_watcher")

FORMAT_DTYPES: dict[int, Any] = {
    pylsl.cf_float32: np.float32,
    pylsl.cf_double64: np.float64,
    pylsl.cf_int8: np.int8,
    pylsl.cf_int16: np.int16,
    pylsl.cf_int32: np.int32,
    pylsl.cf_int64: np.int64,
    pylsl.cf_string: object,
}
FORMAT_NAMES = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_int8: "int8",
    pylsl.cf_int16: "int16",
    pylsl.cf_int32: "int32",
    pylsl.cf_int64: "int64",
    pylsl.cf_string: "string",
}


class StreamNotFoundError(LookupError):
    """No stream matched within the timeout; ``visible`` names the streams that were seen."""

    def __init__(self, what: str, timeout_s: float, visible: list[str]) -> None:
        shown = ", ".join(sorted(visible)) if visible else "none"
        super().__init__(f"no LSL stream {what} within {timeout_s:g} s; visible streams: {shown}")
        self.visible = visible


# ------------------------------------------------------------------------------ discovery
def describe(info: pylsl.StreamInfo) -> dict[str, Any]:
    """JSON-friendly metadata of a stream (what LIST shows and what logs carry)."""
    fmt = info.channel_format()
    return {
        "name": info.name(),
        "type": info.type(),
        "channels": info.channel_count(),
        "srate": info.nominal_srate(),
        "format": FORMAT_NAMES.get(fmt, str(fmt)),
        "source_id": info.source_id(),
        "hostname": info.hostname(),
        "uid": info.uid(),
        "created_at": info.created_at(),
    }


def list_streams(wait_s: float = 1.0) -> list[dict[str, Any]]:
    """Every stream visible right now, with metadata, sorted by name.

    liblsl's ``resolve_streams`` always waits the full ``wait_s`` (it collects answers). Keep it
    >= 1 s: with several LSL processes on one machine only one of them hears the first multicast
    query on 127.0.0.1; the others answer the unicast (KnownPeers) wave sent 0.5 s later.
    """
    return describe_all(pylsl.resolve_streams(wait_time=wait_s))


def describe_all(infos: list[pylsl.StreamInfo]) -> list[dict[str, Any]]:
    """:func:`describe` each stream once (by uid), sorted by name."""
    unique = {i.uid(): describe(i) for i in infos}
    return sorted(unique.values(), key=lambda d: (d["name"], d["uid"]))


def _visible_names(wait_s: float = 1.0) -> list[str]:
    return sorted({i.name() for i in pylsl.resolve_streams(wait_time=wait_s)})


def resolve(
    name: str | None = None, predicate: str | None = None, timeout_s: float = 5.0
) -> pylsl.StreamInfo:
    """The first stream matching ``name`` (exact) or an XPath ``predicate``, within ``timeout_s``.

    Returns as soon as one stream answers. Raises :class:`StreamNotFoundError` listing the
    visible streams otherwise; never waits forever.
    """
    if not name and not predicate:
        raise ValueError("give a stream name or an LSL predicate")
    if predicate:
        found = pylsl.resolve_bypred(predicate, minimum=1, timeout=timeout_s)
        what = f"matching {predicate!r}"
    else:
        found = pylsl.resolve_byprop("name", name, minimum=1, timeout=timeout_s)
        what = f"named {name!r}"
    if not found:
        raise StreamNotFoundError(what, timeout_s, _visible_names())
    if len(found) > 1:
        log.warning("several streams match; taking the newest", match=what, n=len(found))
        found.sort(key=lambda i: i.created_at())
    return found[-1]


def channel_labels(info: pylsl.StreamInfo) -> list[str]:
    """Channel labels from the stream's description, ``ch1..chN`` where absent."""
    n = info.channel_count()
    try:
        labels = info.get_channel_labels() or []
    except Exception:  # malformed desc XML: fall back to numbering
        labels = []
    return [lab if lab else f"ch{i + 1}" for i, lab in enumerate(list(labels)[:n])] + [
        f"ch{i + 1}" for i in range(len(labels), n)
    ]


# ----------------------------------------------------------------------------- the watcher
class StreamWatcher:
    """Watch one LSL stream: keep its newest ``buffer_size_s`` seconds (or ``irregular_size``
    samples for irregular streams) and answer window, pop and statistics queries.

    Typical use::

        with StreamWatcher("mock_eeg", buffer_size_s=10, background=True) as sw:
            sw.connect_to_stream()
            data, ts = sw.window(seconds=1.0)   # oldest first, shape (n, channels)
            new, new_ts = sw.pop_new()          # exactly what arrived since the last pop

    Without ``background`` the caller pulls with ``update()`` (Dareplane style).

    Options (keyword-only): ``predicate`` (XPath instead of a name), ``timeout_s`` (resolve and
    open), ``irregular_size`` (samples kept for irregular streams), ``background`` (own thread
    blocking in liblsl), ``clock_sync`` (time_correction warmed up in a thread, applied to every
    timestamp including those that arrived before it was known), ``dejitter`` (liblsl's
    smoothing), ``recover`` (liblsl silent recovery; the service uses False and re-attaches
    itself), ``max_pull`` (samples per pull, also the ring's write slack), ``gap_factor`` and
    ``gap_min_s`` (what counts as a hole), ``direct_pull`` (liblsl writes straight into the ring),
    ``mirror`` (every window is a view, at twice the memory), ``pull_on_read`` and ``read_idle_s``
    (see below).

    Reads with the background thread: ``window()``, ``pop_new()``, ``n_new``, ``update()`` and
    ``wait_for_samples()`` first move whatever liblsl already holds into the ring (non-blocking,
    skipped if another thread is pulling at that moment), so a polling reader never waits for the
    thread to wake up. While such reads keep coming (gaps shorter than ``read_idle_s``) the thread
    steps aside and only tops up once per ``read_idle_s``; when they stop it goes back to blocking
    in liblsl, so data keeps flowing into the ring while the reader is idle. All pulls hold one
    lock, so rows and timestamps stay in arrival order. ``pull_on_read=False`` leaves all pulling
    to the thread.
    """

    def __init__(
        self,
        name: str = "",
        buffer_size_s: float = 2.0,
        logger: Any = None,
        *,
        predicate: str | None = None,
        timeout_s: float = 5.0,
        irregular_size: int = 1000,
        background: bool = False,
        clock_sync: bool = False,
        dejitter: bool = False,
        recover: bool = True,
        max_pull: int | None = None,
        gap_factor: float = 2.5,
        gap_min_s: float = 0.01,
        pull_timeout_s: float = 0.05,
        direct_pull: bool = True,
        mirror: bool = True,
        pull_on_read: bool = True,
        read_idle_s: float = 0.05,
    ) -> None:
        if buffer_size_s <= 0:
            raise ValueError(f"buffer_size_s must be > 0, got {buffer_size_s}")
        self.name = name
        self.buffer_size_s = float(buffer_size_s)
        self.predicate = predicate
        self.timeout_s = timeout_s
        self.irregular_size = int(irregular_size)
        self.background = background
        self.clock_sync = clock_sync
        self.dejitter = dejitter
        self.recover = recover
        self.max_pull = max_pull
        self.gap_factor = gap_factor
        self.gap_min_s = gap_min_s
        self.pull_timeout_s = pull_timeout_s
        self.direct_pull = direct_pull
        self.mirror = mirror
        self.pull_on_read = pull_on_read
        self.read_idle_s = read_idle_s
        self.log = logger or log

        self.inlet: pylsl.StreamInlet | None = None
        self.stream: pylsl.StreamInfo | None = None
        self.ch_names: list[str] = []
        self.ring_buffer: RingBuffer | None = None
        self.lost = False
        self.gaps = 0
        self.gap_samples_est = 0
        self.last_gap: dict[str, float] | None = None
        self.connected_at: float | None = None  # LSL clock
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.last_arrival: float | None = None  # local_clock() when the newest chunk landed
        self._srate = 0.0
        self._max_pull = 1024
        self._numeric = True
        self._offset = 0.0
        self._offset_ready = False
        self._offset_lock = threading.Lock()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pull_lock = threading.Lock()  # one puller at a time (thread, reader or update())
        self._read_pulls = False  # readers pull too (background thread running, pull_on_read)
        self._last_read = -math.inf  # time.monotonic() of the latest pulling read
        self._reader_mode = False  # the thread is stepping aside for a polling reader
        self._n_waiting = 0  # threads inside wait_for_samples (commits notify only then)
        self._closed = False
        self._direct = False
        self._pull_fn: Any = None
        self._ec = c_int()
        self._total_at_open = 0

    # ------------------------------------------------------------------------- connection
    def connect_to_stream(
        self,
        identifier: str | None = None,
        *,
        predicate: str | None = None,
        timeout_s: float | None = None,
    ) -> StreamWatcher:
        """Resolve the stream (by name, else by predicate) and start receiving. Never hangs.

        Raises :class:`StreamNotFoundError` (listing visible streams) after ``timeout_s``.
        """
        if identifier:
            self.name = identifier
        if predicate:
            self.predicate = predicate
        info = resolve(
            None if self.predicate and not identifier else self.name,
            self.predicate if not identifier else None,
            self.timeout_s if timeout_s is None else timeout_s,
        )
        self._open(info)
        return self

    connect = connect_to_stream

    def attach(self, info: pylsl.StreamInfo) -> StreamWatcher:
        """Open an already-resolved stream (e.g. from a ContinuousResolver); replaces any inlet."""
        self._close_inlet()
        self._open(info)
        return self

    def _open(self, info: pylsl.StreamInfo) -> None:
        self._shutdown_threads()  # also stops new read-side pulls
        with self._pull_lock:  # let a read-side pull already under way finish first
            self._stop.clear()
        self._last_read = -math.inf
        srate = info.nominal_srate()
        self._srate = srate
        self._numeric = info.channel_format() != pylsl.cf_string
        if srate > 0:
            keep = max(1, math.ceil(srate * self.buffer_size_s))
            # Inlet buffer in seconds: what we keep plus a margin for a late reader, not 360 s.
            buflen = max(2, math.ceil(self.buffer_size_s) + 1)
            default_pull = int(min(65536, max(1024, srate * 0.5)))
        else:
            keep = self.irregular_size
            buflen = max(2, math.ceil(keep / 100) + 1)  # irregular: units of 100 samples
            default_pull = 1024
        self._max_pull = self.max_pull or default_pull
        flags = pylsl.proc_dejitter if self.dejitter else 0
        inlet = pylsl.StreamInlet(
            info, max_buflen=buflen, recover=self.recover, processing_flags=flags
        )
        inlet.open_stream(timeout=self.timeout_s)
        full = inlet.info(timeout=self.timeout_s)
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
            "stream connected",
            stream=self.name,
            srate=srate,
            channels=n_ch,
            keep=keep,
            inlet_buflen=buflen,
        )
        if self.clock_sync:
            self._spawn(self._clock_loop, "clock")
        if self.background:
            self._start_acquire()
        else:
            self.update()

    def reconnect(self, timeout_s: float | None = None) -> StreamWatcher:
        """Re-resolve by name and re-open, keeping the buffer and counters when the shape matches."""
        self._close_inlet()
        info = resolve(
            self.name or None, None if self.name else self.predicate, timeout_s or self.timeout_s
        )
        self._open(info)
        return self

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

    # ------------------------------------------------------------------------------ reads
    def _rb(self) -> RingBuffer:
        if self.ring_buffer is None:
            raise RuntimeError("not connected: call connect_to_stream() first")
        return self.ring_buffer

    def window(
        self, seconds: float | None = None, samples: int | None = None, copy: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``seconds`` (or ``samples``) of data, oldest first, as (data, timestamps).

        Shape (n, channels); fewer rows while the buffer fills (no zero padding). A view when the
        window does not wrap and ``copy`` is false (valid until the ring overwrites it).
        Irregular streams select by timestamp for ``seconds``.
        """
        rb = self._rb()
        self._read_pull()
        if samples is not None:
            return rb.last(samples, copy)
        if seconds is None:
            return rb.last(None, copy)
        if self._srate > 0:
            return rb.last(round(seconds * self._srate), copy)
        return rb.since(seconds, copy)

    def pop_new(self) -> tuple[np.ndarray, np.ndarray]:
        """Exactly the samples not popped before (a copy), atomically with respect to writers."""
        rb = self._rb()
        self._read_pull()
        return rb.pop_new()

    def wait_for_samples(self, total: int, timeout_s: float) -> bool:
        """Block until ``total`` samples have ever arrived (or the timeout); true if reached.

        The caller waits inside liblsl itself when no other thread is pulling (woken by the data,
        with no thread hand-off); otherwise it waits for that thread's chunk to land.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._n_waiting += 1
            try:
                while self.total < total:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    if self.lost:  # nothing to pull from (recover=False) until a re-attach
                        self._cond.wait(min(left, 0.05))
                    elif not self.background:
                        self._cond.release()
                        try:
                            self._pull(min(left, 0.05))
                        finally:
                            self._cond.acquire()
                    elif not self._read_pulls:
                        self._cond.wait(left)
                    elif self._pull_lock.acquire(blocking=False):
                        # Wait inside liblsl ourselves: the data wakes us, not a thread hand-off.
                        self._last_read = time.monotonic()
                        self._cond.release()
                        try:
                            self._pull_locked(*self._inlet_ring(), min(left, 0.05))
                        finally:
                            self._pull_lock.release()
                            self._cond.acquire()
                    else:
                        # Another thread is pulling: its commit wakes us, but it may also come back
                        # empty-handed (no notify), so look again soon.
                        self._last_read = time.monotonic()
                        self._cond.wait(min(left, 0.005))
            finally:
                self._n_waiting -= 1
        return True

    def unfold_buffer(self) -> np.ndarray:
        """All buffered samples, oldest first (a copy; Dareplane name, without zero padding)."""
        return self._rb().unfold()[0]

    def unfold_buffer_t(self) -> np.ndarray:
        """Timestamps matching :meth:`unfold_buffer`."""
        return self._rb().unfold()[1]

    @property
    def n_new(self) -> int:
        """Samples since the last pop; Dareplane code resets it with ``sw.n_new = 0``."""
        if self.ring_buffer is None:
            return 0
        self._read_pull()
        return self.ring_buffer.n_new

    @n_new.setter
    def n_new(self, value: int) -> None:
        self._rb().mark_read(value)

    @property
    def total(self) -> int:
        """Samples received since the buffer was created (monotonic counter)."""
        return self.ring_buffer.total if self.ring_buffer else 0

    @property
    def fill(self) -> int:
        """Readable samples in the buffer (grows to the buffer size, never counts padding)."""
        return self.ring_buffer.fill if self.ring_buffer else 0

    @property
    def buffer(self) -> np.ndarray:
        """The raw ring array (Dareplane attribute); prefer :meth:`window`."""
        return self._rb().data

    @property
    def buffer_t(self) -> np.ndarray:
        """The raw ring timestamps (Dareplane attribute)."""
        return self._rb().ts

    @property
    def curr_i(self) -> int:
        """Live write index into :attr:`buffer` (Dareplane's was a stale copy)."""
        return self._rb().pos

    @property
    def n_buffer(self) -> int:
        return self._rb().keep

    @property
    def srate(self) -> float:
        """Nominal rate from the stream info (0.0 for irregular streams)."""
        return self._srate

    @property
    def n_channels(self) -> int:
        return self._rb().n_channels

    @property
    def streams(self) -> list[pylsl.StreamInfo]:
        """Dareplane kept the resolve result here."""
        return [self.stream] if self.stream is not None else []

    @property
    def clock_offset(self) -> float | None:
        """Latest LSL time correction (None until the first estimate arrives or when off)."""
        return self._offset if self._offset_ready else None

    def effective_srate(self, over_s: float = 2.0) -> float | None:
        """Rate measured from the timestamps of the newest ``over_s`` seconds of data.

        A short span so an outage long ago does not drag the figure down forever. None with
        fewer than two samples.
        """
        if self.ring_buffer is None:
            return None
        if self._srate > 0:
            _, ts = self.ring_buffer.last(max(2, round(self._srate * over_s)))
        else:
            _, ts = self.ring_buffer.since(over_s)
        if len(ts) < 2 or ts[-1] <= ts[0]:
            return None
        return float((len(ts) - 1) / (ts[-1] - ts[0]))

    def stats(self) -> dict[str, Any]:
        """Health figures: rates, counts, gaps, lag and clock offset (JSON-friendly)."""
        now = pylsl.local_clock()
        return {
            "stream": self.name,
            "connected": self.inlet is not None and not self.lost,
            "lost": self.lost,
            "nominal_srate": self._srate,
            "effective_srate": self.effective_srate(),
            "channels": self.ring_buffer.n_channels if self.ring_buffer else 0,
            "samples": self.total,
            "fill": self.fill,
            "n_new": self.ring_buffer.n_new if self.ring_buffer else 0,  # stats never pull
            "gaps": self.gaps,
            "gap_samples_est": self.gap_samples_est,
            "last_gap": self.last_gap,
            "first_timestamp": self.first_ts,
            "last_timestamp": self.last_ts,
            "lag_s": None if self.last_ts is None else now - self.last_ts,
            "since_data_s": None if self.last_arrival is None else now - self.last_arrival,
            "clock_offset": self.clock_offset,
            "dejitter": self.dejitter,
        }

    # ------------------------------------------------------------------------------ close
    def start(self) -> None:
        """Switch to background acquisition after connecting in manual mode."""
        self.background = True
        if self.inlet is not None and not any(
            t.name.startswith("sw-acquire") and t.is_alive() for t in self._threads
        ):
            self._start_acquire()

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

    def close(self) -> None:
        """Stop the threads and drop the inlet; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._close_inlet()

    def __enter__(self) -> StreamWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
