"""The built-in commands every module answers, whatever its own command map holds.

Dareplane's four (``UP``, ``GET_PCOMMS``, ``STOP``, ``CLOSE``) and ours (``HELP``, ``STATUS``,
``AUTH``, ``SUBSCRIBE``). ``STOP``, ``STATUS`` and ``CLOSE`` wrap a module command of the same name
instead of being replaced by it: the module's part runs inside the built-in.

A bare ``UP`` line on an authenticated connection is answered by the transport itself, without a
trip through dispatch (health checks are most of a module's traffic, see
``shared_utils.protocol.server``); :meth:`Builtins.up` answers the other forms (``UP|{}``, a JSON
request with an id) and defines what the fast path must send.
"""

from __future__ import annotations

import copy
import hmac
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared_utils.checks import resolve_name, short
from shared_utils.errors import CommandError
from shared_utils.protocol.commands import Command, make_command, unknown_command_message
from shared_utils.protocol.session import EXP_COMMANDS, SessionState, module_identity

if TYPE_CHECKING:
    from shared_utils.protocol.dispatch import Dispatcher

OUR_BUILTINS = ["HELP", "STATUS", "AUTH", "SUBSCRIBE", *EXP_COMMANDS]
AUTH_FAIL_DELAY_S = 0.25  # each wrong token waits this long, one at a time per server
AUTH_MAX_FAILURES = 3  # then the connection is closed
#: Built-ins that wrap a module's own command of the same name instead of being replaced by it.
MERGED = ("STOP", "STATUS", "CLOSE", *EXP_COMMANDS)


def lsl_clock() -> float | None:
    """This process's LSL clock (``pylsl.local_clock()``), or None when it does not use LSL.

    STATUS carries it so that a control room on another host can measure the offset between the
    two clocks over the command connection, NTP-style (control_room/clocks.py).
    """
    pylsl = sys.modules.get("pylsl")
    return pylsl.local_clock() if pylsl is not None else None


class Builtins:
    """The built-in commands of one dispatcher (they read its tasks, commands and session)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        funcs: dict[str, Callable[..., Any]] = {
            "UP": self.up,
            "GET_PCOMMS": self.get_pcomms,
            "STOP": self.stop,
            "CLOSE": self.close,
            "HELP": self.help,
            "STATUS": self.status,
            "AUTH": self.auth,
            "SUBSCRIBE": self.subscribe,
            "EXPINFO": self.expinfo,
            "EXPINIT": self.expinit,
            "EXPSTART": self.expstart,
            "EXPSTATUS": self.expstatus,
            "EXPEND": self.expend,
            "EXPINTERRUPT": self.expinterrupt,
            "EXPCLEANUP": self.expcleanup,
        }
        self.table: dict[str, Command] = {k: make_command(k, f) for k, f in funcs.items()}
        self._fail_lock = threading.Lock()
        self._exp_lock = threading.Lock()

    def up(self) -> bool:
        """Health check: true while the server answers."""
        return True

    def get_pcomms(self) -> list[str]:
        """Names of all commands (Dareplane's discovery)."""
        return self.d.pcommands

    def stop(self, task: int | None = None, **kwargs: Any) -> Any:
        """Stop all running tasks (and the module's own STOP), or one task by id."""
        d = self.d
        if task is not None:
            if not isinstance(task, int) or isinstance(task, bool):
                raise CommandError(
                    f"STOP: argument 'task' must be an integer task id, got {short(task)}"
                )
            try:
                return d.tasks.stop(task)
            except KeyError:
                running = [t["id"] for t in d.tasks.list()]
                raise CommandError(
                    f"STOP: no task {task}; running tasks: {running or 'none'}"
                ) from None
        if kwargs and "STOP" not in d.commands:
            raise CommandError(
                f"STOP: unknown argument {', '.join(map(repr, kwargs))}; valid arguments: task"
            )
        own = (  # the module's STOP runs (and checks its arguments) before any task is stopped
            d.call("STOP", kwargs, arg_hint="STOP also takes task: one task id")
            if "STOP" in d.commands
            else None
        )
        # A STOP naming what to stop (the mockup's STOP|{"stream": "x"}) stops only that; a
        # bare STOP stops every task as well.
        targeted = any(v is not None for v in kwargs.values())
        stopped = [] if targeted else d.tasks.stop_all()
        if isinstance(own, dict):
            return {**own, "stopped_tasks": stopped}
        return (
            {"stopped_tasks": stopped} if own is None else {"result": own, "stopped_tasks": stopped}
        )

    def close(self, **kwargs: Any) -> dict[str, Any]:
        """Stop all tasks, release resources, then exit the process cleanly."""
        d = self.d
        if "CLOSE" in d.commands:
            d.commands["CLOSE"].validate(kwargs)  # a typo must not shut the module down
        elif kwargs:
            raise CommandError(f"CLOSE: unknown argument {', '.join(kwargs)}; CLOSE takes none")
        d.run_close_hook(kwargs)
        stopped = d.tasks.stop_all()
        return {"closing": d.name, "stopped_tasks": stopped}

    def help(self, command: str | None = None) -> dict[str, Any]:
        """Each command with its arguments, defaults and first docstring line."""
        names = self.d.pcommands
        entries = [self._help_entry(n) for n in names]
        if command is not None:
            found = [e for e in entries if e["name"] == resolve_name(command, names)]
            if not found:
                raise CommandError(unknown_command_message(command, names))
            return found[0]
        return {"module": self.d.name, "commands": entries}

    def _help_entry(self, name: str) -> dict[str, Any]:
        own = self.d.commands.get(name)
        if own is not None and name not in MERGED:
            return own.help()
        entry = self.table[name].help()
        if own is not None:
            mine = own.help()
            entry["kwargs"] = entry["kwargs"] + mine["kwargs"]
            entry["doc"] = mine["doc"] or entry["doc"]
        entry["kwargs"] = [k for k in entry["kwargs"] if k["name"] != "kwargs"]
        return entry

    def status(self, **kwargs: Any) -> dict[str, Any]:
        """Module name, version, host, uptime, running tasks, LSL clock (plus the module's own
        status)."""
        d = self.d
        status: dict[str, Any] = {
            "module": d.name,
            "version": d.version,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "uptime_s": round(time.time() - d.started, 3),
            "tasks": d.tasks.list(),
            "connections": d.connections(),
            "session": d.experiment.describe(),
        }
        if "STATUS" in d.commands:
            own = d.call("STATUS", kwargs)
            if isinstance(own, dict):
                status.update({k: v for k, v in own.items() if k not in ("module", "version")})
            elif own is not None:
                status["state"] = own
        elif kwargs:
            raise CommandError(f"STATUS: unknown argument {', '.join(kwargs)}; STATUS takes none")
        status["lsl_clock"] = lsl_clock()  # read last: the reply leaves right after
        return status

    def auth(self, token: str) -> bool:
        """Authenticate this connection (needed when the server binds beyond loopback)."""
        if not isinstance(token, str):
            raise CommandError("AUTH: argument 'token' must be a string")
        if self.d.token is None:
            return True
        session = self.d.session
        if not hmac.compare_digest(token.encode(), self.d.token.encode()):
            self._refuse(session)
        if session is not None:
            session.auth_failures = 0
        if session is not None:
            session.authed = True
        return True

    def _refuse(self, session: Any) -> None:
        """A wrong token: logged (never the token itself), answered late, and the connection
        closed after ``AUTH_MAX_FAILURES``. Wrong answers are serialised server-wide, so guessing
        runs at ``1 / AUTH_FAIL_DELAY_S`` tries per second whatever the number of connections."""
        peer = str(getattr(session, "peer", "?"))
        with self._fail_lock:
            time.sleep(AUTH_FAIL_DELAY_S)
        failures = getattr(session, "auth_failures", 0) + 1
        if session is not None:
            session.auth_failures = failures
        self.d.log.warning("wrong AUTH token", peer=peer, failures=failures)
        if failures >= AUTH_MAX_FAILURES and session is not None:
            session.closing = True
            raise CommandError(f"AUTH: wrong token; connection closed after {failures} failures")
        raise CommandError("AUTH: wrong token")

    def subscribe(self, enable: bool = True) -> bool:
        """Receive unsolicited ``{"event": ...}`` lines (status changes, callbacks) on this connection."""
        session = self.d.session
        if session is not None:
            session.subscribed = bool(enable)
        return bool(enable)

    # -- the experiment session (shared_utils.protocol.session) --------------------------------
    def expinfo(self, **kwargs: Any) -> dict[str, Any]:
        """Who this module is, its session status, whether it is the main sync, what it needs."""
        reply = {**module_identity(self.d.name, self.d.version), "main_sync": False, "needs": []}
        return self._exp_step("EXPINFO", None, kwargs, reply)

    def expinit(self, exp_ref: str, **kwargs: Any) -> dict[str, Any]:
        """Prepare for session exp_ref (a repeat for the same exp_ref changes nothing)."""
        return self._exp_step("EXPINIT", lambda s: s.init(exp_ref), {"exp_ref": exp_ref, **kwargs})

    def expstart(self, exp_ref: str, **kwargs: Any) -> dict[str, Any]:
        """Start session exp_ref (after EXPINIT; a repeat changes nothing)."""
        return self._exp_step(
            "EXPSTART", lambda s: s.start(exp_ref), {"exp_ref": exp_ref, **kwargs}
        )

    def expstatus(self, **kwargs: Any) -> dict[str, Any]:
        """The session status: connected, initialized, running or stopped."""
        return self._exp_step("EXPSTATUS", None, kwargs)

    def expend(self, **kwargs: Any) -> dict[str, Any]:
        """End the running session cleanly (a repeat changes nothing)."""
        return self._exp_step("EXPEND", lambda s: s.end(), kwargs)

    def expinterrupt(self, **kwargs: Any) -> dict[str, Any]:
        """Stop the session after an error elsewhere (error, message: why)."""
        reason = {k: kwargs[k] for k in ("error", "message") if k in kwargs} or {
            "error": "interrupted"
        }
        return self._exp_step("EXPINTERRUPT", lambda s: s.end(reason), kwargs)

    def expcleanup(self, **kwargs: Any) -> dict[str, Any]:
        """Forget the ended session (not while one runs)."""
        return self._exp_step("EXPCLEANUP", lambda s: s.cleanup(), kwargs)

    def _exp_step(
        self,
        name: str,
        step: Callable[[SessionState], bool] | None,
        kwargs: dict[str, Any],
        base: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Check the transition on a copy, run the module's own handler, then commit.

        A module refusing (CommandError) leaves the state as it was; a repeated message (the
        transition says nothing changes) does not run the module's handler again.
        """
        d = self.d
        with self._exp_lock:
            new = copy.deepcopy(d.experiment)
            changed = step(new) if step is not None else True
            own = d.call(name, kwargs) if changed and name in d.commands else None
            d.experiment = new
            reply = {**(base or {}), **new.describe()}
            if isinstance(own, dict):
                reply.update(own)
            elif own is not None:
                reply["result"] = own
            if step is not None and not changed:
                reply["repeat"] = True
            return reply
