"""The control room's files in a session folder: ``session.json``, the config as run, the log.

``session.json`` is written when the session is initialised and rewritten (atomically: temp
file, fsync, rename) at every step and every event after that, so whatever happens to the control
room, the folder says what the session was up to that instant. The central log's records are
appended to ``session_log.jsonl`` from start to cleanup, one line each, flushed as they come.
Schema: docs/sessions.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from shared_utils.logging import get_logger
from shared_utils.protocol.session import SPEC_VERSION, source_revision
from shared_utils.session_layout import parse_exp_ref, wall_clock, write_json_atomic

SCHEMA = "closedloop-mesh/session/1"
SESSION_FILE = "session.json"
LOG_FILE = "session_log.jsonl"
CONFIG_FILE = "config.toml"

log = get_logger("control_room.session")


def clock() -> dict[str, Any]:
    """The control room's clocks now: wall (ISO 8601 with offset) and LSL."""
    import pylsl

    return {"wall": wall_clock(), "lsl": pylsl.local_clock(), "source": "control_room"}


class SessionRecord:
    """The session's ``session.json`` (as a dict kept here), its log file and config copy."""

    def __init__(
        self,
        folder: Path,
        exp_ref: str,
        subject: str,
        project: str | None,
        procedures: list[str],
        config_path: Path | None,
        source: str,
    ) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        ref = parse_exp_ref(exp_ref)
        self.data: dict[str, Any] = {
            "schema": SCHEMA,
            "exp_ref": exp_ref,
            "subject": subject,
            "date": ref.date,
            "number": ref.number,
            "project": project,
            "procedures": procedures,
            "status": "initializing",
            "started_by": source,
            "main_sync": None,
            "start": None,
            "end": None,
            "interrupted": None,
            "problems": [],
            "control_room": {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "revision": source_revision(),
                "spec_version": SPEC_VERSION,
                "data_dir": str(folder.parents[2]),
            },
            "config": self._copy_config(config_path),
            "files": {"session": SESSION_FILE, "log": LOG_FILE},
            "modules": {},
            "events": [],
        }
        self._log_file: Any = open(folder / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self.write()

    def _copy_config(self, path: Path | None) -> dict[str, Any] | None:
        """The config file as run, copied into the folder, with its origin and hash."""
        if path is None or not Path(path).is_file():
            return None
        target = self.folder / CONFIG_FILE
        try:
            shutil.copyfile(path, target)
        except OSError as exc:
            log.warning("config not copied into the session", error=str(exc))
            return {"source": str(path), "error": str(exc)}
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        return {"file": CONFIG_FILE, "source": str(Path(path).resolve()), "sha256": digest}

    def write(self) -> None:
        with self._lock:
            try:
                write_json_atomic(self.folder / SESSION_FILE, self.data)
            except OSError as exc:  # a full disk must not end the session logic itself
                log.error("cannot write session.json", folder=str(self.folder), error=str(exc))

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.data.update(fields)
        self.write()

    def module(self, name: str, step: tuple[str, dict] | None = None, **fields: Any) -> None:
        """Merge ``fields`` into ``modules.<name>`` (``files`` are accumulated; ``step``:
        (message, what its reply added) goes under ``steps``)."""
        with self._lock:
            entry = self.data["modules"].setdefault(name, {"files": []})
            for f in fields.pop("files", None) or []:
                if f not in entry["files"]:
                    entry["files"].append(f)
            entry.update(fields)
            if step is not None:
                entry.setdefault("steps", {})[step[0]] = step[1]

    def event(self, what: str, **detail: Any) -> None:
        """A thing that happened during the session (a module lost, a step that failed)."""
        import pylsl

        entry = {"wall": wall_clock(), "lsl": pylsl.local_clock(), "what": what, **detail}
        with self._lock:
            self.data["events"].append(entry)
        self.write()

    def problem(self, text: str, module: str | None = None) -> None:
        """A failure; the first one of a participant is also its ``error`` (the cause)."""
        with self._lock:
            self.data["problems"].append(text)
            if module is not None:
                entry = self.data["modules"].setdefault(module, {"files": []})
                entry.setdefault("error", None)
                entry["error"] = entry["error"] or text

    def log_record(self, rec: dict[str, Any]) -> None:
        """One central-log record into ``session_log.jsonl`` (flushed at once)."""
        with self._lock:
            if self._log_file is None:
                return
            try:
                self._log_file.write(json.dumps(rec, default=str) + "\n")
                self._log_file.flush()
            except (OSError, ValueError):
                self._log_file = None

    def close(self) -> None:
        """Final write and close the log (a short wait lets the last records arrive)."""
        time.sleep(0.2)
        self.write()
        with self._lock:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
