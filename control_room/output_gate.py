"""How much of a module's console output goes into the central log.

A module printing in a tight loop (a debug flag left on, a foreign module gone wrong) must not
slow the control room or fill the disk: the control room reads its pipes as fast as they fill
and passes at most ``LINES_PER_S`` lines a second per stream into the log. The rest are counted
and reported in one line once that second is over; a timer does the reporting, so a flood that
stops is reported at once rather than whenever the module next prints.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LINES_PER_S = 1000


class OutputGate:
    """Admit at most ``per_s`` lines a second; ``report(n)`` is called with the count of lines
    turned away, once per second in which any were (from a timer thread, or from :meth:`close`)."""

    def __init__(self, report: Callable[[int], None], per_s: int = LINES_PER_S) -> None:
        self._report = report
        self._per_s = per_s
        self._lock = threading.Lock()
        self._window = -1.0
        self._passed = 0
        self._dropped = 0
        self._timer: threading.Timer | None = None

    def admit(self) -> bool:
        """True if this line may go to the log."""
        with self._lock:
            now = time.monotonic()
            if now - self._window >= 1.0:
                self._window, self._passed = now, 0
            if self._passed < self._per_s:
                self._passed += 1
                return True
            self._dropped += 1
            if self._timer is None:
                self._timer = threading.Timer(self._window + 1.0 - now, self._flush)
                self._timer.daemon = True
                self._timer.start()
            return False

    def close(self) -> None:
        """Report what is still counted now (the stream ended)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            dropped, self._dropped, self._timer = self._dropped, 0, None
        if dropped:
            self._report(dropped)
