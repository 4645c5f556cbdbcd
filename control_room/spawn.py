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

import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared_utils.platform.processes import (
    POSIX,
    Scheduling,
    apply_scheduling,
    die_with_parent,
    new_group_kwargs,
)

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")


def spawn(argv: list[str], scheduling: Scheduling | None = None, **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(argv, ...)`` in a new process group, from the spawner thread (no shell).

    ``scheduling``: CPU affinity and priority, set in the child before it runs the program (check
    them with ``scheduling_problem`` first: a refusal here only says "preexec_fn failed").
    """
    for key, value in new_group_kwargs().items():
        kwargs.setdefault(key, value)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    if POSIX and scheduling:

        def child_setup() -> None:
            die_with_parent()
            apply_scheduling(scheduling)

        kwargs.setdefault("preexec_fn", child_setup)
    elif POSIX:
        kwargs.setdefault("preexec_fn", die_with_parent)

    def run() -> subprocess.Popen:
        return subprocess.Popen(argv, **kwargs)  # noqa: PLW1509

    return _executor.submit(run).result()
