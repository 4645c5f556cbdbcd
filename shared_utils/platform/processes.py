"""Process groups, signals and parent death: the POSIX-only parts of running modules, in one place.

Why each exists:
- a module and everything it starts (a PsychoPy child, an emulator) share one process group, so
  stopping it is one call and nothing it started outlives it;
- on Linux a child asks the kernel for SIGTERM when the thread that forked it dies
  (``PR_SET_PDEATHSIG``), so even a foreign executable goes away when the control room is killed;
- a stop signal may only set a flag and poke a wake-up socket: anything that takes a lock (an
  ``Event``, a queue, logging) can deadlock when a second signal lands while the first handler
  holds that lock;
- per-module CPU affinity and scheduling priority (:class:`Scheduling`) are set in the child
  between fork and exec, so the module and every thread it starts run with them from the first
  instruction; :func:`scheduling_problem` first asks the kernel, on a throw-away thread of the
  caller, whether it would allow them, so a refusal comes back as a sentence, not a failed fork.

On Windows (where labs often run the stimulus PC) the same functions fall back to what exists
there: a new process group via ``CREATE_NEW_PROCESS_GROUP``, ``terminate``/``kill`` of the child,
and SIGINT/SIGBREAK as stop signals.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared_utils.checks import choice_message

__all__ = [
    "POSIX",
    "Scheduling",
    "apply_scheduling",
    "current_scheduling",
    "parse_sched",
    "scheduling_problem",
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


# ------------------------------------------------------------------ CPU affinity and priority
SCHED_POLICIES = ("other", "batch", "idle", "fifo", "rr")  # fifo/rr: real-time, priority 1-99


@dataclass(frozen=True)
class Scheduling:
    """Where and how urgently a module runs: CPUs it may use, its nice value, its policy."""

    cpus: tuple[int, ...] | None = None
    nice: int | None = None
    policy: str | None = None  # one of SCHED_POLICIES
    priority: int = 0  # 1-99 for fifo/rr, 0 otherwise

    def __bool__(self) -> bool:
        return self.cpus is not None or self.nice is not None or self.policy is not None

    def describe(self) -> str:
        parts = [f"cpu_affinity={list(self.cpus)}"] if self.cpus is not None else []
        parts += [f"nice={self.nice}"] if self.nice is not None else []
        if self.policy is not None:
            parts.append(f"sched={self.policy}" + (f":{self.priority}" if self.priority else ""))
        return ", ".join(parts)


def parse_sched(text: str) -> tuple[str, int]:
    """``"fifo:50"`` -> ("fifo", 50); ``"other"`` -> ("other", 0). ValueError says what is allowed."""
    name, _, prio = text.strip().lower().partition(":")
    if name not in SCHED_POLICIES:
        raise ValueError(
            f"{choice_message(text, SCHED_POLICIES)} (fifo/rr take a priority: 'fifo:50')"
        )
    realtime = name in ("fifo", "rr")
    if not realtime:
        if prio:
            raise ValueError(f"{name!r} takes no priority (only fifo and rr do), got {text!r}")
        return name, 0
    if not prio.isdigit() or not 1 <= int(prio) <= 99:
        raise ValueError(f"{name} needs a priority 1-99, as '{name}:50', got {text!r}")
    return name, int(prio)


def _policy(name: str) -> int:
    return getattr(os, f"SCHED_{name.upper()}")


def _steps(s: Scheduling, pid: int) -> list[tuple[str, Callable[[], None]]]:
    steps: list[tuple[str, Callable[[], None]]] = []
    if s.cpus is not None:
        steps.append(("cpus", lambda: os.sched_setaffinity(pid, s.cpus)))
    if s.nice is not None:
        steps.append(("nice", lambda: os.setpriority(os.PRIO_PROCESS, pid, s.nice)))
    if s.policy is not None:
        param = os.sched_param(s.priority)
        steps.append(("sched", lambda: os.sched_setscheduler(pid, _policy(s.policy), param)))
    return steps


def apply_scheduling(s: Scheduling, pid: int = 0) -> None:
    """Set ``s`` on ``pid`` (0: the calling thread; Linux applies these per thread, and threads
    and exec'd programs inherit them). Raises OSError as the kernel does."""
    for _, step in _steps(s, pid):
        step()


def _cpu_list(cpus: Any) -> str:
    return ",".join(str(c) for c in sorted(cpus)) or "none"


def scheduling_problem(s: Scheduling) -> str | None:
    """Why this machine would refuse ``s`` (None: it can be applied).

    The settings are tried on a short-lived thread of this process, which the kernel judges by
    the same rules as a child we start (same user, capabilities and limits); the thread exits at
    once, so nothing of ours changes.
    """
    if not s:
        return None
    if not all(hasattr(os, f) for f in ("sched_setaffinity", "sched_setscheduler", "setpriority")):
        return (
            f"{s.describe()}: per-module CPU affinity and priority are not available on "
            f"{sys.platform} (Linux only); remove cpu_affinity, nice and sched from the config"
        )
    if s.cpus is not None:
        n = os.cpu_count() or 1
        missing = [c for c in s.cpus if c >= n]
        if missing:
            return (
                f"cpu_affinity {list(s.cpus)}: CPU {_cpu_list(missing)} does not exist; this "
                f"machine has CPUs 0-{n - 1}"
            )
    failure: list[tuple[str, OSError]] = []

    def probe() -> None:
        for what, step in _steps(s, threading.get_native_id()):
            try:
                step()
            except OSError as exc:
                failure.append((what, exc))
                return

    t = threading.Thread(target=probe, name="sched-probe", daemon=True)
    t.start()
    t.join()
    return _refusal(s, *failure[0]) if failure else None


def _refusal(s: Scheduling, what: str, exc: OSError) -> str:
    """The kernel's refusal of step ``what`` of ``s`` as a sentence that says what to change."""
    import resource  # POSIX only; we only get here where the calls exist

    if what == "cpus" and exc.errno == errno.EINVAL:
        return (
            f"cpu_affinity {list(s.cpus)}: none of these CPUs may be used here (this process may "
            f"use {_cpu_list(os.sched_getaffinity(0))}: a container or cgroup limits them)"
        )
    if what == "sched" and exc.errno == errno.EPERM and s.policy in ("fifo", "rr"):
        soft = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
        return (
            f"sched = '{s.policy}:{s.priority}': the OS does not allow real-time priority for "
            f"this user (RLIMIT_RTPRIO is {soft}; it needs root, CAP_SYS_NICE or an rtprio limit "
            f">= {s.priority}, e.g. '@realtime - rtprio 99' in /etc/security/limits.conf; in a "
            "container: cap_add SYS_NICE); remove sched or use 'other'"
        )
    if what == "nice" and exc.errno in (errno.EPERM, errno.EACCES):
        soft = resource.getrlimit(resource.RLIMIT_NICE)[0]
        return (
            f"nice = {s.nice}: the OS does not allow this user to raise priority (RLIMIT_NICE is "
            f"{soft}: a nice of {s.nice} needs {20 - s.nice}, or root / CAP_SYS_NICE); use a "
            "nice >= 0 or raise the limit"
        )
    return f"{s.describe()}: refused by the OS: {exc.strerror or exc}"


def current_scheduling(pid: int) -> dict[str, Any]:
    """What ``pid``'s main thread runs with now: CPUs, nice value, policy (and its priority)."""
    policy = os.sched_getscheduler(pid)
    names = {_policy(n): n for n in SCHED_POLICIES}
    prio = os.sched_getparam(pid).sched_priority
    return {
        "cpu_affinity": sorted(os.sched_getaffinity(pid)),
        "nice": os.getpriority(os.PRIO_PROCESS, pid),
        "sched": names.get(policy, str(policy)) + (f":{prio}" if prio else ""),
    }
