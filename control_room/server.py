"""The control room's own commands: it is a module on the same protocol as the others.

So the CLI, a script or ``nc`` drive a running session the same way they drive any module:
``STATUS``, ``MODULES``, ``SEND``, ``MACRO``, ``MACROS``, ``LOGS``, ``DOWN``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared_utils.errors import CommandError, CommandFailed, ModuleError

if TYPE_CHECKING:
    from control_room.room import ControlRoom


def build_commands(room: ControlRoom) -> dict[str, Callable[..., Any]]:
    """Command map for the control room's DefaultServer."""

    def status() -> dict[str, Any]:
        """Modules with their state, ports and pids; macros; log file; PUB address."""
        return room.status()

    def modules() -> list[dict[str, Any]]:
        """One entry per module: name, state, kind, host, port, pid, restarts."""
        return list(room.module_info().values())

    def send(
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
            return room.send(module, cmd, kwargs or {}, source="cli", timeout=timeout_s)
        except KeyError as exc:
            raise CommandError(str(exc.args[0])) from None
        except CommandFailed as exc:
            raise CommandError(f"{module}: {exc.cmd} failed: {exc.error}") from None
        except ModuleError as exc:
            raise CommandError(f"{module}: {exc}") from None

    def macro(name: str, kwargs: dict | None = None, wait: bool = True) -> dict[str, Any]:
        """Run a macro; with wait=true reply when done with every step's reply."""
        from control_room.macros import MacroError

        if name not in room.cfg.macros:
            raise CommandError(
                f"no macro named {name!r}; macros: {', '.join(room.cfg.macros) or 'none'}"
            )
        if room.running_macro is not None:
            raise CommandError(f"macro {room.running_macro!r} is still running; wait for it")
        if not wait:
            threading.Thread(target=_quiet_macro, args=(room, name, kwargs), daemon=True).start()
            return {"macro": name, "started": True}
        try:
            return room.run_macro(name, kwargs).as_dict()
        except MacroError as exc:
            raise CommandError(_failure_text(exc)) from None

    def macros() -> list[dict[str, Any]]:
        """Macros with description, default arguments and number of steps."""
        return [
            {
                "name": m.name,
                "description": m.description,
                "defaults": m.defaults,
                "steps": len(m.steps),
            }
            for m in room.cfg.macros.values()
        ]

    def logs(module: str | None = None, since: int = 0, n: int = 200) -> dict[str, Any]:
        """Recent log records (all modules or one); pass 'next' back as 'since' to follow."""
        if (
            module
            and module not in room.cfg.modules
            and module not in ("control_room", "log_receiver")
        ):
            raise CommandError(f"unknown module {module!r}; modules: {', '.join(room.cfg.modules)}")
        return room.get_logs(module, since, n)

    def down() -> dict[str, Any]:
        """Shut the whole mesh down (STOP, CLOSE, signals) and exit the control room."""
        room.down_requested.set()
        room.stop_event.set()  # cancel a running macro
        return {"shutting_down": True}

    return {
        "STATUS": status,
        "MODULES": modules,
        "SEND": send,
        "MACRO": macro,
        "MACROS": macros,
        "LOGS": logs,
        "DOWN": down,
    }


def _quiet_macro(room: ControlRoom, name: str, kwargs: dict | None) -> None:
    from control_room.macros import MacroError

    try:
        room.run_macro(name, kwargs)
    except MacroError:
        pass  # reported on the bus, the console and in STATUS


def _failure_text(exc: Exception) -> str:
    rep = getattr(exc, "report", None)
    lines = [str(exc)]
    if rep is not None:
        for s in rep.steps:
            mark = "ok" if s.ok else "FAILED"
            lines.append(f"  {s.describe()}: {mark}" + (f" - {s.error}" if s.error else ""))
    return "\n".join(lines)
