"""Stopping one module: politely first (STOP, CLOSE), then by signal, and nothing left behind.

Why in this order and with these shortcuts: a module of ours closes its files and hardware on
CLOSE, so it is worth asking first; but asking a module that refused our token, never answered
UP, or does not list STOP/CLOSE only waits out a timeout, so those go straight to the signals.
SIGTERM, then SIGKILL, go to the module's whole process group, so a child it started (a PsychoPy
window, an emulator) goes too.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from shared_utils.errors import CommandFailed, ModuleError
from shared_utils.platform.processes import signal_group

if TYPE_CHECKING:
    from control_room.handle import ModuleHandle


def stop_module(h: ModuleHandle, timeout: float) -> list[str]:
    """STOP, CLOSE, then SIGTERM and SIGKILL the process group; returns what was needed."""
    if h.owned and not h.alive():
        reap(h)
        return ["already exited"]
    steps, closing = _ask(h, timeout)
    h.drop_client()
    if not h.owned or h.proc is None:
        return steps
    first_wait = timeout if closing else 0.0
    # the launcher says how: signals to the process group here, over ssh or compose elsewhere
    for label, action, wait in [("", None, first_wait), *h.launcher.stages(timeout)]:
        if action is not None:
            if not action(h.proc):
                break
            steps.append(label)
        try:
            h.proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    reap(h)
    return steps


def _ask(h: ModuleHandle, timeout: float) -> tuple[list[str], bool]:
    """Send STOP and CLOSE where that can help; (steps, whether CLOSE reached the module)."""
    steps: list[str] = []
    offered = {c.upper() for c in h.commands}
    cmds = ("STOP", "CLOSE") if h.owned else ("STOP",)
    closing = False
    for cmd in cmds if h.answered and not h.refused_auth else ():
        if offered and cmd not in offered:
            continue  # a module with only the required commands: signals do the stopping
        try:
            h.command(cmd, {}, timeout=timeout)
            steps.append(cmd)
            closing = cmd == "CLOSE"
        except ModuleError as exc:
            steps.append(f"{cmd} failed: {exc}")
            # "cannot connect": not listening (yet), so nothing will make it exit but a signal
            closing = cmd == "CLOSE" and not str(exc).startswith("cannot connect")
            if not h.alive() or not isinstance(exc, CommandFailed):
                break  # gone, or not answering: CLOSE would only wait as long again
    return steps, closing


def reap(h: ModuleHandle) -> None:
    """Collect the exit code and make sure nothing of the process group is left."""
    if h.proc is None:
        return
    if h.proc.poll() is not None:
        h.exit_code = h.proc.returncode
    signal_group(h.proc.pid, kill=True)  # helpers it started in its group (a GUI child)
    h.flush_output(2.0)
