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
from ctypes import c_int
from typing import Any

import numpy as np
import pylsl

from shared_utils.logging import get_logger
from shared_utils.streams.acquisition import InletAcquisition
from shared_utils.streams.dareplane_names import DareplaneNames
from shared_utils.streams.lsl import resolve
from shared_utils.streams.ring_buffer import RingBuffer
from shared_utils.streams.shm.inlet import check_transport

log = get_logger("stream_watcher")


# ----------------------------------------------------------------------------- the watcher
class StreamWatcher(InletAcquisition, DareplaneNames):
    """Watch one LSL stream: keep its newest ``buffer_size_s`` seconds (or ``irregular_size``
    samples for irregular streams) and answer window, pop and statistics queries.

    Typical use::

        with StreamWatcher("mock_eeg", buffer_size_s=10, background=True) as sw:
            sw.connect_to_stream()
            data, ts = sw.window(seconds=1.0)   # oldest first, shape (n, channels)
            new, new_ts = sw.pop_new()          # exactly what arrived since the last pop

    Without ``background`` the caller pulls with ``update()`` (Dareplane style).

    Options (keyword-only): ``predicate`` (XPath instead of a name), ``host`` / ``source_id``
    (the publisher, where two rigs publish one name), ``unique`` (refuse a name that several
    sources publish, :class:`AmbiguousStreamError`, instead of taking the newest with a warning),
    ``timeout_s`` (resolve and open), ``irregular_size`` (samples kept for irregular streams), ``background`` (own thread
    blocking in liblsl), ``clock_sync`` (time_correction warmed up in a thread, applied to every
    timestamp including those that arrived before it was known), ``dejitter`` (liblsl's
    smoothing), ``recover`` (liblsl silent recovery; the service uses False and re-attaches
    itself), ``max_pull`` (samples per pull, also the ring's write slack), ``gap_factor`` and
    ``gap_min_s`` (what counts as a hole), ``direct_pull`` (liblsl writes straight into the ring),
    ``mirror`` (every window is a view, at twice the memory), ``pull_on_read`` and ``read_idle_s``
    (see below), ``transport`` (``"auto"``: read the same-host shared-memory ring behind the
    stream when there is one; ``"lsl"``; ``"shm"``: the ring by name, without LSL; see
    :mod:`~shared_utils.streams.shm_acquisition`).

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
        host: str | None = None,
        source_id: str | None = None,
        unique: bool = False,
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
        transport: str = "auto",
    ) -> None:
        if buffer_size_s <= 0:
            raise ValueError(f"buffer_size_s must be > 0, got {buffer_size_s}")
        self.name = name
        self.buffer_size_s = float(buffer_size_s)
        self.predicate = predicate
        self._which = {"host": host, "source_id": source_id, "unique": unique}  # for resolve
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
        self.transport = check_transport(transport)
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

        Raises :class:`StreamNotFoundError` (listing visible streams) after ``timeout_s``, and
        :class:`AmbiguousStreamError` (with ``unique``) when several sources publish it.
        """
        if identifier:
            self.name = identifier
        if predicate:
            self.predicate = predicate
        if self.transport == "shm":  # the ring by name: no LSL resolve
            self._open(None)
            return self
        info = resolve(
            None if self.predicate and not identifier else self.name,
            self.predicate if not identifier else None,
            self.timeout_s if timeout_s is None else timeout_s,
            **self._which,
        )
        self._open(info)
        return self

    connect = connect_to_stream

    def attach(self, info: pylsl.StreamInfo) -> StreamWatcher:
        """Open an already-resolved stream (e.g. from a ContinuousResolver); replaces any inlet."""
        self._close_inlet()
        self._open(info)
        return self

    def reconnect(self, timeout_s: float | None = None) -> StreamWatcher:
        """Re-resolve by name and re-open, keeping the buffer and counters when the shape matches."""
        self._close_inlet()
        if self.transport == "shm":
            self._open(None)
            return self
        info = resolve(
            self.name or None,
            None if self.name else self.predicate,
            timeout_s or self.timeout_s,
            **self._which,
        )
        self._open(info)
        return self

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
            **self._transport_stats(),
        }

    # ------------------------------------------------------------------------------ close
    def start(self) -> None:
        """Switch to background acquisition after connecting in manual mode."""
        self.background = True
        if self.inlet is not None and not any(
            t.name.startswith("sw-acquire") and t.is_alive() for t in self._threads
        ):
            self._start_acquire()

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
