"""A private virtual display (Xvfb) for modules that draw, on machines without a screen.

PsychoPy's pyglet backend needs a real X server (its headless EGL mode does not work), so the
control room (``make run``), the tests and the benchmarks start ``Xvfb`` with Mesa's software
renderer when ``DISPLAY`` is unset. Why ``-displayfd``: Xvfb picks a free display number itself
and writes it to the pipe only once it accepts connections, so there is no guessing of numbers,
no race with another Xvfb and no sleeping until it is ready. Xvfb runs in its own process group
and is stopped by signalling that group: wrappers like ``xvfb-run`` leave the server behind when
killed.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

from shared_utils.platform.processes import die_with_parent

__all__ = ["Xvfb", "XvfbError", "display_or_xvfb", "spawn_tied"]

DEFAULT_SIZE = "1280x1024x24"


class XvfbError(RuntimeError):
    """No display could be had: Xvfb is missing or did not start (the text says why)."""


def _popen(argv: list[str], **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kwargs)


def spawn_tied(argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """Like the default spawner, and Linux also ends Xvfb when this process dies (even by
    SIGKILL). Call it from a thread that lives as long as the process, e.g. the main thread:
    the kernel's death signal follows the forking thread."""
    return _popen(argv, preexec_fn=die_with_parent, **kwargs)  # noqa: PLW1509


class Xvfb:
    """A running ``Xvfb`` (started by the constructor); ``display`` is e.g. ``":99"``.

    ``spawn`` starts the process (``subprocess.Popen``-like; it must give the child its own
    session): the control room passes its spawner so that Xvfb dies with it even on SIGKILL.
    Stop it with :meth:`stop`, or use it as a context manager.
    """

    def __init__(
        self,
        size: str = DEFAULT_SIZE,
        timeout_s: float = 10.0,
        spawn: Callable[..., subprocess.Popen] | None = None,
    ) -> None:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise XvfbError(
                "no DISPLAY and no Xvfb found: install it (apt-get install xvfb; `make run` does) "
                "or set DISPLAY"
            )
        self._log: IO[bytes] = tempfile.TemporaryFile()  # Xvfb's stderr, for error messages
        r, w = os.pipe()
        try:
            self.proc = (spawn or _popen)(
                [exe, "-displayfd", str(w), "-screen", "0", size, "-nolisten", "tcp"],
                pass_fds=(w,),
                stdout=subprocess.DEVNULL,
                stderr=self._log,
            )
        except BaseException:
            self._log.close()
            raise
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
                raise XvfbError(f"Xvfb did not start (exit code {self.proc.poll()}){self._tail()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 64)
                if not chunk:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(1.0)  # it is exiting: let its exit code and log settle
                    raise XvfbError(
                        f"Xvfb closed its display pipe (exit code {self.proc.poll()}){self._tail()}"
                    )
                buf += chunk
        return buf.decode().strip()

    def _tail(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._log.seek(0)
            lines = [ln.strip() for ln in self._log.read().decode(errors="replace").splitlines()]
            text = " ".join(ln for ln in lines if ln and ln != "(EE)")
            if text:
                return f": ...{text[-300:]}"
        return ""

    def stop(self, timeout_s: float = 3.0) -> None:
        """SIGTERM to Xvfb's process group, SIGKILL if it lingers; idempotent."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout_s)
        self._log.close()

    def __enter__(self) -> Xvfb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def display_or_xvfb(
    size: str = DEFAULT_SIZE, spawn: Callable[..., subprocess.Popen] | None = None
) -> tuple[str, Xvfb | None]:
    """The current ``$DISPLAY``, or a fresh Xvfb's (returned so the caller can stop it)."""
    if os.environ.get("DISPLAY"):
        return os.environ["DISPLAY"], None
    xvfb = Xvfb(size, spawn=spawn)
    return xvfb.display, xvfb
