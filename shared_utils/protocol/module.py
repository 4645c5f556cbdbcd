"""What every module's click entry point shares: common options and ``run_module``.

Keeping this in one place means every service answers ``--help`` the same way and starts the
same way: logging configured once, loopback LSL unless the user chose a config, server bound.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click


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


CommandMap = dict[str, Callable[..., Any]]


def run_module(
    name: str,
    build: CommandMap | Callable[[Any], CommandMap],
    *,
    port: int,
    ip: str = "127.0.0.1",
    log_level: str = "INFO",
    log_server: str | None = None,
    token: str | None = None,
    module_name: str | None = None,
    inlet_reserve_ms: int = 0,
    on_ready: Callable[[Any], None] | None = None,
) -> None:
    """Set up logging and LSL (the one place a module does), build its commands, serve them.

    ``build`` is a factory taking the ``DefaultServer`` and returning the command map; it runs
    after logging and LSL are set up, so the core it builds logs to the central receiver from its
    first record and its first LSL call sees the right configuration. (A ready-made command map is
    accepted too.) ``inlet_reserve_ms`` bounds liblsl's per-inlet pre-reservation (recorders).
    Blocks until CLOSE, SIGTERM or SIGINT.
    """
    from shared_utils.logging import configure_logging, get_logger
    from shared_utils.protocol.server import DefaultServer
    from shared_utils.streams.lsl import setup_lsl

    name = module_name or name
    console = os.environ.get("MESH_LOG_CONSOLE", "1").lower() not in ("0", "false", "no", "off")
    configure_logging(name, level=log_level, log_server=log_server, console=console)
    setup_lsl(inlet_reserve_ms)
    log = get_logger(name)
    server = DefaultServer(port, ip=ip, name=name, token=token)
    try:
        server.set_commands(build(server) if callable(build) else build)
    except Exception as exc:  # a module that cannot build its core says why and exits non-zero
        log.error("cannot start", error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(2) from exc
    _exit_with_parent(server)
    try:
        server.init_server()
    except (OSError, RuntimeError) as exc:
        log.error("cannot start", error=str(exc))
        server.dispatcher.run_close_hook()
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
