"""EXPORT: turn a finished recording into BIDS and/or NWB, in a child process.

Why a child process: an export reads the whole file and runs MNE/pynwb for tens of seconds; in
the recorder's own process it would compete for the GIL and memory with a recording that may be
running at the same time. The child (``python -m shared_utils.export``) reports JSON lines that
STATUS shows; CLOSE stops it (SIGTERM: its staging folders are removed, nothing half-written).

Everything is checked before the child starts, so a bad request is refused at once: the source
and the outputs must stay inside the recorder's data folder (absolute paths elsewhere only with
``--allow-absolute-paths``), the recording must be finished, the outputs must not exist (unless
``overwrite``), and the export libraries must be installed. The child is a task in the server's
table: STATUS lists it and ``STOP|{"task": id}`` cancels it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared_utils.checks import short
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger
from shared_utils.paths import resolve_in

if TYPE_CHECKING:
    from shared_utils.protocol.tasks import TaskManager

log = get_logger("recorder.export")


class ExportJobs:
    """At most one export at a time; the last one stays visible in STATUS."""

    def __init__(
        self, root: Path, tasks: TaskManager | None = None, allow_absolute: bool = False
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.allow_absolute = allow_absolute
        self._tasks = tasks
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._state: dict[str, Any] | None = None
        self._ids = 0

    def start(
        self,
        source: str,
        recording: str | None,
        formats: list[str],
        out: str | None,
        overwrite: bool,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        from shared_utils.export import (
            FORMATS,
            ExportError,
            find_session,
            missing_dependencies,
            plan_outputs,
        )

        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise CommandError(
                f'"to" must be "bids", "nwb" or a list of them, got {short(bad or formats)}'
            )
        src = self._inside(source, "file")
        rec_path = Path(os.path.realpath(recording)) if recording else None
        if rec_path is not None and (src == rec_path or src in rec_path.parents):
            raise CommandError(f"{src} is still being recorded; send STOP first, then EXPORT")
        out_path = self._inside(out, "out") if out is not None else None
        missing = missing_dependencies(formats)
        if missing:
            raise CommandError(
                f"EXPORT needs {', '.join(missing)} in the recorder's Python: "
                "pip install 'closedloop-mesh[export]'"
            )
        try:
            outs = plan_outputs(find_session(src), formats, out_path, overwrite)
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        for path in outs.values():
            self._inside(str(path), "output")
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                raise CommandError(
                    f"an export is running ({self._state and self._state['file']}); wait for it "
                    "(STATUS shows its progress)"
                )
            self._ids += 1
            request = {
                "source": str(src),
                "formats": formats,
                "out": str(out_path) if out_path else None,
                "overwrite": overwrite,
                "options": options,
            }
            self._proc, task = self._spawn(request, f"EXPORT {src.name}")
            self._state = {
                "id": self._ids,
                "state": "running",
                "file": str(src),
                "outputs": {f: str(p) for f, p in outs.items()},
                "stage": "starting",
                "started": time.time(),
                "pid": self._proc.pid,
            }
            reply = {k: self._state[k] for k in ("id", "file", "outputs", "state")}
            if task is not None:
                reply["task"] = self._state["task"] = task.id
            threading.Thread(
                target=self._follow, args=(self._proc, self._state), name="export", daemon=True
            ).start()
        log.info("export started", file=str(src), outputs=reply["outputs"])
        return {"export": reply["id"], **reply}

    def _spawn(self, request: dict[str, Any], name: str) -> tuple[subprocess.Popen, Any]:
        """Start the export child: a task in its own process group when there is a task table
        (``STOP|{"task": id}`` ends it), else a plain child."""
        argv = [sys.executable, "-m", "shared_utils.export", json.dumps(request)]
        popen: dict[str, Any] = {
            "stdout": subprocess.PIPE,
            "stderr": subprocess.STDOUT,  # one pipe: a chatty library cannot fill a second one
            "text": True,
            "cwd": str(Path(__file__).resolve().parents[2]),
        }
        if self._tasks is None:
            return subprocess.Popen(argv, **popen), None  # noqa: S603 - argv list, no shell
        task = self._tasks.start_process(argv, name=name, **popen)
        assert task.process is not None
        return task.process, task

    def _follow(self, proc: subprocess.Popen, state: dict[str, Any]) -> None:
        """Read the child's JSON lines into ``state`` until it exits."""
        assert proc.stdout is not None
        other: deque[str] = deque(maxlen=5)  # library warnings, a traceback's last lines
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                msg = None
            if not isinstance(msg, dict):
                if line.strip():
                    other.append(line.strip())
                continue
            with self._lock:
                if "stage" in msg:
                    state["stage"] = msg["stage"]
                if "results" in msg:
                    state["results"] = msg["results"]
                if "error" in msg:
                    state["error"] = msg["error"]
        rc = proc.wait()
        err = other[-1] if other else f"exit {rc}"
        with self._lock:
            state["seconds"] = round(time.time() - state["started"], 2)
            if rc == 0 and "results" in state:
                state["state"] = "done"
            else:  # SIGTERM (STOP|{"task": id}, STOP, CLOSE) cancelled it: exit 143 or a signal
                cancelled = state.get("cancelled") or rc < 0 or rc == 128 + signal.SIGTERM
                state["state"] = "cancelled" if cancelled else "failed"
                state.setdefault("error", err)
        log.info("export ended", state=state["state"], error=state.get("error"))

    def _inside(self, name: str, what: str) -> Path:
        """``name`` resolved in the data folder (absolute elsewhere only when allowed)."""
        return resolve_in(self.root, name, what=what, allow_absolute=self.allow_absolute)

    def status(self) -> dict[str, Any] | None:
        with self._lock:
            return None if self._state is None else dict(self._state)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop a running export (its staging folders are cleaned up by the child)."""
        with self._lock:
            proc, state = self._proc, self._state
            if proc is None or proc.poll() is not None:
                return
            if state is not None:
                state["cancelled"] = True
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
