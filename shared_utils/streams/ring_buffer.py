"""A preallocated, thread-safe index ring for multichannel samples and their timestamps.

Why an index ring: writes cost O(chunk) and window reads cost O(window), independent of how many
seconds are kept (rolling the whole array on every chunk costs O(buffer) and dominates CPU at high
channel counts). The ring has ``capacity = keep + slack`` rows: readers may see at most ``keep``
rows, and the writer may fill the ``slack`` rows in front of the newest sample *outside* the lock
(for example by letting liblsl pull straight into them), because no reader can see those rows.

Pure numpy; no LSL or socket imports, so it is testable on its own.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class RingBuffer:
    """Keep the newest ``keep`` samples of ``n_channels`` columns plus one timestamp per sample.

    ``dtype=object`` holds strings (marker streams). All public methods are safe to call from
    several threads. A window returned with ``copy=False`` is a view into the ring: it stays valid
    until another ``capacity - len(window)`` samples have been written; pass ``copy=True`` to keep
    data for longer.

    ``mirror=True`` keeps a second copy of the ring right behind the first (twice the memory, one
    extra copy of every row) so that *every* window is a contiguous view, even one that
    wraps: a 1 s read of 256 ch @ 5 kHz then costs about a microsecond instead of a 5 MB copy.
    The copy is lazy: a wrapped window only reads mirror rows that continue the ring's start
    (rows ``[0, pos)`` of the current lap), so the first read that needs them copies the rows
    written since the last such read. Writers never pay for it, and each row is copied at most
    once per lap.
    """

    def __init__(
        self,
        keep: int,
        n_channels: int,
        dtype: Any = np.float32,
        slack: int = 1024,
        mirror: bool = False,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1 sample, got {keep}")
        if n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels}")
        self.keep = int(keep)
        self.slack = max(1, int(slack))
        self.capacity = self.keep + self.slack
        self.n_channels = int(n_channels)
        self.dtype = np.dtype(dtype)
        self.mirror = bool(mirror)
        rows = self.capacity * (2 if self.mirror else 1)
        self._mem = np.empty((rows, self.n_channels), dtype=self.dtype)
        self._tmem = np.empty(rows, dtype=np.float64)
        # Touch every page now: a lazily mapped buffer page-faults on the hot path instead.
        self._mem.fill(0 if self.dtype != object else "")
        self._tmem.fill(0.0)
        self.data = self._mem[: self.capacity]  # the ring proper (Dareplane's ``buffer``)
        self.ts = self._tmem[: self.capacity]
        self.row_bytes = self.n_channels * self.dtype.itemsize
        # Base addresses for C writers (write_ptrs); the memory never moves. Not for strings.
        self._d_addr = self._mem.ctypes.data if self.dtype != object else 0
        self._t_addr = self._tmem.ctypes.data
        self._lock = threading.Lock()
        self._pos = 0  # next row to write
        self._total = 0  # samples committed since creation (monotonic counter)
        self._popped = 0  # value of _total at the last pop_new()/mark_read()
        self._mirrored = 0  # ring rows [0, _mirrored) of this lap are copied to the mirror half

    # ----------------------------------------------------------------------------------- state
    @property
    def lock(self) -> threading.Lock:
        """The lock guarding the indices (hold it to read several fields consistently)."""
        return self._lock

    @property
    def total(self) -> int:
        """Samples ever written (never decreases, not capped by the ring size)."""
        return self._total

    @property
    def fill(self) -> int:
        """Rows that hold real samples and may be read (never counts zero padding)."""
        return min(self._total, self.keep)

    @property
    def pos(self) -> int:
        """Row index the next sample goes to (Dareplane's ``curr_i``)."""
        return self._pos

    @property
    def n_new(self) -> int:
        """Samples written since the last ``pop_new()`` (capped at ``keep``: older ones are gone)."""
        return min(self._total - self._popped, self.keep)

    @property
    def n_unread_lost(self) -> int:
        """Samples that were overwritten before anyone popped them."""
        return max(0, self._total - self._popped - self.keep)

    # ----------------------------------------------------------------------------------- write
    def write_slot(self, max_n: int) -> np.ndarray:
        """Contiguous rows in front of the newest sample that may be filled without the lock.

        At most ``min(max_n, slack, rows until the end of the ring)`` rows; fill them, then call
        :meth:`commit` with the number actually written. Only one writer may use slots.
        """
        return self.write_slots(max_n)[0]

    def write_slots(self, max_n: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`write_slot`, plus the matching timestamp rows (fill both, then commit)."""
        n = min(max_n, self.slack, self.capacity - self._pos)
        return self.data[self._pos : self._pos + n], self.ts[self._pos : self._pos + n]

    def write_ptrs(self, max_n: int) -> tuple[int, int, int, int]:
        """:meth:`write_slots` as raw addresses for a C writer such as liblsl, without creating
        arrays: ``(data_address, ts_address, rows, first_row)``. Numeric dtypes only."""
        pos = self._pos
        n = min(max_n, self.slack, self.capacity - pos)
        return self._d_addr + pos * self.row_bytes, self._t_addr + pos * 8, n, pos

    def commit(self, n: int, ts: np.ndarray | list[float] | None = None) -> None:
        """Publish ``n`` rows written into the current write slot.

        ``ts``: their timestamps, or None when they were written into the timestamp slot too.
        """
        if n <= 0:
            return
        if ts is not None:  # the slot is invisible to readers until the index moves
            self.ts[self._pos : self._pos + n] = ts[:n] if len(ts) != n else ts
        with self._lock:
            self._pos = (self._pos + n) % self.capacity
            self._total += n
            if self._pos == 0:  # a new lap: its rows are not mirrored yet
                self._mirrored = 0

    def add(self, data: np.ndarray | list, ts: np.ndarray | list[float]) -> int:
        """Copy samples (rows) in, splitting at the wrap; returns how many were added.

        A chunk longer than ``keep`` keeps only its newest ``keep`` rows but still counts fully in
        ``total``, so gap accounting by count stays exact.
        """
        arr = np.asarray(data, dtype=self.dtype) if self.dtype != object else _as_object_rows(data)
        if arr.ndim == 1:
            arr = arr.reshape(-1, self.n_channels)
        tarr = np.asarray(ts, dtype=np.float64)
        n = arr.shape[0]
        if n == 0:
            return 0
        if tarr.shape[0] != n:
            raise ValueError(f"{n} samples but {tarr.shape[0]} timestamps")
        skip = max(0, n - self.keep)
        with self._lock:
            if self._pos + n >= self.capacity:  # wraps: a new lap, not mirrored yet
                self._mirrored = 0
            self._pos = (self._pos + skip) % self.capacity
            rows, trows = arr[skip:], tarr[skip:]
            m = rows.shape[0]
            first = min(m, self.capacity - self._pos)
            self.data[self._pos : self._pos + first] = rows[:first]
            self.ts[self._pos : self._pos + first] = trows[:first]
            if first < m:
                self.data[: m - first] = rows[first:]
                self.ts[: m - first] = trows[first:]
            self._pos = (self._pos + m) % self.capacity
            self._total += n
        return n

    def _mirror_to_pos(self) -> None:
        """Bring the mirror rows a wrapped window reads up to date; caller holds the lock."""
        a, b = self._mirrored, self._pos
        if b > a:
            c = self.capacity
            self._mem[c + a : c + b] = self._mem[a:b]
            self._tmem[c + a : c + b] = self._tmem[a:b]
            self._mirrored = b

    def shift_timestamps(self, delta: float, newest: int | None = None) -> None:
        """Add ``delta`` to the timestamps of the ``newest`` readable samples (all if None).

        For a clock offset that became known late. Rows in the write slot are left alone: a
        writer may be filling them right now.
        """
        with self._lock:
            n = min(self._total, self.keep, self._total if newest is None else max(0, newest))
            start = self._pos - n
            c = self.capacity
            spans = [(start, self._pos)] if start >= 0 else [(c + start, c), (0, self._pos)]
            for a, b in spans:
                self.ts[a:b] += delta
                if self.mirror:
                    self._tmem[c + a : c + b] += delta

    def clear(self) -> None:
        """Forget all samples (counters restart); used when a stream is re-attached from scratch."""
        with self._lock:
            self._pos = 0
            self._total = 0
            self._popped = 0
            self._mirrored = 0

    # ------------------------------------------------------------------------------------ read
    def _last(self, n: int, copy: bool) -> tuple[np.ndarray, np.ndarray]:
        """Newest ``n`` rows in time order; caller holds the lock and has clipped ``n``."""
        if n <= 0:
            return self.data[:0].copy(), self.ts[:0].copy()
        start = self._pos - n
        if start >= 0:  # contiguous: a view unless a copy is asked for
            d, t = self.data[start : self._pos], self.ts[start : self._pos]
            return (d.copy(), t.copy()) if copy else (d, t)
        if self.mirror:  # the wrapped rows continue in the mirror half: still one view
            self._mirror_to_pos()
            c = self.capacity
            d, t = self._mem[c + start : c + self._pos], self._tmem[c + start : c + self._pos]
            return (d.copy(), t.copy()) if copy else (d, t)
        idx_a = slice(self.capacity + start, self.capacity)
        d = np.concatenate((self.data[idx_a], self.data[: self._pos]))
        t = np.concatenate((self.ts[idx_a], self.ts[: self._pos]))
        return d, t

    def last(self, n: int | None = None, copy: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``n`` samples (all readable ones if None), oldest first: (data, ts).

        Returns fewer rows when fewer exist (never zero padding). A view when the rows do not wrap
        and ``copy`` is false.
        """
        with self._lock:
            fill = min(self._total, self.keep)
            n = fill if n is None else max(0, min(int(n), fill))
            return self._last(n, copy)

    def since(self, seconds: float, copy: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Samples whose timestamp is within ``seconds`` of the newest one (irregular streams)."""
        with self._lock:
            fill = min(self._total, self.keep)
            d, t = self._last(fill, copy=False)
            if fill == 0:
                return self._last(0, copy)
            i = int(np.searchsorted(t, t[-1] - seconds, side="left"))
            d, t = d[i:], t[i:]
            return (d.copy(), t.copy()) if copy else (d, t)

    def pop_new(self) -> tuple[np.ndarray, np.ndarray]:
        """Exactly the samples written since the previous pop (a copy), atomically.

        If more than ``keep`` arrived in between, the oldest are gone; :attr:`n_unread_lost` says
        how many.
        """
        with self._lock:
            n = min(self._total - self._popped, self.keep)
            self._popped = self._total
            return self._last(n, copy=True)

    def mark_read(self, n_left: int = 0) -> None:
        """Declare all but the newest ``n_left`` samples consumed (Dareplane's ``n_new = 0``)."""
        with self._lock:
            self._popped = self._total - max(0, min(int(n_left), self._total - self._popped))

    def unfold(self) -> tuple[np.ndarray, np.ndarray]:
        """All readable samples in time order, as a copy (Dareplane's ``unfold_buffer``)."""
        return self.last(None, copy=True)


def _as_object_rows(data: Any) -> np.ndarray:
    """Rows of strings as a 2-D object array without numpy guessing a fixed-width str dtype."""
    rows = list(data)
    out = np.empty((len(rows), len(rows[0]) if rows else 0), dtype=object)
    for i, r in enumerate(rows):
        out[i, :] = r
    return out
