"""What every module's click entry point shares: common options and ``run_module``.

Keeping this in one place means every service answers ``--help`` the same way and starts the
same way: logging configured once, loopback LSL unless the user chose a config, server bound.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from shared_utils.lsl_config import use_loopback


def module_options(default_port: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--port --ip --log-level --log-server --token --name`` to a click command."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        opts = [
            click.option(
                "--port",
                type=int,
                default=default_port,
                show_default=True,
                help="TCP port for commands (0 picks a free one).",
            ),
            click.option(
                "--ip",
                default="127.0.0.1",
                show_default=True,
                help="Address to bind; anything but loopback needs --token.",
            ),
            click.option(
                "--log-level",
                default="INFO",
                show_default=True,
                type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
            ),
            click.option(
                "--log-server",
                default=None,
                envvar="MESH_LOG_SERVER",
                help="host:port of the central log receiver (default 127.0.0.1:9020; 'none' disables).",
            ),
            click.option(
                "--token",
                default=None,
                envvar="MESH_TOKEN",
                help="Shared secret clients send with AUTH (required off loopback).",
            ),
            click.option(
                "--name", "module_name", default=None, help="Module name in logs and STATUS."
            ),
        ]
        for opt in reversed(opts):
            f = opt(f)
        return f

    return deco


def run_module(
    name: str,
    commands: dict[str, Callable[..., Any]] | Callable[[Any], dict[str, Callable[..., Any]]],
    *,
    port: int,
    ip: str = "127.0.0.1",
    log_level: str = "INFO",
    log_server: str | None = None,
    token: str | None = None,
    module_name: str | None = None,
    on_ready: Callable[[Any], None] | None = None,
) -> None:
    """Configure logging and LSL, serve ``commands`` until CLOSE or a signal.

    ``commands`` is a command map, or a function taking the ``DefaultServer`` and returning one
    (for modules that start tasks through ``server.tasks`` or send callbacks).
    """
    from shared_utils.logging import configure_logging, get_logger
    from shared_utils.server import DefaultServer

    name = module_name or name
    use_loopback()
    console = os.environ.get("MESH_LOG_CONSOLE", "1").lower() not in ("0", "false", "no", "off")
    configure_logging(name, level=log_level, log_server=log_server, console=console)
    log = get_logger(name)
    server = DefaultServer(port, ip=ip, name=name, token=token)
    server.set_commands(commands(server) if callable(commands) else commands)
    _exit_with_parent(server)
    try:
        server.init_server()
    except (OSError, RuntimeError) as exc:
        log.error("cannot start", error=str(exc))
        raise SystemExit(2) from exc
    if on_ready is not None:
        on_ready(server)
    log.info("ready", port=server.port, pid=os.getpid())
    server.start_listening()


def _exit_with_parent(server: Any) -> None:
    """When a supervisor set ``MESH_PARENT_PID``, shut down cleanly if that process goes away.

    This is how modules avoid becoming orphans that hold their ports after a control room is
    killed with SIGKILL.
    """
    import threading
    import time

    parent = os.environ.get("MESH_PARENT_PID")
    if not parent or not parent.isdigit():
        return
    pid = int(parent)

    def watch() -> None:
        while not server.wait_closed(0.5):
            if os.getppid() != pid:
                server.request_stop()
                return
            time.sleep(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
