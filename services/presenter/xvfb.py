"""Start a private Xvfb display for tests and benchmarks when there is no ``$DISPLAY``.

PsychoPy's pyglet backend needs a real X server (its headless EGL mode does not work), so
headless runs use Xvfb with Mesa's software renderer. We start ``Xvfb :N`` ourselves and stop it
by pid: wrappers like ``xvfb-run`` leave the server behind when killed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path


class XvfbError(RuntimeError):
    """No display could be had (Xvfb missing or did not start)."""


class VirtualDisplay:
    """An Xvfb server on a free display number; use as a context manager."""

    def __init__(self, size: str = "1280x1024x24") -> None:
        self.size = size
        self.display: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> str:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise XvfbError("no $DISPLAY and no Xvfb on PATH: apt-get install -y xvfb")
        for n in range(90, 190):
            if Path(f"/tmp/.X{n}-lock").exists() or Path(f"/tmp/.X11-unix/X{n}").exists():
                continue
            proc = subprocess.Popen(
                [exe, f":{n}", "-screen", "0", self.size, "-nolisten", "tcp"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if Path(f"/tmp/.X11-unix/X{n}").exists():
                    self.proc, self.display = proc, f":{n}"
                    return self.display
                time.sleep(0.05)
            err = b""
            if proc.poll() is None:
                proc.kill()
            else:
                err = proc.stderr.read() if proc.stderr else b""
            proc.wait()
            if b"already active" not in err and b"Server is already" not in err:
                raise XvfbError(f"Xvfb :{n} did not start: {err.decode(errors='replace')[-500:]}")
        raise XvfbError("no free X display number between :90 and :189")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def display_or_xvfb() -> tuple[str, VirtualDisplay | None]:
    """The current ``$DISPLAY``, or a fresh Xvfb (returned so the caller can stop it)."""
    if os.environ.get("DISPLAY"):
        return os.environ["DISPLAY"], None
    vd = VirtualDisplay()
    return vd.start(), vd
