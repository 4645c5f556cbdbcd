"""What every module's click entry point shares: common options and ``run_module``.

Keeping this in one place means every service answers ``--help`` the same way and starts the
same way: logging configured once, loopback LSL unless the user chose a config, server bound.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
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
                help="Shared secret clients send with AUTH (required off loopback; once given, "
                "required on loopback too). Prefer $MESH_TOKEN or --token-file: a command-line "
                "value shows in `ps`.",
            ),
            click.option(
                "--token-file",
                default=None,
                envvar="MESH_TOKEN_FILE",
                type=click.Path(dir_okay=False),
                help="Read the token from the first line of this file.",
            ),
            click.option(
                "--name", "module_name", default=None, help="Module name in logs and STATUS."
            ),
            click.option(
                "--data-dir",
                default="data",
                envvar="MESH_DATA_DIR",
                show_default=True,
                type=click.Path(file_okay=False),
                help="The mesh's data folder: relative file names in commands resolve here "
                "(the control room sets it for every module it starts).",
            ),
            click.option(
                "--allow-absolute-paths",
                is_flag=True,
                help="Let commands name absolute paths (outside the data folder).",
            ),
            click.option(
                "--exit-on-stdin-eof",
                is_flag=True,
                envvar="MESH_EXIT_ON_STDIN_EOF",
                help="Shut down when stdin reaches end of file: a module started over ssh ends "
                "with the ssh connection (the control room sets this for remote modules).",
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
    token_file: str | None = None,
    module_name: str | None = None,
    data_dir: str | None = None,
    allow_absolute_paths: bool = False,
    exit_on_stdin_eof: bool = False,
    inlet_reserve_ms: int = 0,
    on_ready: Callable[[Any], None] | None = None,
) -> None:
    """Set up logging and LSL (the one place a module does), build its commands, serve them.

    ``build`` is a factory taking the ``DefaultServer`` (with ``data_dir`` and
    ``allow_absolute_paths`` set from the options) and returning the command map; it runs
    after logging and LSL are set up, so the core it builds logs to the central receiver from its
    first record and its first LSL call sees the right configuration. (A ready-made command map is
    accepted too.) ``inlet_reserve_ms`` bounds liblsl's per-inlet pre-reservation (recorders).
    ``exit_on_stdin_eof``: shut down when stdin closes (a module started over ssh, whose parent
    is on another host). Blocks until CLOSE, SIGTERM or SIGINT.
    """
    from shared_utils.logging import configure_logging, get_logger, shipper
    from shared_utils.paths import DATA_ENV
    from shared_utils.protocol.server import DefaultServer
    from shared_utils.streams.lsl import setup_lsl

    name = module_name or name
    console = os.environ.get("MESH_LOG_CONSOLE", "1").lower() not in ("0", "false", "no", "off")
    configure_logging(name, level=log_level, log_server=log_server, console=console)
    setup_lsl(inlet_reserve_ms)
    log = get_logger(name)
    token = _resolve_token(token, token_file, log)
    ship = shipper()
    if token and ship is not None:
        ship.token = token  # a receiver on another host wants it first on each connection
    server = DefaultServer(port, ip=ip, name=name, token=token)
    # The data folder every command's file names resolve against (shared_utils.paths); children
    # (an export job, a PsychoPy child) inherit it through the environment.
    os.environ[DATA_ENV] = str(Path(data_dir or "data").expanduser().resolve())
    server.data_dir = Path(os.environ[DATA_ENV])
    server.allow_absolute_paths = allow_absolute_paths
    try:
        server.set_commands(build(server) if callable(build) else build)
    except Exception as exc:  # a module that cannot build its core says why and exits non-zero
        log.error("cannot start", error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(2) from exc
    _exit_with_parent(server)
    if exit_on_stdin_eof:
        _exit_on_stdin_eof(server, log)
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


def _resolve_token(token: str | None, token_file: str | None, log: Any) -> str | None:
    """The token from ``--token-file`` or ``--token``/``$MESH_TOKEN``; warn when it is on argv."""
    if token_file:
        try:
            first = Path(token_file).read_text().splitlines()
        except OSError as exc:
            log.error("cannot read --token-file", path=token_file, error=exc.strerror)
            raise SystemExit(2) from exc
        token = first[0].strip() if first else ""
        if not token:
            log.error("--token-file is empty", path=token_file)
            raise SystemExit(2)
        return token
    ctx = click.get_current_context(silent=True)
    if token and ctx is not None:
        source = ctx.get_parameter_source("token")
        if source is click.core.ParameterSource.COMMANDLINE:
            log.warning(
                "--token on the command line is visible to every user in `ps`; "
                "use $MESH_TOKEN or --token-file"
            )
    return token or None


PARENT_GRACE_S = 2.5  # a clean shutdown after the parent died may take this long, then exit hard


def _exit_with_parent(server: Any) -> None:
    """When a supervisor set ``MESH_PARENT_PID``, shut down if that process goes away.

    This is how modules avoid becoming orphans that hold their ports after a control room is
    killed with SIGKILL. The watch thread polls with plain sleeps (no lock another thread could
    hold) and then shuts down as :func:`_shut_down_within_grace` does.
    """
    import threading
    import time

    from shared_utils.platform.processes import parent_alive

    parent = os.environ.get("MESH_PARENT_PID")
    if not parent or not parent.isdigit():
        return
    pid = int(parent)

    def watch() -> None:
        while not server.closed:
            if not parent_alive(pid):
                _shut_down_within_grace(server)
                return
            time.sleep(0.25)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _exit_on_stdin_eof(server: Any, log: Any) -> None:
    """Shut down when stdin reaches end of file.

    A control room on another host cannot be watched by pid (``MESH_PARENT_PID`` names a process
    of that other machine), but the ssh session it started us in can: our stdin is its channel, and
    sshd closes it when the ssh client exits, is killed, or its connection drops (the server's
    ``ClientAliveInterval`` bounds how long a dead network takes to notice). Whatever arrives on
    stdin is read and ignored.
    """
    import threading

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass  # no stdin at all counts as closed
        if not server.closed:
            log.warning("stdin closed (the ssh session that started this module ended); stopping")
            _shut_down_within_grace(server)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _shut_down_within_grace(server: Any) -> None:
    """Ask for a clean shutdown; if it has not finished after ``PARENT_GRACE_S``, leave with
    ``os._exit`` (what is written to disk stays written), so the module is gone within 3 s
    whatever state it is in."""
    import time

    server.request_stop()
    deadline = time.monotonic() + PARENT_GRACE_S
    while not server.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.closed:
        os._exit(3)
