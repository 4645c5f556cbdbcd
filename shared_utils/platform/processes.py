"""Process groups, signals and parent death: the POSIX-only parts of running modules, in one place.

Why each exists:
- a module and everything it starts (a PsychoPy child, an emulator) share one process group, so
  stopping it is one call and nothing it started outlives it;
- on Linux a child asks the kernel for SIGTERM when the thread that forked it dies
  (``PR_SET_PDEATHSIG``), so even a foreign executable goes away when the control room is killed;
- a stop signal may only set a flag and poke a wake-up socket: anything that takes a lock (an
  ``Event``, a queue, logging) can deadlock when a second signal lands while the first handler
  holds that lock.

On Windows (where labs often run the stimulus PC) the same functions fall back to what exists
there: a new process group via ``CREATE_NEW_PROCESS_GROUP``, ``terminate``/``kill`` of the child,
and SIGINT/SIGBREAK as stop signals.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "POSIX",
    "die_with_parent",
    "group_alive",
    "install_stop_signals",
    "leads_own_group",
    "new_group_kwargs",
    "parent_alive",
    "signal_group",
    "stop_signal_names",
]

POSIX = os.name == "posix"
_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def new_group_kwargs() -> dict[str, Any]:
    """``Popen`` keyword arguments that start the child in its own process group."""
    if POSIX:
        return {"start_new_session": True}
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


def die_with_parent() -> None:
    """``preexec_fn``: ask Linux for SIGTERM when the forking thread dies (elsewhere: nothing).

    Runs in the child between fork and exec, so it must stay tiny (no locks, no logging).
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def signal_group(proc: subprocess.Popen | int, kill: bool = False) -> bool:
    """SIGTERM (or SIGKILL) the process group led by ``proc``; False if it is gone.

    Without process groups (Windows) the process itself is terminated or killed.
    """
    pid = proc if isinstance(proc, int) else proc.pid
    if POSIX:
        try:
            os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    if isinstance(proc, int):
        try:
            os.kill(pid, signal.SIGTERM)
            return True
        except OSError:
            return False
    if proc.poll() is not None:
        return False
    proc.kill() if kill else proc.terminate()
    return True


def group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` exists (POSIX; elsewhere: the process itself)."""
    try:
        if POSIX:
            os.killpg(pgid, 0)
        else:
            os.kill(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError, OSError):
        return False


def end_group(pgid: int, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL, whatever is still in process group ``pgid``, waiting in between."""
    for kill in (False, True):
        if not signal_group(pgid, kill=kill):
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.02)


def leads_own_group(pid: int) -> bool:
    """True if ``pid`` leads a process group other than ours (so the group can be signalled)."""
    if not POSIX:
        return False
    try:
        return os.getpgid(pid) == pid and os.getpgid(pid) != os.getpgrp()
    except ProcessLookupError:
        return False


def parent_alive(pid: int) -> bool:
    """True while ``pid`` is still this process's parent (a dead parent re-parents us)."""
    return os.getppid() == pid


def stop_signal_names() -> list[str]:
    """The signals that mean "shut down cleanly" on this platform."""
    names = ["SIGTERM", "SIGINT"] + ([] if POSIX else ["SIGBREAK"])
    return [n for n in names if hasattr(signal, n)]


def install_stop_signals(on_signal: Callable[[int], None]) -> None:
    """Call ``on_signal(signum)`` for every stop signal. Main thread only.

    ``on_signal`` runs inside the signal handler: it must only store a value and write to a
    non-blocking socket or pipe (see the module notes for why).
    """
    for name in stop_signal_names():
        signal.signal(getattr(signal, name), lambda signum, _frame: on_signal(signum))
