"""Parent <-> child wire format: one JSON object per line over a pipe.

Kept in its own module so both sides share it without the child importing the server or the
parent importing PsychoPy.

Parent -> child (command pipe):  ``{"id": 7, "cmd": "show_text", "args": {...}}``
Child -> parent (event pipe):
  - reply:  ``{"id": 7, "ok": true, "result": {...}}`` or ``{"id": 7, "ok": false, "error": "..."}``
  - event:  ``{"event": "ready" | "status" | "log", ...}`` (no ``id``)
"""

from __future__ import annotations

import json
import os
from typing import Any


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
