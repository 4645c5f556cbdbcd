"""Start child processes so they cannot outlive the control room.

Three layers, because each covers a case the others miss:
- every child gets its own session (process group), so shutdown can signal the module and anything
  it started in one call;
- on Linux each child asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so
  even an executable that knows nothing about us goes away when the control room is SIGKILLed;
- Python modules of ours also watch ``MESH_PARENT_PID`` and shut down cleanly.

The kernel sends the death signal when the *thread* that forked the child ends, not the process.
All children are therefore forked from one long-lived spawner thread.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_PR_SET_PDEATHSIG = 1
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:  # runs in the child between fork and exec: keep it tiny
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(argv, start_new_session=True, ...)`` from the spawner thread (no shell)."""
    kwargs.setdefault("start_new_session", True)
    kwargs.setdefault("stdin", subprocess.DEVNULL)

    def run() -> subprocess.Popen:
        return subprocess.Popen(argv, preexec_fn=_die_with_parent, **kwargs)  # noqa: PLW1509

    return _executor.submit(run).result()
