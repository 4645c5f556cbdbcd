"""The recorder's commands (START, STOP, STATUS, LIST, EXPORT, CLOSE), importable without sockets.

A warm ``ContinuousResolver`` is created with the recorder, so START finds the streams already
known and replies at once; the resolver keeps learning about streams that appear later, which the
running recording then adds. Only one recording at a time: a second START names the current file.
The optional LabRecorder remote-control listener (:mod:`services.recorder.rcs`) lives as long as
the recorder: it starts with it and CLOSE stops it.

A recording and an export are background work: each is a task in the server's table (STATUS
lists it, ``STOP|{"task": id}`` ends exactly that one) when the recorder is given the server's
``tasks``. File names resolve inside the mesh data folder (:mod:`shared_utils.paths`).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pylsl

from services.recorder.export_job import ExportJobs
from services.recorder.paths import check_fields, check_target, expand_template
from services.recorder.rcs import RcsServer
from services.recorder.recording import Recording, RecordingOptions
from services.recorder.selection import Selection, parse_streams
from shared_utils.checks import Range, check_ranges, check_text
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger
from shared_utils.paths import data_dir as default_data_dir
from shared_utils.paths import resolve_in
from shared_utils.streams.lsl import FORMAT_NAMES
from shared_utils.streams.xdf_writer import XdfWriter

if TYPE_CHECKING:
    from shared_utils.protocol.tasks import TaskManager

log = get_logger("recorder")

#: The documented ranges of the recorder's numeric arguments (docs/recorder.md).
RANGES = {"line_freq": Range(1.0, 1000.0, "Hz")}
MAX_STREAMS = 1000  # names in START's "streams"


class Recorder:
    """Owns the LSL resolver and at most one :class:`Recording`."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        options: RecordingOptions | None = None,
        forget_after_s: float = 3.0,
        rcs_port: int | None = None,
        rcs_host: str = "127.0.0.1",
        rcs_allow: tuple[str, ...] = (),
        tasks: TaskManager | None = None,
        allow_absolute: bool = False,
    ) -> None:
        """``rcs_port``: serve LabRecorder remote control there (0: any free port; None: off).
        ``tasks``: the server's task table (recordings and exports are listed there);
        ``allow_absolute``: accept absolute file names outside ``data_dir``."""
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        # An outlet still listed after its connection broke is alive once the resolver would
        # have forgotten a dead one: only then is it recorded again (recording.py).
        opts = options or RecordingOptions()
        self.options = replace(opts, rejoin_after_s=max(opts.rejoin_after_s, forget_after_s + 1))
        self.allow_absolute = allow_absolute
        self._tasks = tasks
        self._resolver = pylsl.ContinuousResolver(forget_after=forget_after_s)
        self._lock = threading.Lock()
        self._rec: Recording | None = None
        self._unreported: dict[str, Any] | None = None
        self._last_result: dict[str, Any] | None = None
        self.last_file: str | None = None
        # The session being recorded ({"exp_ref", "subject"}; services/recorder/session.py):
        # written into the file header and into every stream header's <desc><session>.
        self.session: dict[str, str] | None = None
        self._exports = ExportJobs(self.data_dir, tasks, allow_absolute)
        self._rcs = (
            RcsServer(self, rcs_port, rcs_host, rcs_allow).start() if rcs_port is not None else None
        )

    @property
    def recording_file(self) -> str | None:
        """The file being recorded, or None when idle."""
        rec = self._rec
        return str(rec.path) if rec is not None and not rec.finished.is_set() else None

    def resolve(self, file: str, fields: dict[str, Any], overwrite: bool) -> Path:
        """The file a START (or a LabRecorder ``start``) would write: template filled, inside
        the data folder, ending in .xdf, not existing unless ``overwrite``; folders created."""
        if not isinstance(file, str) or not file.strip():
            raise CommandError('"file" must be a file name or template ending in .xdf')
        check_fields(file, fields)
        path = resolve_in(
            self.data_dir,
            expand_template(file, fields),
            what="recording file",
            suffixes=(".xdf",),
            allow_absolute=self.allow_absolute,
        )
        check_target(path, overwrite)
        return path

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
        if isinstance(streams, list) and len(streams) > MAX_STREAMS:
            raise CommandError(f'"streams": {len(streams)} entries, at most {MAX_STREAMS}')
        for entry in streams if isinstance(streams, list) else ():
            if isinstance(entry, str):
                check_text("streams", entry)
        selection = Selection(parse_streams(streams))
        with self._lock:
            if self._rec is not None and not self._rec.finished.is_set():
                raise CommandError(f"already recording to {self._rec.path}; send STOP first")
            path = self.resolve(file, fields, overwrite)
            selection.check_unambiguous(self._resolver.results())
            writer = _open_writer(path, overwrite, self.session)
            rec = Recording(writer, self._resolver.results, selection, self.options, self._finished)
            self._rec = rec
            self._unreported = None
            self.last_file = str(path)
            rec.start()
        log.info("recording started", file=str(path), streams=streams or "all")
        reply = {
            "file": str(path),
            "streams": [r.name for r in rec.readers],
            "waiting_for": rec.waiting_for(),
        }
        if self._tasks is not None:
            task = self._tasks.start_job(
                f"RECORD {path.name}", lambda: self._stop_recording(rec), rec.finished.is_set
            )
            reply["task"] = task.id
        return reply

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
        return {"stopped": True, **self._stop_recording(rec)}

    def _stop_recording(self, rec: Recording) -> dict[str, Any]:
        """End ``rec`` if it is still the current recording (STOP, or its task stopped)."""
        with self._lock:
            if self._rec is not rec:
                return rec.result or {}
            self._rec = None
        res = rec.stop()
        with self._lock:
            self._unreported = None
            self._last_result = res
        return res

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
                elif self._last_result is not None:
                    base["last_recording"] = self._last_result
                return base
        st = rec.status()
        # A write error ends the recording: say so at once, while the readers still drain.
        return {"recording": st["error"] is None, **st}

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
        check_ranges(RANGES, line_freq=line_freq)
        for name, value in (("subject", subject), ("session", session), ("task", task)):
            if value is not None:
                check_text(name, value, 64)
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
                self._last_result = rec.result


def _open_writer(path: Path, overwrite: bool, session: dict[str, str] | None = None) -> XdfWriter:
    """Create the file and write its header; on failure (a full disk) leave no empty file
    behind, so a retry with the same name works once there is room."""
    try:
        return XdfWriter(
            path,
            overwrite=overwrite,
            header_fields={"recorder": "mesh", **(session or {})},
            stream_desc={"session": session} if session else None,
        )
    except FileExistsError:
        raise CommandError(
            f'{path} already exists; choose another name or pass "overwrite": true'
        ) from None
    except OSError as e:
        try:
            if path.stat().st_size == 0:  # ours: created (or truncated) just now, header failed
                path.unlink()
        except OSError:
            pass
        raise CommandError(f"cannot write {path}: {e.strerror or e}") from None


def describe(info: pylsl.StreamInfo) -> dict[str, Any]:
    """The LIST view of a stream."""
    return {
        "name": info.name(),
        "type": info.type(),
        "channel_count": info.channel_count(),
        "nominal_srate": info.nominal_srate(),
        "channel_format": FORMAT_NAMES.get(info.channel_format(), str(info.channel_format())),
        "source_id": info.source_id(),
        "hostname": info.hostname(),
        "uid": info.uid(),
    }
