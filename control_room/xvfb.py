"""A virtual display for modules that draw (the presenter) on machines without one.

Why ``-displayfd``: Xvfb picks a free display number itself and writes it to the pipe only once it
accepts connections, so there is no guessing of numbers and no sleeping until it is ready.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time

from control_room.spawn import spawn


class Xvfb:
    """A running ``Xvfb``; ``display`` is e.g. ``":99"``. Stop it with :meth:`stop`."""

    def __init__(self, size: str = "1280x720x24", timeout_s: float = 10.0) -> None:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise RuntimeError(
                "no DISPLAY and no Xvfb found: install it (apt-get install xvfb; `make run` does) "
                "or set DISPLAY"
            )
        r, w = os.pipe()
        try:
            self.proc = spawn(
                [exe, "-displayfd", str(w), "-screen", "0", size, "-nolisten", "tcp"],
                pass_fds=(w,),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        finally:
            os.close(w)
        try:
            self.display = ":" + self._read_number(r, timeout_s)
        except Exception:
            self.stop()
            raise
        finally:
            os.close(r)

    def _read_number(self, fd: int, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"Xvfb did not start (exit code {self.proc.poll()})")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 64)
                if not chunk:
                    raise RuntimeError(f"Xvfb closed its display pipe (exit {self.proc.poll()})")
                buf += chunk
        return buf.decode().strip()

    def stop(self, timeout_s: float = 3.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout_s)
