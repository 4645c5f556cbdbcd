"""A module's part in an experiment session: the EXP* messages every module answers.

The vocabulary is iblutil's (``iblutil.io.net.base.ExpMessage``/``ExpStatus``, used by iblrig's
NetworkSession), so a lab's behaviour PC and our control room speak the same language:
``EXPINFO`` (who are you, are you the main sync, what do you need), ``EXPINIT`` (prepare for
session ``exp_ref``), ``EXPSTART``, ``EXPSTATUS``, ``EXPEND`` (clean stop), ``EXPINTERRUPT``
(stop after an error), ``EXPCLEANUP`` (forget the session). Status goes CONNECTED (0) ->
INITIALIZED (10) -> RUNNING (20) -> STOPPED (30) -> back to CONNECTED on cleanup.

Why a state machine here and not in each module: every module gets the same rules for free
(out-of-order messages are refused with a reason, a repeated message for the same ``exp_ref`` is
answered again without acting twice), and a module only adds what it does at each step by
defining a command of the same name (see :mod:`shared_utils.protocol.builtins`). Pure logic: no
sockets, no clocks but the ones passed in.
"""

from __future__ import annotations

import enum
import functools
import re
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_utils.errors import CommandError

EXP_COMMANDS = [
    "EXPINFO",
    "EXPINIT",
    "EXPSTART",
    "EXPSTATUS",
    "EXPEND",
    "EXPINTERRUPT",
    "EXPCLEANUP",
]
SPEC_VERSION = "1.0.0"  # of this message set; iblutil's PROTOCOL_VERSION is 1.0.0 too
EXP_REF = re.compile(r"^\d{4}-\d{2}-\d{2}_\d+_[A-Za-z0-9][A-Za-z0-9._-]*$")


class ExpStatus(enum.IntEnum):
    """iblutil's ExpStatus values, so the numbers mean the same on both sides."""

    CONNECTED = 0
    INITIALIZED = 10
    RUNNING = 20
    STOPPED = 30


def check_exp_ref(exp_ref: Any) -> str:
    """``yyyy-mm-dd_N_subject`` or a CommandError saying what is wrong."""
    if not isinstance(exp_ref, str) or not EXP_REF.match(exp_ref):
        raise CommandError(
            f"exp_ref must look like 'yyyy-mm-dd_N_subject' (e.g. 2026-12-04_1_mouse01), got {exp_ref!r}"
        )
    return exp_ref


@functools.lru_cache(maxsize=1)
def source_revision() -> str | None:
    """The git commit this code runs from, when it runs from a checkout (else None)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    return rev or None


@dataclass
class SessionState:
    """Where this module is in the session lifecycle, and the transitions between steps."""

    status: ExpStatus = ExpStatus.CONNECTED
    exp_ref: str | None = None
    started: dict[str, float] | None = None  # {"wall": time.time(), "monotonic": ...}
    ended: dict[str, float] | None = None
    interrupted: dict[str, Any] | None = None
    history: list[tuple[str, str | None]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """What EXPSTATUS (and every EXP* reply) says about the session."""
        return {
            "status": int(self.status),
            "status_name": self.status.name.lower(),
            "exp_ref": self.exp_ref,
            "started": self.started,
            "ended": self.ended,
            "interrupted": self.interrupted,
        }

    # Each step returns True when it changes something, False for a repeat of what is already
    # done (the module's own handler then is not run again), or raises CommandError.
    def init(self, exp_ref: str) -> bool:
        check_exp_ref(exp_ref)
        if self.status is ExpStatus.RUNNING:
            if exp_ref == self.exp_ref:
                return False
            raise CommandError(
                f"EXPINIT {exp_ref}: session {self.exp_ref} is running; send EXPEND or EXPINTERRUPT first"
            )
        if self.status is ExpStatus.INITIALIZED and exp_ref == self.exp_ref:
            return False
        self._enter(ExpStatus.INITIALIZED, exp_ref, "init")
        self.started = self.ended = self.interrupted = None
        return True

    def start(self, exp_ref: str) -> bool:
        check_exp_ref(exp_ref)
        if exp_ref != self.exp_ref or self.status is ExpStatus.CONNECTED:
            raise CommandError(
                f"EXPSTART {exp_ref}: not initialised for it "
                f"(status {self.status.name}, exp_ref {self.exp_ref}); send EXPINIT first"
            )
        if self.status is ExpStatus.RUNNING:
            return False
        if self.status is ExpStatus.STOPPED:
            raise CommandError(f"EXPSTART {exp_ref}: that session has ended; EXPINIT a new one")
        self._enter(ExpStatus.RUNNING, exp_ref, "start")
        self.started = {"wall": time.time(), "monotonic": time.monotonic()}
        return True

    def end(self, reason: dict[str, Any] | None = None) -> bool:
        """EXPEND (``reason`` None) or EXPINTERRUPT (``reason`` says why)."""
        if self.status is ExpStatus.CONNECTED:
            if reason is not None:
                return False  # interrupting nothing is not an error
            raise CommandError("EXPEND: no session to end (send EXPINIT and EXPSTART first)")
        if self.status is ExpStatus.STOPPED:
            return False
        self._enter(ExpStatus.STOPPED, self.exp_ref, "interrupt" if reason is not None else "end")
        self.ended = {"wall": time.time(), "monotonic": time.monotonic()}
        self.interrupted = reason
        return True

    def cleanup(self) -> bool:
        if self.status is ExpStatus.RUNNING:
            raise CommandError(
                f"EXPCLEANUP: session {self.exp_ref} is running; send EXPEND or EXPINTERRUPT first"
            )
        if self.status is ExpStatus.CONNECTED:
            return False
        self._enter(ExpStatus.CONNECTED, None, "cleanup")
        return True

    def _enter(self, status: ExpStatus, exp_ref: str | None, step: str) -> None:
        self.status, self.exp_ref = status, exp_ref
        self.history.append((step, exp_ref))


def module_identity(name: str, version: str) -> dict[str, Any]:
    """Name, version, host and source revision: what a session records about each module."""
    return {
        "module": name,
        "version": version,
        "host": socket.gethostname(),
        "revision": source_revision(),
        "spec_version": SPEC_VERSION,
    }


#: the method of a module's session part that handles each message (``session_handlers``)
PART_METHODS = {"EXPINFO": "info", "EXPINIT": "init", "EXPSTART": "start", "EXPSTATUS": "status",
                "EXPEND": "end", "EXPINTERRUPT": "interrupt", "EXPCLEANUP": "cleanup"}  # fmt: skip


def session_handlers(part: object) -> dict[str, Callable[..., Any]]:
    """A module's EXP* command handlers from an object with methods ``info``, ``init``,
    ``start``, ``status``, ``end``, ``interrupt`` and ``cleanup`` (any may be missing: the
    built-in step alone runs then; ``interrupt`` defaults to ``end``)."""
    out = {}
    for msg, name in PART_METHODS.items():
        method = getattr(part, name, None) or (
            getattr(part, "end", None) if name == "interrupt" else None
        )
        if callable(method):
            out[msg] = method
    return out
