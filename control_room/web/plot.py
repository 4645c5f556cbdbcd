"""Live plot feeds: an LSL stream reduced to min/max per screen column, ~20 frames a second.

Why on the server: 64 channels at 1 kHz are 64,000 values a second; a page needs only the
envelope of each pixel column (about 600 columns for the whole window), so each frame carries
just the columns completed since the last one (a few per channel, ~4 KB at 64 channels) instead
of raw samples. The min and the max keep every spike visible. Columns are cut on the stream's
own timestamps, so the plot's time axis is true even when chunks arrive unevenly.

A feed exists only while a page shows it: the control room opens the stream (a
``StreamWatcher`` with a short buffer) when the first page asks and closes it when the last one
leaves, so a control room with no page open pays nothing.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

FRAME_S = 0.05  # 20 frames a second
MAX_COLS = 2000
MIN_COLS = 50


class ColumnDecimator:
    """Min/max per column of ``dt`` seconds; returns only columns that are complete."""

    def __init__(self, dt: float) -> None:
        self.dt = dt
        self._col: int | None = None  # the column still filling
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._last_t = -np.inf

    def add(self, data: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feed samples ``(n, channels)`` with timestamps ``(n,)``; returns (cols, mins, maxs)
        of the columns completed, ``mins``/``maxs`` shaped ``(k, channels)``."""
        if len(ts) == 0:
            return _empty(data.shape[1] if data.ndim == 2 else 0)
        data = np.asarray(data, dtype=np.float32)
        ts = np.maximum.accumulate(np.maximum(np.asarray(ts, dtype=float), self._last_t))
        self._last_t = float(ts[-1])
        cols = np.floor(ts / self.dt).astype(np.int64)
        lo, hi = data, data
        if self._col is not None:  # the pending column joins as two rows (its min and its max)
            assert self._min is not None
            assert self._max is not None
            cols = np.concatenate([[self._col, self._col], cols])
            lo = np.vstack([self._min, self._max, data])
            hi = lo
        starts = np.concatenate([[0], np.flatnonzero(np.diff(cols)) + 1])
        mins = np.minimum.reduceat(lo, starts, axis=0)
        maxs = np.maximum.reduceat(hi, starts, axis=0)
        ids = cols[starts]
        self._col, self._min, self._max = int(ids[-1]), mins[-1:], maxs[-1:]
        return ids[:-1], mins[:-1], maxs[:-1]


def _empty(ch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = np.zeros((0, ch), dtype=np.float32)
    return np.zeros(0, dtype=np.int64), z, z


def pack(values: np.ndarray) -> str:
    """float32 little-endian, base64: what the page reads into a ``Float32Array``."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode()


def feed_key(stream: str, seconds: float, cols: int) -> str:
    return f"{stream}|{seconds:g}|{cols}"


class PlotFeed:
    """One stream, one window length, one column count; shared by every page that shows it."""

    def __init__(
        self,
        stream: str,
        seconds: float,
        cols: int,
        send: Callable[[str, list[str], dict[str, Any]], None],
        notify: Callable[[str, str, dict[str, Any]], None],
    ) -> None:
        self.stream = stream
        self.seconds = seconds
        self.cols = cols
        self.key = feed_key(stream, seconds, cols)
        self.dt = seconds / cols
        self.pages: set[str] = set()
        self.frames = 0
        self._send = send
        self._notify = notify  # (page, event, data): one page's info/error message
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._info: dict[str, Any] | None = None
        self._ring_cols = np.full(cols, -1, dtype=np.int64)  # last `cols` columns, for joiners
        self._ring_min: np.ndarray | None = None
        self._ring_max: np.ndarray | None = None
        self._thread = threading.Thread(target=self._run, name=f"plot-{stream}", daemon=True)
        self._thread.start()

    def add_page(self, page: str) -> None:
        with self._lock:
            self.pages.add(page)
            info = self._info
            backlog = self._backlog() if info is not None else None
        if info is not None:
            self._notify(page, "plotinfo", info)
            if backlog is not None:
                self._send(self.key, [page], backlog)

    def remove_page(self, page: str) -> int:
        with self._lock:
            self.pages.discard(page)
            return len(self.pages)

    def close(self) -> None:
        self._stop.set()

    # -- the feed's own thread ----------------------------------------------------------------
    def _run(self) -> None:
        from shared_utils.stream_watcher import StreamWatcher

        sw = StreamWatcher(self.stream, buffer_size_s=2.0, background=True, timeout_s=2.0)
        try:
            sw.connect_to_stream()
        except Exception as exc:  # not found, or not numeric: tell the pages why
            self._tell_all("plotinfo", {"key": self.key, "stream": self.stream, "error": str(exc)})
            sw.close()
            return
        try:
            self._serve(sw)
        finally:
            sw.close()

    def _serve(self, sw: Any) -> None:
        import pylsl

        ch = sw.n_channels
        if sw.stream is None or sw.stream.channel_format() == pylsl.cf_string:
            self._tell_all(
                "plotinfo",
                {"key": self.key, "stream": self.stream, "error": "a string stream: not plottable"},
            )
            return
        info = {
            "key": self.key,
            "stream": self.stream,
            "channels": ch,
            "labels": list(sw.ch_names),
            "srate": sw.srate,
            "seconds": self.seconds,
            "cols": self.cols,
            "dt": self.dt,
        }
        with self._lock:
            self._info = info
            self._ring_min = np.full((self.cols, ch), np.nan, dtype=np.float32)
            self._ring_max = self._ring_min.copy()
        self._tell_all("plotinfo", info)
        dec = ColumnDecimator(self.dt)
        sw.pop_new()  # start from now
        next_t = time.monotonic()
        while not self._stop.is_set():
            next_t += FRAME_S
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_t = time.monotonic()  # fell behind: no burst to catch up
            data, ts = sw.pop_new()
            cols, mins, maxs = dec.add(data, ts)
            if len(cols) == 0:
                continue
            with self._lock:
                self._remember(cols, mins, maxs)
                pages = list(self.pages)
            self.frames += 1
            self._send(self.key, pages, self._frame(cols, mins, maxs))

    def _remember(self, cols: np.ndarray, mins: np.ndarray, maxs: np.ndarray) -> None:
        assert self._ring_min is not None
        assert self._ring_max is not None
        slot = cols % self.cols
        self._ring_cols[slot] = cols
        self._ring_min[slot] = mins
        self._ring_max[slot] = maxs

    def _backlog(self) -> dict[str, Any] | None:
        assert self._ring_min is not None
        assert self._ring_max is not None
        order = np.argsort(self._ring_cols)
        keep = order[self._ring_cols[order] >= 0]
        if len(keep) == 0:
            return None
        return self._frame(self._ring_cols[keep], self._ring_min[keep], self._ring_max[keep])

    def _frame(self, cols: np.ndarray, mins: np.ndarray, maxs: np.ndarray) -> dict[str, Any]:
        return {
            "key": self.key,
            "cols": cols.tolist(),
            "ch": int(mins.shape[1]),
            "min": pack(mins),
            "max": pack(maxs),
        }

    def _tell_all(self, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            pages = list(self.pages)
        for p in pages:
            self._notify(p, event, data)


class Plots:
    """Which page shows which feed; feeds open on first use and close when nobody looks."""

    def __init__(
        self,
        send: Callable[[str, list[str], dict[str, Any]], None],
        notify: Callable[[str, str, dict[str, Any]], None],
    ) -> None:
        self._send = send
        self._notify = notify
        self._feeds: dict[str, PlotFeed] = {}
        self._subs: dict[tuple[str, str], str] = {}  # (page, slot) -> feed key
        self._lock = threading.Lock()

    def subscribe(self, page: str, slot: str, stream: str | None, seconds: float, cols: int) -> str:
        """Show ``stream`` in the page's ``slot`` (``None``: show nothing there)."""
        seconds = float(min(max(seconds, 0.5), 120.0))
        cols = int(min(max(cols, MIN_COLS), MAX_COLS))
        key = feed_key(stream, seconds, cols) if stream else ""
        with self._lock:
            old = self._subs.pop((page, slot), None)
            if old == key and key:
                self._subs[(page, slot)] = key
                return key
            if old:
                self._release(page, old)
            if not stream:
                return ""
            feed = self._feeds.get(key)
            if feed is None:
                feed = self._feeds[key] = PlotFeed(stream, seconds, cols, self._send, self._notify)
            self._subs[(page, slot)] = key
        feed.add_page(page)
        return key

    def _release(self, page: str, key: str) -> None:
        feed = self._feeds.get(key)
        still = any(k == key for (p, _), k in self._subs.items() if p == page)
        if feed is not None and not still and feed.remove_page(page) == 0:
            feed.close()
            del self._feeds[key]

    def drop_page(self, page: str) -> None:
        with self._lock:
            for (p, slot), key in list(self._subs.items()):
                if p == page:
                    del self._subs[(p, slot)]
                    self._release(page, key)

    def close(self) -> None:
        with self._lock:
            for f in self._feeds.values():
                f.close()
            self._feeds.clear()
            self._subs.clear()

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"key": f.key, "pages": len(f.pages), "frames": f.frames}
                for f in self._feeds.values()
            ]
