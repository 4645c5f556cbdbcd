"""ShmReader: a consumer of a same-host ring, with the StreamWatcher's reading methods.

A reader owns nothing but its position: the writer never waits for it, and it never blocks the
writer. Each read copies rows out of the ring, then checks the writer's claim counter and drops
(and counts) any row the writer may have overwritten during the copy, so what it returns is
always whole and ``lost_samples`` is exact. Waiting is a futex sleep on the ring's notify word
(woken by the writer's commit, with a timeout to notice a writer that died).

The names mirror :class:`shared_utils.stream_watcher.StreamWatcher` (``window``, ``pop_new``,
``n_new``, ``wait_for_samples``, ``total``, ``stats``) so the watcher can use a ring as a second
backend; ``pull_into`` is the zero-allocation primitive under them (one copy, into the caller's
arrays).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from shared_utils.logging import get_logger
from shared_utils.streams.shm import _os, discovery, layout
from shared_utils.streams.shm.errors import RingNotFoundError, ShmError, WriterGoneError
from shared_utils.streams.shm.layout import LOCK_READER0, STATE_CLOSED

log = get_logger("shm")

WAIT_SLICE_S = 0.1  # a waiter looks at the writer's liveness at least this often
LOSS_LOG_EVERY_S = 1.0


class ShmReader:
    """Attach to the ring of stream ``name`` on this host (never removes it on exit).

    ``start="newest"`` delivers samples written from now on through ``pull_into``/``pop_new``;
    ``"oldest"`` starts with everything still in the ring. ``window()`` always sees the whole
    ring, whatever the position. Refused: no such ring (:class:`RingNotFoundError`, listing the
    rings that exist), a ring whose writer died (:class:`WriterGoneError`; the stale ring is
    removed). Use from one thread at a time for pulls; ``window`` and ``stats`` from any.
    """

    def __init__(
        self,
        name: str,
        *,
        session: str | None = None,
        start: str = "newest",
        logger: Any = None,
    ) -> None:
        _os.check_supported()
        if start not in ("newest", "oldest"):
            raise ValueError(f"start must be 'newest' or 'oldest', got {start!r}")
        self.name = name
        self.session = session or layout.session()
        self.segment = layout.segment_name(name, self.session)
        self.log = logger or log
        try:
            self._fd, self._mm, v = discovery.open_ring(self.segment)
        except FileNotFoundError:
            rings = [r.get("name") for r in discovery.list_rings(self.session)]
            raise RingNotFoundError(
                f"no shared-memory ring for stream {name!r} on this host (session "
                f"{self.session!r}); rings here: {', '.join(map(str, rings)) or 'none'}"
            ) from None
        except ValueError as exc:
            raise ShmError(
                f"{_os.segment_path(self.segment)} is not a usable ring: {exc}"
            ) from None
        self._view = v
        if not discovery.writer_alive(self._fd) and v.get("state") != STATE_CLOSED:
            pid, torn = v.get("writer_pid"), int(v.hot[0]) - int(v.hot[1])
            discovery.close_ring(self._fd, self._mm, v)
            discovery.remove_if_stale(self.segment)
            raise WriterGoneError(
                f"stream {name!r}: the ring's writer (pid {pid}) died without closing it"
                + (f", in the middle of a write ({torn} samples never committed)" if torn else "")
                + "; the stale ring was removed"
            )
        self.channels, self.capacity, self.srate = v.channels, v.capacity, v.srate
        self.dtype = v.dtype
        self.stream_type = v.stream_type
        self.uid = v.uid
        self.writer_pid = v.get("writer_pid")
        self.meta = v.meta()
        names = [str(c) for c in self.meta.get("channel_names") or []]
        if len(names) != self.channels:
            from shared_utils.streams.lsl import default_channel_labels

            names = default_channel_labels(self.channels)
        self.ch_names = names
        self._hot, self._notify = v.hot, v.notify
        self._data, self._ts = v.data.view(), v.ts.view()
        self._data.flags.writeable = False  # windows are views into the ring: read-only
        self._ts.flags.writeable = False
        self._futex = _os.Futex(_os.mapping_address(self._mm) + layout.NOTIFY_OFF)
        self._lock = threading.Lock()
        e = int(self._hot[1])
        self._r = e if start == "newest" else max(0, int(self._hot[0]) - self.capacity)
        self.lost_samples = 0
        self.loss_events = 0
        self.last_loss: dict[str, Any] | None = None
        self._loss_logged_at = -1e9
        self.writer_problem: str | None = None  # set once the writer is gone (closed or died)
        self._slot = self._claim_slot()
        self._closed = False

    # ------------------------------------------------------------------------ reader slot
    def _claim_slot(self) -> int:
        """Take a free reader slot (kernel-arbitrated by its lock) and publish pid + position."""
        v = self._view
        for i in range(v.max_readers):
            if _os.try_lock(self._fd, LOCK_READER0 + i):
                v.slots[i, :] = 0
                v.slots[i, 1] = self._r
                v.slot_f64[i, 3] = _os.lsl_clock()
                v.slot_pids[i] = os.getpid()
                return i
        self.log.warning(
            "all shm reader slots are taken; reading without one (not listed)", stream=self.name
        )
        return -1

    def _publish(self) -> None:
        """Our position, loss count and the time of this read, for the writer and ``list``."""
        if self._slot >= 0:
            s = self._view.slots[self._slot]
            s[1], s[2] = self._r, self.lost_samples
            self._view.slot_f64[self._slot, 3] = _os.lsl_clock()

    # ------------------------------------------------------------------------------ state
    @property
    def total(self) -> int:
        """Samples the writer has committed since the ring was created."""
        return int(self._hot[1])

    @property
    def position(self) -> int:
        """Number of the next sample ``pull_into``/``pop_new`` delivers."""
        return self._r

    @property
    def n_new(self) -> int:
        """Samples not yet pulled (capped at the ring: older ones are gone)."""
        return min(int(self._hot[1]) - self._r, self.capacity)

    @property
    def fill(self) -> int:
        """Samples a window can return right now."""
        return int(self._hot[1]) - max(0, int(self._hot[0]) - self.capacity)

    @property
    def lost(self) -> bool:
        """True once the writer is gone (StreamWatcher's meaning; see ``lost_samples``)."""
        return self.writer_problem is not None or self.writer_state() != "alive"

    def writer_state(self) -> str:
        """``alive``, ``closed`` (closed cleanly) or ``died`` (logged once with the details)."""
        if self.writer_problem is not None:
            return "closed" if self._view.get("state") == STATE_CLOSED else "died"
        if discovery.writer_alive(self._fd):
            return "alive"
        if self._view.get("state") == STATE_CLOSED:
            self.writer_problem = f"the writer of {self.name!r} closed the stream"
            self.log.info("shm writer closed the stream", stream=self.name)
            return "closed"
        ws, we = int(self._hot[0]), int(self._hot[1])
        msg = f"the writer of {self.name!r} (pid {self.writer_pid}) died"
        if ws != we:
            msg += (
                f" in the middle of a write: samples {we}..{ws - 1} ({ws - we}) were never "
                f"committed and are discarded; the {we} samples before them are intact"
            )
        self.writer_problem = msg
        self.log.warning("shm writer died", stream=self.name, detail=msg, torn=ws - we)
        return "died"

    # ------------------------------------------------------------------------------ reads
    def _note_loss(self, k: int, at: int) -> None:
        self.lost_samples += k
        self.loss_events += 1
        self.last_loss = {"at_sample": at, "lost": k, "at_lsl": _os.lsl_clock()}
        now = time.monotonic()
        if now - self._loss_logged_at >= LOSS_LOG_EVERY_S:
            self._loss_logged_at = now
            self.log.warning(
                "shm reader fell more than a ring behind; samples lost", stream=self.name,
                lost=k, lost_total=self.lost_samples, capacity=self.capacity,
            )  # fmt: skip

    def _copy(self, lo: int, n: int, out: np.ndarray, tout: np.ndarray | None) -> None:
        cap = self.capacity
        i = lo % cap
        first = min(n, cap - i)
        out[:first] = self._data[i : i + first]
        if first < n:
            out[first:n] = self._data[: n - first]
        if tout is not None:
            tout[:first] = self._ts[i : i + first]
            if first < n:
                tout[first:n] = self._ts[: n - first]

    def pull_into(
        self, data: np.ndarray, ts: np.ndarray | None = None, timeout_s: float = 0.0
    ) -> int:
        """Copy up to ``len(data)`` new samples (oldest first) into ``data`` (and ``ts``).

        Waits up to ``timeout_s`` for the first one (0: never waits). Returns how many rows were
        written; every sample skipped because the writer lapped this reader is added to
        ``lost_samples`` (and ``last_loss``).
        """
        if timeout_s > 0 and not self.wait_for_samples(self._r + 1, timeout_s):
            return 0
        cap, hot = self.capacity, self._hot
        with self._lock:
            for _ in range(4):  # lapped during the copy: retry on what is left
                e, r = int(hot[1]), self._r
                if e <= r:
                    return 0
                floor = int(hot[0]) - cap
                if floor > r:
                    self._note_loss(floor - r, r)
                    r = floor
                hi = min(e, r + len(data))
                n = hi - r
                self._copy(r, n, data, ts)
                floor = int(hot[0]) - cap  # seqlock check: what did the writer touch meanwhile?
                if floor > r:
                    k = min(floor, hi) - r
                    self._note_loss(k, r)
                    n -= k
                    if n > 0:
                        data[:n] = data[k : k + n].copy()
                        if ts is not None:
                            ts[:n] = ts[k : k + n].copy()
                self._r = hi
                self._publish()
                if n > 0:
                    return n
            return 0

    def pull_view(
        self, max_samples: int | None = None, timeout_s: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Zero-copy pull: the next run of new samples as read-only views into the ring.

        Returns ``(data, ts, first)``, ``first`` being the number of the run's first sample. A run
        stops at the ring's end (a backlog that wraps comes in two pulls). The views are only
        good until the writer laps them: once done with them, :meth:`check_view` says how many
        of their leading rows may have been overwritten meanwhile (and counts those as lost).
        """
        if timeout_s > 0 and not self.wait_for_samples(self._r + 1, timeout_s):
            return self._data[:0], self._ts[:0], self._r
        cap, hot = self.capacity, self._hot
        with self._lock:
            e, r = int(hot[1]), self._r
            floor = int(hot[0]) - cap
            if floor > r:
                self._note_loss(floor - r, r)
                r = floor
            i = r % cap
            n = max(0, min(e - r, cap - i, max_samples or cap))
            self._r = r + n
            self._publish()
            return self._data[i : i + n], self._ts[i : i + n], r

    def check_view(self, first: int, n: int) -> int:
        """Rows at the start of a :meth:`pull_view` run (``first``, ``n``) that the writer may have
        overwritten since; 0 means the whole run was intact while you used it."""
        bad = min(max(0, int(self._hot[0]) - self.capacity - first), n)
        if bad:
            self._note_loss(bad, first)
        return bad

    def pull(self, max_samples: int | None = None, timeout_s: float = 0.0):
        """New samples as fresh arrays ``(data, ts)`` (at most ``max_samples``, default all)."""
        if timeout_s > 0:
            self.wait_for_samples(self._r + 1, timeout_s)
        n = min(self.n_new, max_samples or self.capacity)
        data = np.empty((max(n, 0), self.channels), dtype=self.dtype)
        ts = np.empty(max(n, 0), dtype=np.float64)
        got = self.pull_into(data, ts) if n > 0 else 0
        return data[:got], ts[:got]

    def pop_new(self) -> tuple[np.ndarray, np.ndarray]:
        """Exactly the samples not pulled before (a copy); lapped ones are counted as lost."""
        return self.pull()

    def skip_to_newest(self) -> int:
        """Drop the backlog (not counted as lost: the caller chose to); returns how many."""
        with self._lock:
            e = int(self._hot[1])
            skipped, self._r = e - self._r, e
            self._publish()
            return skipped

    def window(
        self, seconds: float | None = None, samples: int | None = None, copy: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``seconds`` (or ``samples``) in the ring, oldest first: ``(data, ts)``.

        Independent of the read position. A read-only view into the ring when the rows do not
        wrap and ``copy`` is false: it stays valid for about ``(capacity - n) / srate`` seconds,
        until the writer laps it. Otherwise a validated copy (rows overwritten during the copy
        are dropped from its start).
        """
        hot, cap = self._hot, self.capacity
        e = int(hot[1])
        avail = e - max(0, int(hot[0]) - cap)
        if samples is None and seconds is not None:
            samples = round(seconds * self.srate)
        n = avail if samples is None else max(0, min(int(samples), avail))
        lo = e - n
        i = lo % cap
        if i + n <= cap and not copy:
            return self._data[i : i + n], self._ts[i : i + n]
        out = np.empty((n, self.channels), dtype=self.dtype)
        tout = np.empty(n, dtype=np.float64)
        self._copy(lo, n, out, tout)
        k = min(max(0, int(hot[0]) - cap - lo), n)
        return (out[k:], tout[k:]) if k else (out, tout)

    # ---------------------------------------------------------------------------- waiting
    def wait_for_samples(self, total: int, timeout_s: float) -> bool:
        """Block until the writer has committed ``total`` samples (true), or ``timeout_s`` passes
        or the writer is gone (false). Sleeps in the kernel: no polling."""
        hot, notify = self._hot, self._notify
        deadline = time.monotonic() + timeout_s
        while True:
            seq = int(notify[0])
            if int(hot[1]) >= total:
                return True
            if self.writer_problem is not None:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            t0 = time.monotonic()
            self._futex.wait(seq, min(left, WAIT_SLICE_S))
            if time.monotonic() - t0 >= WAIT_SLICE_S * 0.9 and int(hot[1]) < total:
                self.writer_state()  # a quiet slice: is the writer still there?

    def wait(self, timeout_s: float) -> bool:
        """Block until there is something to pull (true) or ``timeout_s`` passes (false)."""
        return self.wait_for_samples(self._r + 1, timeout_s)

    # ------------------------------------------------------------------------------ stats
    def effective_srate(self, over_s: float = 2.0) -> float | None:
        """Rate from the timestamps of the newest ``over_s`` seconds in the ring."""
        _, ts = self.window(samples=max(2, round(over_s * self.srate)))
        if len(ts) < 2 or ts[-1] <= ts[0]:
            return None
        return float((len(ts) - 1) / (ts[-1] - ts[0]))

    def stats(self) -> dict[str, Any]:
        """Health figures, with StreamWatcher's keys where they mean the same thing."""
        now = _os.lsl_clock()
        e = int(self._hot[1])
        last_ts = float(self._ts[(e - 1) % self.capacity]) if e else None
        last_commit = float(self._view.last_commit[0]) if e else None
        state = self.writer_state()
        return {
            "stream": self.name, "transport": "shm", "segment": self.segment,
            "connected": state == "alive", "lost": state != "alive", "writer": state,
            "writer_pid": self.writer_pid, "writer_problem": self.writer_problem,
            "nominal_srate": self.srate, "effective_srate": self.effective_srate(),
            "channels": self.channels, "samples": e, "position": self._r,
            "fill": self.fill, "n_new": self.n_new, "capacity": self.capacity,
            "capacity_s": self.capacity / self.srate,
            "gaps": self.loss_events, "gap_samples_est": self.lost_samples,
            "lost_samples": self.lost_samples, "last_gap": self.last_loss,
            "last_timestamp": last_ts, "lag_s": None if last_ts is None else now - last_ts,
            "since_data_s": None if last_commit is None else now - last_commit,
        }  # fmt: skip

    # ------------------------------------------------------------------------------ close
    def close(self) -> None:
        """Give the reader slot back and unmap; the ring itself stays. Idempotent."""
        if self._closed:
            return
        self._closed = True
        v = self._view
        if self._slot >= 0:
            v.slot_pids[self._slot] = 0
            _os.unlock(self._fd, LOCK_READER0 + self._slot)
        for a in ("_hot", "_notify", "_data", "_ts"):
            self.__dict__.pop(a, None)
        discovery.close_ring(self._fd, self._mm, v)

    def __enter__(self) -> ShmReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ShmInlet = ShmReader
