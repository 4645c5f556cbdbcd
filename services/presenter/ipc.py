"""Parent <-> child wire format: one JSON object per line over a pipe.

Kept in its own module so both sides share it without the child importing the server or the
parent importing PsychoPy. The child's writer (:class:`Emitter`) and reader
(:func:`read_messages`) are here too.

Parent -> child (command pipe):  ``{"id": 7, "cmd": "show_text", "args": {...}}``
Child -> parent (event pipe):
  - reply:  ``{"id": 7, "ok": true, "result": {...}}`` or ``{"id": 7, "ok": false, "error": "..."}``
  - event:  ``{"event": "ready" | "status" | "log", ...}`` (no ``id``)
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from shared_utils.platform.processes import parent_alive

#: A child command handler's result meaning "the reply follows, after the flip that shows it".
DEFERRED = object()


def encode(msg: dict[str, Any]) -> bytes:
    """One message as a newline-terminated UTF-8 JSON line."""
    return (json.dumps(msg, separators=(",", ":"), default=str) + "\n").encode()


class LineReader:
    """Accumulates bytes from a file descriptor and yields complete JSON messages.

    A partial line stays buffered until the rest arrives, so a reader never blocks on half a
    message and never loses one.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""

    def read_blocking(self) -> list[dict[str, Any]] | None:
        """Wait for data; return the complete messages, or ``None`` at end of file."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return None
        return self._feed(chunk)

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        """The complete messages of each read, until end of file or a read error."""
        while True:
            try:
                msgs = self.read_blocking()
            except OSError:
                return
            if msgs is None:
                return
            yield msgs

    def _feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        out = []
        for line in lines:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a corrupt line must not kill the reader
        return out


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to a (blocking) pipe."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Emitter:
    """Child side: thread-safe writer of replies and events to the parent."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def send(self, msg: dict[str, Any]) -> None:
        with self._lock:
            try:
                write_all(self.fd, encode(msg))
            except (BrokenPipeError, OSError):
                os._exit(3)  # parent is gone: nobody to present for

    def reply(self, req_id: Any, result: Any = None, error: str | None = None) -> None:
        if error is None:
            self.send({"id": req_id, "ok": True, "result": result})
        else:
            self.send({"id": req_id, "ok": False, "error": error})


def read_messages(
    fd: int, deliver: Callable[[dict[str, Any]], None], hung_up: threading.Event | None = None
) -> None:
    """Child side: hand every command from the pipe to ``deliver``; at end of file (the parent
    is gone) deliver a ``shutdown`` and set ``hung_up``."""
    for msgs in LineReader(fd).batches():
        for m in msgs:
            deliver(m)
    if hung_up is not None:
        hung_up.set()
    deliver({"id": None, "cmd": "shutdown"})


def exit_when_orphaned(
    parent_pid: int,
    hung_up: threading.Event,
    serving: threading.Event,
    grace_s: float = 1.0,
) -> None:
    """Child side: end the process ``grace_s`` after the parent died or closed the command pipe.

    Why: a parent killed with SIGKILL runs no clean-up, and a child whose main thread is busy
    (importing PsychoPy, inside user code) would never read the ``shutdown`` the pipe's end of
    file produces. This thread notices either sign within 0.1 s, whatever signal killed the
    parent, gives the frame loop (once ``serving`` is set) ``grace_s`` to close the window
    itself, then leaves with ``os._exit``. Started first thing in the child, before the slow
    imports; a child still importing has nothing to close and leaves at once.
    """

    def watch() -> None:
        while parent_alive(parent_pid) and not hung_up.is_set():
            hung_up.wait(0.1)
        if serving.is_set():
            time.sleep(grace_s)
        os._exit(4)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
