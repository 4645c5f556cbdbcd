"""A module's stdout and stderr, line by line, into the central log and a short tail.

Why so careful: a crashing module's last words are usually a traceback on stderr. Both pipes are
read on their own threads until EOF, so nothing it printed is lost even when it dies during
start-up, and the last lines are at hand for the error that reports it.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

LineSink = Callable[[str, str, str], None]  # (module, "stdout"|"stderr", line)


class OutputCapture:
    """Pumps a process's pipes into ``sink`` and keeps the last ``keep`` lines."""

    def __init__(self, name: str, sink: LineSink, keep: int = 40) -> None:
        self.name = name
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self._sink = sink
        self._pumps: list[threading.Thread] = []

    def start(self, stdout: Any, stderr: Any) -> None:
        """Read both pipes (of a process just started) on their own threads."""
        self._pumps = [
            threading.Thread(target=self._pump, args=(s, n), name=f"{self.name}-{n}", daemon=True)
            for s, n in ((stdout, "stdout"), (stderr, "stderr"))
        ]
        for t in self._pumps:
            t.start()

    def _pump(self, stream: Any, name: str) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                continue
            self.tail.append(line)
            self._sink(self.name, name, line)
        stream.close()

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until both pipes reached EOF (after the process exited)."""
        for t in self._pumps:
            t.join(timeout)

    def last(self, n: int) -> list[str]:
        return list(self.tail)[-n:]

    def tail_text(self, n: int = 12) -> str:
        """The last ``n`` lines, indented, for an error message ("" when it printed nothing)."""
        lines = self.last(n)
        return ("\n  last output:\n    " + "\n    ".join(lines)) if lines else ""
