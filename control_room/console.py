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


def step_line(rep: Any) -> str:
    """One finished macro step (a StepReport or its dict), as ``up`` and ``macro`` print it."""
    get = rep.get if isinstance(rep, dict) else lambda k, d=None: getattr(rep, k, d)
    what = f"{get('module')} {get('cmd')}" if get("cmd") else get("label")
    if get("kind") == "restart":
        what = f"restart {get('module')}"
    elif get("kind") == "until":
        what = f"until {what}"
    index = f"{'finally ' if get('section') == 'finally' else ''}{get('index'):>2}"
    mark = "ok" if get("ok") else "FAILED"
    detail = short(get("result")) if get("ok") else get("error")
    return f"{index} {what:<28} {mark} {get('duration_s'):6.2f}s  {detail}"


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
            for key in ("ready_s", "pid", "port", "on", "exit_code", "note", "attempt", "error"):
                if d.get(key) is not None:
                    # the first line only: a start error's output tail is printed once, with the
                    # final error, not again here
                    extra.append(f"{key}={(str(d[key]).splitlines() or [''])[0]}")
            self._write(f"{d.get('module', '?'):<16} {state:<12} {' '.join(extra)}")
            for line in d.get("last_output") or []:
                self._write(f"{'':<16} | {line}")
        elif topic == "callback":
            ok = "ok" if d.get("ok") else f"FAILED: {d.get('error')}"
            self._write(f"callback {d.get('source')} -> {d.get('target')} {d.get('cmd')}: {ok}")
        elif topic == "reply" and not str(d.get("source", "")).startswith(
            ("macro", "callback", "session")  # those print their own lines
        ):
            res = short(d.get("result")) if d.get("ok") else f"FAILED: {d.get('error')}"
            self._write(f"{d.get('source')}: {d.get('module')} {d.get('cmd')} -> {res}")

    def step(self, macro: str, rep: Any) -> None:
        self._write(f"[{macro}] {step_line(rep)}")

    def log_record(self, rec: dict[str, Any]) -> None:
        if (rec.get("levelno") or 0) >= 30 and rec.get("source") != "receiver":
            self._write(
                f"{rec.get('module', '?'):<16} {str(rec.get('level')).upper()} {rec.get('event')}"
            )
