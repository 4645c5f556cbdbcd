"""Readable live output for ``control-room up`` and ``run``: one line per thing a person cares about.

Module state changes, macro steps, callbacks, commands from outside and warnings from the log. Full
detail stays in the log file and on the PUB socket; this view is for watching a session.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, TextIO

_SKIP_STATES = {"pending"}


def short(value: Any, limit: int = 110) -> str:
    text = (
        json.dumps(value, default=str, separators=(",", ":"))
        if not isinstance(value, str)
        else value
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Console:
    """Writes to ``stream`` (None: silent); thread-safe."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            try:
                self.stream.write(f"{stamp} {text}\n")
                self.stream.flush()
            except (OSError, ValueError):
                self.stream = None

    def note(self, text: str) -> None:
        self._write(text)

    def event(self, topic: str, d: dict[str, Any]) -> None:
        if topic == "status":
            state = d.get("state")
            if state in _SKIP_STATES or (state == "starting" and "pid" not in d):
                return
            extra = []
            for key in ("ready_s", "pid", "port", "exit_code", "attempt", "error"):
                if d.get(key) is not None:
                    extra.append(f"{key}={d[key]}")
            self._write(f"{d.get('module', '?'):<16} {state:<12} {' '.join(extra)}")
            for line in d.get("last_output") or []:
                self._write(f"{'':<16} | {line}")
        elif topic == "callback":
            ok = "ok" if d.get("ok") else f"FAILED: {d.get('error')}"
            self._write(f"callback {d.get('source')} -> {d.get('target')} {d.get('cmd')}: {ok}")
        elif topic == "reply" and not str(d.get("source", "")).startswith(("macro", "callback")):
            res = short(d.get("result")) if d.get("ok") else f"FAILED: {d.get('error')}"
            self._write(f"{d.get('source')}: {d.get('module')} {d.get('cmd')} -> {res}")

    def step(self, macro: str, rep: Any) -> None:
        what = f"{rep.module} {rep.cmd}" if rep.module else rep.label
        if rep.kind == "until":
            what = f"until {what}"
        mark = "ok" if rep.ok else "FAILED"
        detail = short(rep.result) if rep.ok else rep.error
        self._write(f"[{macro}] {rep.index:>2} {what:<28} {mark} {rep.duration_s:6.2f}s  {detail}")

    def log_record(self, rec: dict[str, Any]) -> None:
        if (rec.get("levelno") or 0) >= 30 and rec.get("source") != "receiver":
            self._write(
                f"{rec.get('module', '?'):<16} {str(rec.get('level')).upper()} {rec.get('event')}"
            )
