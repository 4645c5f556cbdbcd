"""The recorder's commands (START, STOP, STATUS, LIST, EXPORT, CLOSE), importable without sockets.

A warm ``ContinuousResolver`` is created with the recorder, so START finds the streams already
known and replies at once; the resolver keeps learning about streams that appear later, which the
running recording then adds. Only one recording at a time: a second START names the current file.
The optional LabRecorder remote-control listener (:mod:`services.recorder.rcs`) lives as long as
the recorder: it starts with it and CLOSE stops it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pylsl

from services.recorder.export_job import ExportJobs
from services.recorder.inlet_reader import describe
from services.recorder.paths import check_target, expand_template, resolve_path
from services.recorder.rcs import RcsServer
from services.recorder.recording import Recording, RecordingOptions
from services.recorder.selection import Selection, parse_streams
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger
from shared_utils.streams.xdf_writer import XdfWriter

log = get_logger("recorder")


class Recorder:
    """Owns the LSL resolver and at most one :class:`Recording`."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        options: RecordingOptions | None = None,
        forget_after_s: float = 5.0,
        rcs_port: int | None = None,
        rcs_host: str = "127.0.0.1",
    ) -> None:
        """``rcs_port``: serve LabRecorder remote control there (0: any free port; None: off)."""
        self.data_dir = Path(data_dir) if data_dir else None
        self.options = options or RecordingOptions()
        self._resolver = pylsl.ContinuousResolver(forget_after=forget_after_s)
        self._lock = threading.Lock()
        self._rec: Recording | None = None
        self._unreported: dict[str, Any] | None = None
        self.last_file: str | None = None
        self._exports = ExportJobs(self.data_dir or Path.cwd())
        self._rcs = RcsServer(self, rcs_port, rcs_host).start() if rcs_port is not None else None

    @property
    def recording_file(self) -> str | None:
        """The file being recorded, or None when idle."""
        rec = self._rec
        return str(rec.path) if rec is not None and not rec.finished.is_set() else None

    # -- commands ------------------------------------------------------------------------------
    def start(
        self,
        file: str,
        streams: list | str | None = None,
        overwrite: bool = False,
        **fields: Any,
    ) -> dict[str, Any]:
        """Record LSL streams (all, or those named in "streams") into an XDF file.

        "streams": names, or {"name", "host" | "source_id"} tables where two rigs publish one
        name (a bare name two sources publish is refused; {"name", "all": true} takes both).
        "file" may use {subject} {session} {run} {task} {date} {time} and any other field
        passed alongside it. Replies at once with the resolved path; streams that appear later
        are added. Refuses an existing file unless "overwrite": true.
        """
        selection = Selection(parse_streams(streams))
        if not file or not isinstance(file, str):
            raise CommandError('"file" must be a file name or template ending in .xdf')
        with self._lock:
            if self._rec is not None and not self._rec.finished.is_set():
                raise CommandError(f"already recording to {self._rec.path}; send STOP first")
            path = resolve_path(expand_template(file, fields), self.data_dir)
            check_target(path, overwrite)
            selection.check_unambiguous(self._resolver.results())
            try:
                writer = XdfWriter(path, overwrite=overwrite, header_fields={"recorder": "mesh"})
            except FileExistsError:
                raise CommandError(
                    f'{path} already exists; choose another name or pass "overwrite": true'
                ) from None
            except OSError as e:
                raise CommandError(f"cannot write {path}: {e.strerror or e}") from None
            rec = Recording(writer, self._resolver.results, selection, self.options, self._finished)
            self._rec = rec
            self._unreported = None
            self.last_file = str(path)
            rec.start()
        log.info("recording started", file=str(path), streams=streams or "all")
        return {
            "file": str(path),
            "streams": [r.name for r in rec.readers],
            "waiting_for": rec.waiting_for(),
        }

    def stop(self) -> dict[str, Any]:
        """Stop recording: drain, write footers, close; reply with per-stream sample counts."""
        with self._lock:
            rec = self._rec
            if rec is None:
                if self._unreported is not None:  # a recording that ended on a write error
                    res, self._unreported = self._unreported, None
                    return {"stopped": True, **res}
                return {
                    "stopped": False,
                    "recording": False,
                    "note": "not recording",
                    "last_file": self.last_file,
                }
            self._rec = None
        res = rec.stop()
        self._unreported = None
        return {"stopped": True, **res}

    def status(self) -> dict[str, Any]:
        """Recording state: file, bytes, seconds, per-stream counts, gaps, errors (and the
        last EXPORT's progress or result under "export")."""
        st = self._recording_status()
        exp = self._exports.status()
        if exp is not None:
            st["export"] = exp
        if self._rcs is not None:
            st["rcs_port"] = self._rcs.port
            st["rcs_last_error"] = self._rcs.state.last_error
        return st

    def _recording_status(self) -> dict[str, Any]:
        with self._lock:
            rec = self._rec
            if rec is None or rec.finished.is_set():
                base: dict[str, Any] = {"recording": False, "last_file": self.last_file}
                if self._unreported is not None:
                    base["last_recording"] = self._unreported
                    base["error"] = self._unreported.get("error")
                return base
        return {"recording": True, **rec.status()}

    def export(
        self,
        file: str | None = None,
        to: str | list | None = None,
        out: str | None = None,
        overwrite: bool = False,
        subject: str | None = None,
        session: str | None = None,
        task: str | None = None,
        line_freq: float | None = None,
    ) -> dict[str, Any]:
        """Export a finished recording (default: the last one) to BIDS and/or NWB, in the
        background; replies with the folders it will write, STATUS shows progress and result.

        "to": "bids", "nwb" or both (default). Paths are inside the data folder; an existing
        output is refused unless "overwrite": true (docs/export.md).
        """
        source = file or self.last_file
        if not source:
            raise CommandError('no recording yet: pass "file" (an .xdf or a session folder)')
        formats = ["bids", "nwb"] if to in (None, "both") else [to] if isinstance(to, str) else to
        options = {"subject": subject, "session": session, "task": task, "line_freq": line_freq}
        return self._exports.start(
            source,
            self.recording_file,
            formats,
            out,
            overwrite,
            {k: v for k, v in options.items() if v is not None},
        )

    def list_streams(self) -> list[dict[str, Any]]:
        """LSL streams visible now (name, type, channels, rate, format, source, host, uid)."""
        rec = self._rec
        recorded = {r.info.uid() for r in rec.readers} if rec is not None else set()
        out = []
        for info in self._resolver.results():
            d = describe(info)
            d["recording"] = d["uid"] in recorded
            out.append(d)
        return out

    def close(self) -> dict[str, Any]:
        """Stop any recording (footers written), any export and the remote-control listener."""
        if self._rcs is not None:
            self._rcs.close()
        res = self.stop()
        self._exports.close()
        return res

    # -- internals -----------------------------------------------------------------------------
    def _finished(self, rec: Recording) -> None:
        """A recording ended: by STOP, or by itself after a write error (kept for STATUS/STOP)."""
        with self._lock:
            if self._rec is rec:
                self._rec = None
                if rec.result is not None and rec.error:
                    self._unreported = rec.result
