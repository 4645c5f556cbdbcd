"""The control room's own commands: it is a module on the same protocol as the others.

So the CLI, a script or ``nc`` drive a running session the same way they drive any module:
``STATUS``, ``MODULES``, ``SEND``, ``MACRO``, ``MACROS``, ``CANCEL``, ``RESTART``, ``LOGS``,
``DOWN``, ``SESSION_START``, ``SESSION_STOP``, ``SESSION_STATUS``. With a mesh token the port enforces it like any module's (``AUTH`` first), also on
loopback.

This module does not import the room: it serves anything that offers :class:`Room` (the control
room passes itself), so the dependency points one way, room -> server.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from control_room.handle import StartError
from control_room.ports import port_holder
from shared_utils.checks import unknown_message
from shared_utils.errors import CommandError, CommandFailed, ModuleError
from shared_utils.protocol.server import DefaultServer

LOG_SOURCES = ("control_room", "log_receiver")


class Room(Protocol):
    """What the command server needs from a control room."""

    cfg: Any
    running_macro: str | None
    stop_event: threading.Event
    down_requested: threading.Event
    sessions: Any  # control_room.session.SessionManager (None before the modules are up)

    def status(self) -> dict[str, Any]: ...
    def module_info(self) -> dict[str, dict[str, Any]]: ...
    def send(
        self, module: str, cmd: str, kwargs: dict[str, Any], *, source: str, timeout: float
    ) -> Any: ...
    def run_macro(self, name: str, kwargs: dict[str, Any] | None = None) -> Any: ...
    def cancel_macro(self, reason: str) -> bool: ...
    def restart_module(self, name: str) -> dict[str, Any]: ...
    def get_logs(self, module: str | None, since: int, n: int) -> dict[str, Any]: ...


def start_command_server(room: Room) -> DefaultServer:
    """Bind the control room's command port and serve :func:`build_commands` from a thread."""
    c = room.cfg.control
    # The mesh token (from token_file or $MESH_TOKEN) protects our own port too; None = open.
    server = DefaultServer(c.port, ip=c.host, name="control_room", token=room.cfg.tokens.mesh)
    server.set_commands(build_commands(room))
    try:
        server.init_server()
    except OSError as exc:
        who = port_holder(c.port) or str(exc)
        raise StartError(
            f"control room: cannot listen on {c.host}:{c.port}: {who}. Is another control "
            "room running (`control-room down`)? Or set [control_room] port."
        ) from None
    server.start_in_thread()
    return server


class RoomCommands:
    """The control room's command functions (their docstrings are what HELP shows)."""

    def __init__(self, room: Room, source: str = "cli") -> None:
        self.room = room
        self.source = source  # what `command` events name as the sender (the dashboard: "web")

    def status(self) -> dict[str, Any]:
        """Modules with their state, ports and pids; macros; log file; PUB address."""
        return self.room.status()

    def modules(self) -> list[dict[str, Any]]:
        """One entry per module: name, state, kind, host, port, pid, restarts."""
        return list(self.room.module_info().values())

    def send(
        self,
        module: str,
        command: str | None = None,
        kwargs: dict | None = None,
        timeout_s: float = 30.0,
        cmd: str | None = None,
    ) -> Any:
        """Send a command (``command`` or ``cmd``) with kwargs to a module; returns its result."""
        cmd = command or cmd
        if not cmd:
            raise CommandError('SEND needs the command name: SEND|{"module": "m", "cmd": "STATUS"}')
        try:
            return self.room.send(module, cmd, kwargs or {}, source=self.source, timeout=timeout_s)
        except KeyError as exc:
            raise CommandError(str(exc.args[0])) from None
        except CommandFailed as exc:
            raise CommandError(f"{module}: {exc.cmd} failed: {exc.error}") from None
        except ModuleError as exc:
            raise CommandError(f"{module}: {exc}") from None

    def macro(self, name: str, kwargs: dict | None = None, wait: bool = True) -> dict[str, Any]:
        """Run a macro; with wait=true reply when done with every step's reply."""
        from control_room.macros import MacroError

        room = self.room
        if name not in room.cfg.macros:
            raise CommandError(unknown_message("macro", name, room.cfg.macros))
        if room.running_macro is not None:
            raise CommandError(f"macro {room.running_macro!r} is still running; wait for it")
        if not wait:
            threading.Thread(target=_quiet_macro, args=(room, name, kwargs), daemon=True).start()
            return {"macro": name, "started": True}
        try:
            return room.run_macro(name, kwargs).as_dict()
        except MacroError as exc:
            raise CommandError(_failure_text(exc)) from None

    def macros(self) -> list[dict[str, Any]]:
        """Macros with description, default arguments and number of steps."""
        return [
            {
                "name": m.name,
                "description": m.description,
                "defaults": m.defaults,
                "steps": len(m.steps),
            }
            for m in self.room.cfg.macros.values()
        ]

    def cancel(self) -> dict[str, Any]:
        """Cancel the running macro: its current step ends, its finally steps still run."""
        running = self.room.running_macro
        if not self.room.cancel_macro("cancelled by CANCEL"):
            raise CommandError("no macro is running")
        return {"cancelled": running}

    def restart(self, module: str) -> dict[str, Any]:
        """Restart one module (also one that failed): stop it if it runs, start, wait until
        ready; its restart budget starts again. Replies with its new state."""
        try:
            return self.room.restart_module(module)
        except KeyError as exc:
            raise CommandError(str(exc.args[0])) from None
        except StartError as exc:
            raise CommandError(f"restart failed: {exc}") from None

    def logs(self, module: str | None = None, since: int = 0, n: int = 200) -> dict[str, Any]:
        """Recent log records (all modules or one); pass 'next' back as 'since' to follow."""
        known = [*self.room.cfg.modules, *LOG_SOURCES]
        if module and module not in known:
            raise CommandError(unknown_message("module", module, known))
        return self.room.get_logs(module, since, n)

    def session_start(
        self,
        subject: str,
        project: str | None = None,
        procedures: list | None = None,
        exp_ref: str | None = None,
    ) -> dict[str, Any]:
        """Start a session: EXPINFO, EXPINIT, EXPSTART to every participant; replies with the
        experiment reference, folder and every participant's status (a repeat changes nothing)."""
        from control_room.session import SessionError

        try:
            return self._sessions().start(
                subject, project, [str(p) for p in procedures or []], exp_ref, source="api"
            )
        except SessionError as exc:
            raise CommandError(str(exc)) from None

    def session_stop(self, interrupt: bool = False, reason: str | None = None) -> dict[str, Any]:
        """Stop the session: EXPEND (or EXPINTERRUPT) then EXPCLEANUP to every participant, in
        reverse order; replies with how each ended and any problems."""
        from control_room.session import SessionError

        why = {"error": "interrupted", "message": reason} if reason else None
        try:
            return self._sessions().stop(interrupt, why, source="api")
        except SessionError as exc:
            raise CommandError(str(exc)) from None

    def session_status(self) -> dict[str, Any]:
        """The running session (reference, folder, participants' status), or the last one."""
        return self._sessions().summary()

    def _sessions(self) -> Any:
        if self.room.sessions is None:
            raise CommandError("the modules are not up yet; no sessions before they are")
        return self.room.sessions

    def down(self) -> dict[str, Any]:
        """Shut the whole mesh down (STOP, CLOSE, signals) and exit the control room."""
        self.room.down_requested.set()
        self.room.stop_event.set()
        self.room.cancel_macro("the control room is shutting down")  # its finally steps run
        return {"shutting_down": True}


def build_commands(room: Room) -> dict[str, Any]:
    """Command map for the control room's DefaultServer."""
    c = RoomCommands(room)
    return {
        "STATUS": c.status,
        "MODULES": c.modules,
        "SEND": c.send,
        "MACRO": c.macro,
        "MACROS": c.macros,
        "CANCEL": c.cancel,
        "RESTART": c.restart,
        "LOGS": c.logs,
        "DOWN": c.down,
        "SESSION_START": c.session_start,
        "SESSION_STOP": c.session_stop,
        "SESSION_STATUS": c.session_status,
    }


def call_own(room: Room, cmd: str, kwargs: dict[str, Any]) -> Any:
    """One of the control room's own commands, called in-process (a macro's ``send =
    "control_room"`` step); a refusal is raised as :class:`CommandFailed`, like a module's."""
    from shared_utils.protocol.commands import unknown_command_message

    commands = build_commands(room)
    func = commands.get(cmd.upper())
    if func is None:
        raise CommandFailed(cmd, unknown_command_message(cmd, list(commands)))
    try:
        return func(**kwargs)
    except (CommandError, TypeError) as exc:
        raise CommandFailed(cmd, str(exc)) from None


def _quiet_macro(room: Room, name: str, kwargs: dict | None) -> None:
    from control_room.macros import MacroError

    try:
        room.run_macro(name, kwargs)
    except MacroError:
        pass  # reported on the bus, the console and in STATUS


def _failure_text(exc: Exception) -> str:
    rep = getattr(exc, "report", None)
    lines = [str(exc)]
    if rep is not None:
        for s in [*rep.steps, *rep.finally_steps]:
            mark = "ok" if s.ok else "FAILED"
            lines.append(f"  {s.describe()}: {mark}" + (f" - {s.error}" if s.error else ""))
    return "\n".join(lines)
