"""A tiny module for control-room tests, built on DefaultServer like every service.

Commands: ECHO (returns its kwargs and remembers them), HISTORY, FAIL (always refused), CRASH
(prints to stdout and stderr, then exits with code 3), CALLBACK (asks the control room to send a
command to another module), OUTLET (creates an LSL marker outlet), ADD (two typed integers).
Options: --needs PORT (exit 5 unless a module answers UP there: proves dependency order), --stamp
FILE (append start/ready times), --die-after S (exit 4 after S seconds), --outlet NAME (publish an
LSL stream at start), --touch FILE (create FILE at start), --wait-file FILE (not ready before FILE
exists).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

import click

from shared_utils.errors import CommandError
from shared_utils.module_cli import module_options, run_module


def _up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"UP\n")
            return b'"ok": true' in s.recv(4096)
    except OSError:
        return False


@click.command()
@module_options(default_port=0)
@click.option("--needs", type=int, default=None)
@click.option("--stamp", default=None)
@click.option("--die-after", type=float, default=None)
@click.option("--outlet", default=None)
@click.option("--touch", default=None)
@click.option("--wait-file", default=None)
def main(
    needs: int | None,
    stamp: str | None,
    die_after: float | None,
    outlet: str | None,
    touch: str | None,
    wait_file: str | None,
    **common: Any,
) -> None:
    name = common.get("module_name") or "echo"
    if stamp:
        with open(stamp, "a") as f:
            f.write(f"{name} start {time.time():.6f}\n")
    if touch:
        open(touch, "a").close()
    while wait_file and not os.path.exists(wait_file):
        time.sleep(0.01)  # not ready until another module has started
    if needs is not None and not _up(needs):
        print(f"{name}: dependency on port {needs} is not up", file=sys.stderr, flush=True)
        raise SystemExit(5)
    history: list[dict[str, Any]] = []
    outlets: list[Any] = []

    def make_outlet(stream: str) -> None:
        import pylsl

        info = pylsl.StreamInfo(stream, "Markers", 1, 0, pylsl.cf_string, f"echo-{os.getpid()}")
        outlets.append(pylsl.StreamOutlet(info))

    def build(server: Any) -> dict[str, Any]:
        def echo(**kwargs: Any) -> dict[str, Any]:
            """Return the arguments."""
            history.append(kwargs)
            return kwargs

        def get_history() -> list[dict[str, Any]]:
            """Every ECHO received."""
            return history

        def fail(**kwargs: Any) -> None:
            """Always refused."""
            raise CommandError("FAIL always fails (on purpose)")

        def crash(code: int = 3) -> None:
            """Print last words and exit."""
            print("echo: about to crash (stdout)", flush=True)
            print("echo: last words on stderr", file=sys.stderr, flush=True)
            threading.Timer(0.05, os._exit, args=(code,)).start()

        def callback(target: str, cmd: str, kwargs: dict | None = None) -> int:
            """Ask the control room to send cmd to target."""
            return server.send_callback(target, cmd, **(kwargs or {}))

        def add(a: int, b: int = 2) -> int:
            """Add two integers (typed arguments, for forms built from HELP)."""
            return a + b

        def outlet_cmd(stream: str) -> str:
            """Create an LSL marker outlet called stream."""
            make_outlet(stream)
            return stream

        return {
            "ECHO": echo,
            "HISTORY": get_history,
            "FAIL": fail,
            "CRASH": crash,
            "CALLBACK": callback,
            "OUTLET": outlet_cmd,
            "ADD": add,
        }

    def on_ready(server: Any) -> None:
        if outlet:
            make_outlet(outlet)
        if stamp:
            with open(stamp, "a") as f:
                f.write(f"{name} ready {time.time():.6f}\n")
        if die_after is not None:
            threading.Timer(die_after, os._exit, args=(4,)).start()

    run_module("echo", build, on_ready=on_ready, **common)


if __name__ == "__main__":
    main()
