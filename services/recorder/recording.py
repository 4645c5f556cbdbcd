"""One recording: an open XDF file, a reader per stream, and a housekeeping thread.

The housekeeping thread adds streams that appear while recording (from a warm LSL resolver, so
adding costs no resolve wait), reports streams that vanish, writes Boundary chunks so a damaged
file can be re-synchronised, optionally fsyncs, and finishes the recording by itself when a write
fails (disk full): readers stop, the file keeps every complete chunk, and the error is kept for
STATUS and STOP.

A vanished stream is reported lost in one of two ways: its connection closes (the source
process ended or dropped its outlet: at once, from the reader), or it goes silent and stops
answering LSL queries (a frozen process, a machine off the network: once the resolver forgets
it). A source that comes back as a new outlet is recorded as a new XDF stream with the same
name; ``counts`` keeps the key ``name`` for the first stream of a name and gives later ones
``name#<stream id>``, so a key never changes meaning during a recording.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pylsl

from services.recorder.clocks import by_host
from services.recorder.inlet_reader import StreamReader
from services.recorder.selection import Selection, Selector
from services.recorder.stream_sizing import stream_key
from shared_utils.logging import get_logger
from shared_utils.streams.xdf_writer import XdfWriteError, XdfWriter

log = get_logger("recorder.recording")
STALL_S = 2.0  # a regular stream silent this long is reported in STATUS as stalled


@dataclass
class RecordingOptions:
    """Cadences of a recording (seconds)."""

    #: longest a pulled sample waits before it is written: what a kill -9 can lose at most
    flush_interval_s: float = 0.2
    #: clock offset chunks per stream (plus one at the start and one at the end)
    offset_interval_s: float = 3.0
    boundary_interval_s: float = 5.0
    #: how often the resolver's list is checked for new streams
    discovery_interval_s: float = 0.25
    #: 0 = never fsync (data still survives a crashed recorder, not a crashed machine)
    fsync_interval_s: float = 0.0
    #: measure offsets of same-host streams instead of writing the exact 0
    probe_local_offsets: bool = False
    #: a stream the resolver no longer lists is lost once it also sent nothing for this long
    silent_lost_s: float = 1.0
    #: an outlet still listed this long after its connection broke is alive: record it again
    #: (longer than the resolver's forget_after, which drops dead outlets)
    rejoin_after_s: float = 4.0
    #: "auto": record a same-host shared-memory ring behind a stream from the ring (full rate);
    #: "lsl": always record what LSL carries
    transport: str = "auto"


class Recording:
    """Record the matching streams of ``source()`` into ``writer`` until :meth:`stop`."""

    def __init__(
        self,
        writer: XdfWriter,
        source: Callable[[], list[pylsl.StreamInfo]],
        names: list[str] | Selection | None,
        options: RecordingOptions,
        on_finished: Callable[[Recording], None] | None = None,
    ) -> None:
        """``names``: stream names, or a :class:`Selection` (names plus host / source_id)."""
        self.writer = writer
        self.path: Path = writer.path
        self.selection = (
            names
            if isinstance(names, Selection)
            else Selection(None if names is None else [Selector(n) for n in names])
        )
        self.names = self.selection.names
        self.options = options
        self._source = source
        self._on_finished = on_finished
        self._readers: dict[str, StreamReader] = {}
        self._retired: list[StreamReader] = []
        self._warned_uids: set[str] = set()
        self._stalled: list[str] = []
        self._lock = threading.Lock()
        self._ids = 0
        self._stop = threading.Event()
        self._finish_lock = threading.Lock()
        self.finished = threading.Event()
        self.error: str | None = None
        self.started_wall = time.time()
        self._t0 = time.monotonic()
        self._t_end: float | None = None
        self.result: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._housekeeping, name="rec-house", daemon=True)

    # -- control -------------------------------------------------------------------------------
    def start(self) -> None:
        """Add the streams visible now, then keep watching for more (returns at once)."""
        self._discover()
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> dict[str, Any]:
        """Drain every stream, write last offsets and the footers, close; returns the summary."""
        self._stop.set()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout)
        return self._finish(timeout)

    # -- state ---------------------------------------------------------------------------------
    @property
    def readers(self) -> list[StreamReader]:
        with self._lock:
            return self._retired + list(self._readers.values())

    def waiting_for(self) -> list[str]:
        return self.selection.waiting_for([r.info for r in self.readers if r.stream_id is not None])

    def _check_stalled(self) -> None:
        """Note (and log once) regular streams that sent nothing for 2 s: their host may be
        gone. They stay open and are taken up again if data comes back."""
        now = time.monotonic()
        late = [
            r.name
            for r in self.readers
            if r.srate > 0
            and r.stream_id is not None
            and not r.stats.lost
            and now - (r.stats.last_arrival or now) > STALL_S
        ]
        for name in set(late) - set(self._stalled):
            log.warning("stream stalled: no data for 2 s; is its host still up?", stream=name)
        self._stalled = late

    def status(self) -> dict[str, Any]:
        streams = sorted(
            (r.summary() for r in self.readers if r.stream_id is not None), key=lambda s: s["id"]
        )
        keys = stream_keys(streams)
        for s in streams:
            s["key"] = keys[s["id"]]
        end = self._t_end if self._t_end is not None else time.monotonic()
        hosts = by_host(streams)
        return {
            "hosts": hosts,
            "clock_warnings": [f"{h}: {e['warning']}" for h, e in hosts.items() if "warning" in e],
            "conflicts": self.selection.conflicts(),
            "stalled": self._stalled if self._t_end is None else [],
            "file": str(self.path),
            "bytes": self.writer.bytes_written,
            "seconds": round(end - self._t0, 3),
            "streams": streams,
            "counts": {s["key"]: s["samples"] for s in streams},
            "gaps": sum(s["gaps"] for s in streams),
            "lost": [s["key"] for s in streams if s["lost"]],
            "waiting_for": self.waiting_for(),
            "error": self.error,
        }

    # -- internals -----------------------------------------------------------------------------
    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _wanted(self, info: pylsl.StreamInfo) -> bool:
        return self.selection.admit(info)

    def _discover(self) -> None:
        try:
            infos = self._source()
        except Exception:
            log.exception("listing LSL streams failed")
            return
        rejoin = self.options.rejoin_after_s
        for info in infos:
            if not self._wanted(info):
                continue
            key = stream_key(info)
            with self._lock:
                old = self._readers.get(key)
                if self._stop.is_set() or (
                    old is not None and not old.replaceable_by(info, rejoin)
                ):
                    if old is not None and old.info.uid() != info.uid() and not old.stats.lost:
                        self._warn_shared_source(old.info, info)
                    continue
                if old is not None:  # the same source is back after it was lost: new stream id
                    old.request_stop()
                    self._retired.append(old)
                reader = StreamReader(
                    info,
                    self.writer,
                    self._next_id,
                    self._write_failed,
                    pull_timeout_s=self.options.flush_interval_s / 2,
                    offset_interval_s=self.options.offset_interval_s,
                    probe_local_offsets=self.options.probe_local_offsets,
                    transport=self.options.transport,
                )
                self._readers[key] = reader
            reader.start()
        self._check_lost({info.uid() for info in infos})

    def _check_lost(self, listed: set[str]) -> None:
        """Report streams that went silent and that the resolver no longer lists (a frozen
        source, a machine gone from the network: no closed connection tells the inlet)."""
        now = time.monotonic()
        quiet = self.options.silent_lost_s
        with self._lock:
            readers = list(self._readers.values())
        for r in readers:
            if not r.running:
                continue
            if r.info.uid() in listed:
                r.mark_back("answers LSL queries again")
            elif not r.stats.lost and now - r.last_data > quiet:
                r.mark_lost(
                    f"stream vanished: no data for {now - r.last_data:.1f} s and no answer to "
                    "LSL queries; data up to then kept"
                )

    def _warn_shared_source(self, recorded: pylsl.StreamInfo, other: pylsl.StreamInfo) -> None:
        """Two live outlets claim one source_id: LSL treats them as one source, so only the first
        is recorded. Say so once per outlet instead of silently dropping it."""
        if other.uid() in self._warned_uids:
            return
        self._warned_uids.add(other.uid())
        log.warning(
            "another live stream has the same name and source_id; only the first is recorded "
            "(give each source its own source_id)",
            name=other.name(),
            source_id=other.source_id(),
            recorded_uid=recorded.uid(),
            skipped_uid=other.uid(),
        )

    def _write_failed(self, err: XdfWriteError) -> None:
        """Called from any reader thread: remember the first error and let housekeeping finish."""
        with self._lock:
            if self.error is None:
                self.error = str(err)
                log.error(
                    "write failed; stopping the recording", file=str(self.path), error=str(err)
                )
        self._stop.set()

    def _housekeeping(self) -> None:
        o = self.options
        next_boundary = time.monotonic() + o.boundary_interval_s
        next_fsync = time.monotonic() + o.fsync_interval_s if o.fsync_interval_s > 0 else None
        try:
            while not self._stop.wait(o.discovery_interval_s):
                self._discover()
                self._check_stalled()
                now = time.monotonic()
                if now >= next_boundary:
                    self.writer.write_boundary()
                    next_boundary = now + o.boundary_interval_s
                if next_fsync is not None and now >= next_fsync:
                    self.writer.flush(fsync=True)
                    next_fsync = now + o.fsync_interval_s
        except XdfWriteError as e:
            self._write_failed(e)
        except OSError as e:
            self._write_failed(XdfWriteError(e.errno, str(e)))
        if self.error is not None:
            self._finish(3.0)

    def _finish(self, timeout: float) -> dict[str, Any]:
        with self._finish_lock:
            if self.result is not None:
                return self.result
            readers = self.readers
            for r in readers:
                r.request_stop()
            deadline = time.monotonic() + timeout
            for r in readers:
                if not r.join(max(0.0, deadline - time.monotonic())):
                    r.stats.note = (
                        r.stats.note + "; " if r.stats.note else ""
                    ) + "did not stop in time"
            self._t_end = time.monotonic()
            try:
                self.writer.close(footers=True)
            except OSError as e:
                self.error = self.error or f"closing {self.path} failed: {e}"
            self.result = self.status()
            self.finished.set()
            log.info(
                "recording finished",
                file=str(self.path),
                bytes=self.result["bytes"],
                counts=self.result["counts"],
                error=self.error,
            )
        if self._on_finished is not None:
            self._on_finished(self)
        return self.result


def stream_keys(streams: list[dict[str, Any]]) -> dict[int, str]:
    """``{stream id: key}``: the first stream of a name (lowest id) is keyed by its name, later
    streams of that name (a restarted source, a second outlet) by ``name#id``. Ids only grow, so
    the first stream's key never changes while the recording runs."""
    keys: dict[int, str] = {}
    seen: set[str] = set()
    for s in sorted(streams, key=lambda s: s["id"]):
        keys[s["id"]] = s["name"] if s["name"] not in seen else f"{s['name']}#{s['id']}"
        seen.add(s["name"])
    return keys
