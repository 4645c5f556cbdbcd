"""Stop signals for the control room's own process, handled without locks in the handler.

A burst of SIGINT/SIGTERM (a user hammering Ctrl-C, a supervisor that signals twice) can land
while the first handler is still running. A handler that prints or sets an ``Event`` takes a lock
(stdout's buffer, the event's condition), and a second handler re-entering it raises "reentrant
call" or deadlocks, so shutdown never finishes and modules outlive the control room. Here the
handler only stores the signal and writes one byte to a socket; a normal thread does the rest,
once.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable

from shared_utils.platform.processes import install_stop_signals


class StopSignals:
    """Call ``on_stop(signal_name)`` on a helper thread at the first stop signal; ignore the rest.

    Construct it on the main thread (Python installs handlers only there).
    """

    def __init__(self, on_stop: Callable[[str], None]) -> None:
        self._on_stop = on_stop
        self._first: int | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        install_stop_signals(self._handler)
        self._thread = threading.Thread(target=self._run, name="stop-signals", daemon=True)
        self._thread.start()

    def _handler(self, signum: int) -> None:
        # inside the signal handler: store and poke, nothing that could take a lock
        if self._first is None:
            self._first = signum
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a burst) or closed: the first byte is enough
            pass

    def _run(self) -> None:
        while self._first is None:
            try:
                if not self._wake_r.recv(1024):
                    return
            except OSError:
                return
        self._on_stop(signal.Signals(self._first).name)
