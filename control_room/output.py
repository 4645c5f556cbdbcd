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

from control_room.output_gate import LINES_PER_S, OutputGate

LineSink = Callable[[str, str, str], None]  # (module, "stdout"|"stderr", line)
MAX_OUTPUT_LINE = 16384  # bytes; a longer line arrives in pieces (no unbounded reads)


class OutputCapture:
    """Pumps a process's pipes into ``sink`` and keeps the last ``keep`` lines."""

    def __init__(
        self,
        name: str,
        sink: LineSink,
        keep: int = 40,
        intercept: Callable[[str, str], bool] | None = None,
    ) -> None:
        """``intercept(stream, line)`` sees every line first; True keeps it out of the log and
        the tail (the ssh launcher reads the remote pid this way)."""
        self.name = name
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self._sink = sink
        self._intercept = intercept
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
        """Read as fast as the module writes; the gate decides what also goes to the central log
        (all lines up to a rate; the tail, and so crash reports, always has the last ones)."""

        def report(n: int) -> None:
            last = self.tail[-1][:200] if self.tail else ""
            note = f"[control room] {n} more {name} lines not logged (over {LINES_PER_S}/s)"
            self._sink(self.name, name, f"{note}; the last: {last!r}")

        gate = OutputGate(report)
        for raw in iter(lambda: stream.readline(MAX_OUTPUT_LINE), b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line or (self._intercept is not None and self._intercept(name, line)):
                continue
            self.tail.append(line)
            if gate.admit():
                self._sink(self.name, name, line)
        gate.close()
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
