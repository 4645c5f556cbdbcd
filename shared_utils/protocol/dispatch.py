"""From a request to ``(ok, result, error)``: command lookup, authentication, argument checks, the
call itself and Dareplane's return conventions. No sockets: tests drive it with bytes.

The transport (:mod:`shared_utils.protocol.server`) frames lines and writes replies; this module
decides what every line means. It never raises: a refused or failing command becomes an error
reply naming what was wrong, and the module keeps running.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from shared_utils import __version__
from shared_utils.checks import resolve_name
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger
from shared_utils.protocol import dareplane
from shared_utils.protocol.builtins import MERGED, OUR_BUILTINS, Builtins
from shared_utils.protocol.commands import Command, make_command, unknown_command_message
from shared_utils.protocol.framing import ProtocolError, Request, parse_request
from shared_utils.protocol.session import SessionState
from shared_utils.protocol.tasks import Task, TaskManager

_ROOT_LOG = logging.getLogger()  # configure_logging sets its level for the whole process


class Session(Protocol):
    """What dispatch knows of a connection: whether it authenticated and subscribed."""

    authed: bool
    subscribed: bool


class Dispatcher:
    """A module's command table (its own commands plus the built-ins) and how to run a request.

    ``connections`` tells STATUS how many clients are connected (the transport knows).
    """

    def __init__(
        self,
        name: str,
        *,
        version: str | None = None,
        token: str | None = None,
        tasks: TaskManager | None = None,
        log: Any = None,
        connections: Callable[[], int] = lambda: 0,
    ) -> None:
        self.name = name
        self.version = version or __version__
        self.token = token
        self.tasks = tasks or TaskManager()
        self.log = log or get_logger("shared_utils.server")
        self.connections = connections
        self.started = time.time()
        self.commands: dict[str, Command] = {}
        self.experiment = SessionState()  # this module's part in an experiment session
        self.builtins = Builtins(self)
        self._local = threading.local()
        self._close_hook_done = False

    # -- the command table ----------------------------------------------------------------------
    def set_commands(self, pcommand_map: dict[str, Callable[..., Any]]) -> None:
        """Replace the module's own commands."""
        self.commands = {k: make_command(k, f) for k, f in pcommand_map.items()}

    @property
    def pcommands(self) -> list[str]:
        """All command names in Dareplane's GET_PCOMMS order, then ours."""
        names = list(self.commands)
        names += [b for b in dareplane.BUILTINS + OUR_BUILTINS if b not in self.commands]
        return names

    @property
    def session(self) -> Session | None:
        """The connection whose command runs on this thread (None outside a command)."""
        return getattr(self._local, "session", None)

    # -- requests -------------------------------------------------------------------------------
    def handle_line(
        self, line: bytes, session: Session | None = None
    ) -> tuple[Request, bool, Any, str | None]:
        """Parse and run one framed line; returns (request, ok, result, error). Never raises."""
        try:
            req = parse_request(line)
        except ProtocolError as exc:
            self.log.warning("bad request", error=str(exc))
            return exc.request or Request(cmd=_guess_cmd(line)), False, None, str(exc)
        ok, result, error = self.dispatch(req, session)
        return req, ok, result, error

    def dispatch(
        self, req: Request, session: Session | None = None
    ) -> tuple[bool, Any, str | None]:
        """Run one request; returns (ok, result, error). Never raises."""
        if session is not None and not session.authed and resolve_name(req.cmd, ["AUTH"]) is None:
            return False, None, 'authentication required: send AUTH|{"token": "..."} first'
        builtins = self.builtins.table
        name = resolve_name(req.cmd, [*builtins, *self.commands])
        if name is None:
            return False, None, unknown_command_message(req.cmd, self.pcommands)
        req.cmd = name
        self._local.session = session
        try:
            if name in builtins and (name not in self.commands or name in MERGED):
                builtin = builtins[name]
                if builtin.accepts_any:  # STOP, STATUS, CLOSE check their own names later
                    builtin.check_values(req.kwargs)
                else:
                    builtin.validate(req.kwargs)
                result = builtin.func(**req.kwargs)
            else:
                result = self.call(name, req.kwargs)
            return True, result, None
        except CommandError as exc:
            return False, None, str(exc)
        except Exception as exc:
            self.log.exception("command raised", cmd=name)
            return (
                False,
                None,
                f"{name} raised {type(exc).__name__}: {exc} (traceback in the module log)",
            )

    def call(self, name: str, kwargs: dict[str, Any], arg_hint: str = "") -> Any:
        """Validate and run a module command; ``arg_hint`` is added to argument errors."""
        cmd = self.commands[name]
        try:
            cmd.validate(kwargs)
        except CommandError as exc:
            if not arg_hint:
                raise
            raise CommandError(f"{exc} ({arg_hint})") from None
        if _ROOT_LOG.isEnabledFor(logging.DEBUG):  # a structlog call costs µs even when filtered
            self.log.debug("command", cmd=name, kwargs=kwargs)
        return self._track(name, cmd.func(**kwargs))

    def _track(self, name: str, value: Any) -> Any:
        """Apply Dareplane's return conventions: (Thread, Event) and Popen become tracked tasks."""
        if isinstance(value, Task):
            return {"task": value.id, "name": value.name}
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[0], threading.Thread)
            and isinstance(value[1], threading.Event)
        ):
            task = self.tasks.adopt_thread(value[0], value[1], name)
            return {"task": task.id, "name": name}
        if isinstance(value, subprocess.Popen):
            task = self.tasks.adopt_process(value, name)
            return {"task": task.id, "name": name, "pid": value.pid}
        return value

    def run_close_hook(self, kwargs: dict[str, Any] | None = None) -> None:
        """The module's own CLOSE, once (on the CLOSE command or at shutdown, whichever is first)."""
        if "CLOSE" in self.commands and not self._close_hook_done:
            self._close_hook_done = True
            try:
                self.call("CLOSE", kwargs or {})
            except Exception:
                self.log.exception("module CLOSE hook failed")


def _guess_cmd(line: bytes) -> str:
    """The command name of a line that could not be parsed, for the error reply (else ``?``)."""
    head = line.split(b"|", 1)[0][:64]
    try:
        text = head.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "?"
    return text if text and not text.startswith("{") else "?"
