"""Stream watcher service logic: watch LSL streams by name, report their health, serve windows.

One :class:`~shared_utils.stream_watcher.StreamWatcher` (background thread, clock sync) per watched
stream. A monitor thread notices streams that appear, stall or vanish, logs each transition once,
keeps the last events for STATUS, and re-attaches a watched stream when it comes back (same name,
possibly a new outlet). Windows go out as JSON so a module without an LSL library can read data.
Numbers are checked against the documented ``RANGES`` (docs/data-layer.md), and a watch whose
buffer would exceed ``MAX_BUFFER_BYTES`` is refused before anything is allocated. Each watched
stream is a task in the server's table when the service is given the server's ``tasks``:
``STOP|{"task": id}`` unwatches it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pylsl
from pylsl.util import LostError
from pylsl.util import TimeoutError as LslTimeout

from shared_utils.checks import Range, check_ranges, check_text, short, unknown_message
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger
from shared_utils.streams.lsl import (
    FORMAT_DTYPES,
    AmbiguousStreamError,
    StreamNotFoundError,
    describe_all,
    resolve,
    sources_of,
)
from shared_utils.streams.shm.inlet import TRANSPORTS
from shared_utils.streams.watcher import StreamWatcher

if TYPE_CHECKING:
    from shared_utils.protocol.tasks import TaskManager

log = get_logger("stream_watcher_service")

DEFAULT_MAX_VALUES = 500_000  # samples x channels per GET_WINDOW reply (~5-10 MB of JSON)
MAX_BUFFER_BYTES = 2**30  # one watched stream's buffer (1 GiB)
#: The documented range of every numeric argument (docs/data-layer.md).
RANGES = {
    "wait_s": Range(0, 10, "s", open_lo=True),
    "buffer_s": Range(0, 3600, "s", open_lo=True),
    "timeout_s": Range(0.1, 30, "s"),
    "seconds": Range(0, 3600, "s", open_lo=True),
    "max_values": Range(1, 50_000_000),
}


class WatchService:
    """Watched streams plus the monitor that reports and repairs them."""

    def __init__(
        self,
        buffer_s: float = 30.0,
        max_values: int = DEFAULT_MAX_VALUES,
        monitor_interval_s: float = 0.25,
        stall_after_s: float = 1.0,
        forget_after_s: float = 2.0,
        watch: Iterable[str] = (),
        tasks: TaskManager | None = None,
    ) -> None:
        """``watch``: stream names to watch as soon as they appear (``--watch`` at start-up);
        ``tasks``: the server's task table (each watched stream is listed there)."""
        self._tasks = tasks
        self.buffer_s = buffer_s
        self.max_values = max_values
        self.monitor_interval_s = monitor_interval_s
        self.stall_after_s = stall_after_s
        self._lock = threading.RLock()
        self.watchers: dict[str, StreamWatcher] = {}
        self.health: dict[str, str] = {}  # name -> "ok" | "stalled" | "vanished"
        self.events: deque[dict[str, Any]] = deque(maxlen=200)
        self.visible: set[str] = set()
        self._resolver = pylsl.ContinuousResolver(forget_after=forget_after_s)
        self._resolver_since = time.monotonic()
        self._stop = threading.Event()
        self._next_retry: dict[str, float] = {}
        self.pending: set[str] = set(watch)  # names to watch as soon as they appear
        self._monitor = threading.Thread(target=self._monitor_loop, name="sw-monitor", daemon=True)
        self._monitor.start()

    # ---------------------------------------------------------------------------- events
    def _event(self, event: str, stream: str, **info: Any) -> None:
        self.events.append({"t": time.time(), "event": event, "stream": stream, **info})
        log.info(f"stream {event}", stream=stream, **info)

    def _visible_now(self, wait_s: float) -> list[dict[str, Any]]:
        """A fresh resolve merged with the background resolver (each can miss a local stream)."""
        fresh = pylsl.resolve_streams(wait_time=wait_s)
        return describe_all(fresh + self._resolver.results())

    # -------------------------------------------------------------------------- commands
    def list_visible(self, wait_s: float = 1.0) -> dict[str, Any]:
        """Visible LSL streams with metadata (name, type, channels, srate, format, source, host)."""
        check_ranges(RANGES, wait_s=wait_s)
        streams = self._visible_now(wait_s)
        with self._lock:
            for s in streams:
                s["watched"] = s["name"] in self.watchers
        return {"streams": streams, "count": len(streams)}

    def watch(
        self,
        stream: str,
        buffer_s: float | None = None,
        timeout_s: float = 2.0,
        clock_sync: bool = True,
        dejitter: bool = False,
        transport: str = "auto",
        host: str | None = None,
        source_id: str | None = None,
    ) -> dict[str, Any]:
        """Start watching a stream by name (already watched: returns its stats); "host" or
        "source_id" choose the publisher when two rigs publish one name (else refused).

        "transport": "auto" reads a same-host shared-memory ring behind the stream when there is
        one, "lsl" never does, "shm" reads the ring of that name without LSL.
        """
        check_text("stream", stream)
        for what, value in (("host", host), ("source_id", source_id)):
            if value is not None:
                check_text(what, value)
        if host is None and source_id is None:
            seen = sources_of([i for i in self._resolver.results() if i.name() == stream])
            if len(seen) > 1:
                raise CommandError(f"stream: {AmbiguousStreamError(repr(stream), seen)}")
        buf = self.buffer_s if buffer_s is None else buffer_s
        check_ranges(RANGES, buffer_s=buf, timeout_s=timeout_s)
        if transport not in TRANSPORTS:
            raise CommandError(unknown_message("transport", transport, TRANSPORTS))
        with self._lock:
            if stream in self.watchers:
                return {"already_watching": True, **self.watchers[stream].stats()}
        w = StreamWatcher(
            stream,
            buf,
            timeout_s=timeout_s,
            host=host,
            source_id=source_id,
            background=True,
            clock_sync=clock_sync,
            dejitter=dejitter,
            recover=transport == "shm",  # a ring by name re-attaches itself; LSL: the monitor does
            mirror=False,  # replies are JSON copies anyway: no need for always-contiguous views
            logger=log,
            transport=transport,
        )
        try:
            if transport == "shm":  # the ring of that name, without LSL
                w.connect_to_stream()
            else:
                info = resolve(stream, None, timeout_s, host=host, source_id=source_id, unique=True)
                _check_buffer(info, buf, w.irregular_size)
                w.attach(info)
        except (StreamNotFoundError, AmbiguousStreamError) as exc:
            w.close()
            raise CommandError(f"stream: {exc}") from None
        except (LslTimeout, LostError) as exc:
            w.close()
            raise CommandError(
                f"stream: {stream!r} did not open within timeout_s={timeout_s:g} s ({exc}); "
                "try again or give more time"
            ) from None
        with self._lock:
            if stream in self.watchers:  # lost a race with another connection
                w.close()
                return {"already_watching": True, **self.watchers[stream].stats()}
            self.watchers[stream] = w
            self.health[stream] = "ok"
        self._event("watched", stream, srate=w.srate, channels=w.n_channels)
        reply = {"already_watching": False, "channel_names": w.ch_names, **w.stats()}
        if self._tasks is not None:
            task = self._tasks.start_job(
                f"WATCH {stream}",
                lambda: self._unwatch_if(stream, w),
                lambda: self.watchers.get(stream) is not w,
            )
            reply["task"] = task.id
        return reply

    def _unwatch_if(self, stream: str, w: StreamWatcher) -> None:
        """Its task was stopped: unwatch ``stream`` if ``w`` still watches it."""
        with self._lock:
            if self.watchers.get(stream) is not w:
                return
        self.unwatch(stream)

    def unwatch(self, stream: str | None = None) -> dict[str, Any]:
        """Stop watching one stream, or all."""
        with self._lock:
            if stream is not None and stream not in self.watchers:
                raise CommandError(self._not_watched(stream))
            names = [stream] if stream is not None else list(self.watchers)
            gone = [(n, self.watchers.pop(n)) for n in names]
            for n in names:
                self.health.pop(n, None)
        for n, w in gone:
            w.close()
            self._event("unwatched", n)
        return {"unwatched": [n for n, _ in gone]}

    def _not_watched(self, stream: str) -> str:
        watched = ", ".join(sorted(self.watchers)) or "none"
        visible = ", ".join(sorted(self.visible)) or "none"
        return (
            f"stream: {short(stream)} is not watched (WATCH it first); watched: {watched}; "
            f"visible: {visible}"
        )

    def _get(self, stream: str) -> StreamWatcher:
        with self._lock:
            w = self.watchers.get(stream)
            if w is None:
                raise CommandError(self._not_watched(stream))
            return w

    def stats(self, stream: str | None = None) -> dict[str, Any]:
        """Effective/nominal rate, samples, gaps, lag, last timestamp, clock offset (one or all)."""
        if stream is None:
            with self._lock:
                items = list(self.watchers.items())
            return {"streams": {n: {**w.stats(), "health": self.health.get(n)} for n, w in items}}
        w = self._get(stream)
        return {**w.stats(), "health": self.health.get(stream), "channel_names": w.ch_names}

    def get_window(
        self, stream: str, seconds: float = 1.0, max_values: int | None = None
    ) -> dict[str, Any]:
        """The newest `seconds` of a watched stream as JSON lists (data rows oldest first)."""
        check_ranges(RANGES, seconds=seconds, max_values=max_values)
        cap = self.max_values if max_values is None else max_values
        w = self._get(stream)
        n_ch = w.n_channels
        if w.srate > 0:
            want = round(seconds * w.srate) * n_ch
            if want > cap:
                raise CommandError(
                    f"seconds: {seconds:g} s of {n_ch} channels at {w.srate:g} Hz is {want} values, "
                    f"over the reply cap of {cap}; ask for at most "
                    f"{cap / (n_ch * w.srate):.3f} s or pass a larger max_values"
                )
        data, ts = w.window(seconds=seconds, copy=True)
        if data.size > cap:  # irregular streams: cap by count, keep the newest
            keep = max(1, cap // n_ch)
            data, ts = data[-keep:], ts[-keep:]
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            obj = data.astype(object)
            obj[~np.isfinite(data)] = None  # JSON has no NaN/inf
            rows: list[Any] = obj.tolist()
        else:
            rows = data.tolist()
        return {
            "stream": stream,
            "channel_names": w.ch_names,
            "srate": w.srate,
            "n": len(ts),
            "seconds_requested": seconds,
            "buffer_s": w.buffer_size_s,
            "timestamps": ts.tolist(),
            "data": rows,
        }

    def status(self) -> dict[str, Any]:
        """Watched streams with their health, visible streams, recent events."""
        with self._lock:
            watching = {
                n: {"health": self.health.get(n), "samples": w.total}
                for n, w in self.watchers.items()
            }
            return {
                "watching": watching,
                "visible": sorted(self.visible),
                "events": list(self.events)[-20:],
            }

    def close(self) -> None:
        """Stop the monitor and every watcher (idempotent)."""
        self._stop.set()
        if self._monitor.is_alive() and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=5.0)
        self.unwatch()

    # --------------------------------------------------------------------------- monitor
    def _monitor_loop(self) -> None:
        while not self._stop.wait(self.monitor_interval_s):
            try:
                self._check_visible()
                self._check_pending()
                self._check_watched()
            except Exception as exc:  # the monitor must outlive any single failure
                log.error("monitor error", error=repr(exc))

    def _check_visible(self) -> None:
        now_visible = {i.name() for i in self._resolver.results()}
        for n in sorted(now_visible - self.visible):
            self._event("appeared", n)
        for n in sorted(self.visible - now_visible):
            self._event("disappeared", n)
        self.visible = now_visible

    def _check_pending(self) -> None:
        for name in sorted(self.pending & self.visible):
            try:
                self.watch(name, timeout_s=0.5)
            except CommandError:
                continue
            self.pending.discard(name)

    def _check_watched(self) -> None:
        with self._lock:
            items = list(self.watchers.items())
        for name, w in items:
            state = self.health.get(name, "ok")
            st = w.stats()
            since = st["since_data_s"]
            if w.lost or w.inlet is None:
                if state != "vanished":
                    self.health[name] = "vanished"
                    why = {"detail": st["writer_problem"]} if st.get("writer_problem") else {}
                    self._event("vanished", name, samples=w.total, **why)
                self._try_reattach(name, w)
            elif since is not None and since > self._stall_limit(w):
                if state == "ok":
                    self.health[name] = "stalled"
                    self._event("stalled", name, since_data_s=round(since, 3))
            elif state == "stalled" and since is not None and since <= self._stall_limit(w):
                self.health[name] = "ok"
                self._event("resumed", name)
            elif state == "vanished":  # a ring watched by name came back (it re-attaches itself)
                self.health[name] = "ok"
                self._event("reattached", name, srate=w.srate, channels=w.n_channels)

    def _stall_limit(self, w: StreamWatcher) -> float:
        return max(self.stall_after_s, 5.0 / w.srate) if w.srate > 0 else math.inf

    def _try_reattach(self, name: str, w: StreamWatcher) -> None:
        """Attach to a live outlet of the same name, found by the background resolver (no wait)."""
        now = time.monotonic()
        if now < self._next_retry.get(name, 0.0) or name not in self.visible:
            return
        self._next_retry[name] = now + 0.5
        old = w.stream
        # only the same publisher coming back (never a same-named stream of another rig)
        found = [
            i
            for i in self._resolver.results()
            if i.name() == name
            and (old is None or (sources_of([i]) == sources_of([old]) and i.uid() != old.uid()))
        ]
        if not found:
            return
        info = max(found, key=lambda i: i.created_at())
        try:
            w.attach(info)
        except Exception as exc:  # the candidate died meanwhile; try again on a later tick
            log.debug("re-attach failed", stream=name, error=repr(exc))
            return
        with self._lock:
            if self.watchers.get(name) is not w:  # unwatched meanwhile
                w.close()
                return
        self.health[name] = "ok"
        self._event("reattached", name, srate=w.srate, channels=w.n_channels)


def _check_buffer(info: pylsl.StreamInfo, buffer_s: float, irregular_size: int) -> None:
    """Refuse a buffer over ``MAX_BUFFER_BYTES`` before it is allocated, saying what fits."""
    srate, n_ch = info.nominal_srate(), max(1, info.channel_count())
    width = n_ch * np.dtype(FORMAT_DTYPES.get(info.channel_format(), np.float64)).itemsize
    rows = buffer_s * srate if srate > 0 else irregular_size
    if rows * width > MAX_BUFFER_BYTES and srate <= 0:
        raise CommandError(f"stream: {n_ch} channels of {irregular_size} samples is too much")
    if rows * width > MAX_BUFFER_BYTES:
        raise CommandError(
            f"buffer_s: {buffer_s:g} s of {n_ch} channels at {srate:g} Hz needs "
            f"{rows * width / 2**30:.1f} GiB, over the {MAX_BUFFER_BYTES / 2**30:g} GiB cap per "
            f"stream; ask for at most {MAX_BUFFER_BYTES / (srate * width):.1f} s"
        )
