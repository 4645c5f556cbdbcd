"""What the control-room test files share: config snippets, a ControlRoom fixture, and running
``python -m control_room up`` as its own process (reading the pids and ports it prints)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import helpers
import pytest
from conftest import ROOT, free_port

from control_room.config import load_config
from control_room.ports import port_in_use
from control_room.room import ControlRoom

PY = sys.executable
ECHO = "tests.cr_modules.echo"
RAW = ["python3", "tests/cr_modules/raw_dareplane.py", "--port", "{port}"]

wait_for = partial(helpers.wait_for, timeout=30.0)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on ``port`` any more (it can be bound again)."""
    return not port_in_use(host, port)


def header(tmp_path: Path, markers: str, port: int = 0, extra: str = "") -> str:
    return f"""
[control_room]
port = {port}
pub_port = 0
log_port = 0
web_port = 0
log_dir = "{tmp_path / "logs"}"
marker_stream = "{markers}"
watchdog_s = 0.2
{extra}
"""


def echo(
    name: str,
    *extra: str,
    after: str = "",
    port: int = 0,
    restart: str = "on-failure",
    restart_delay: float = 0.1,
    more: str = "",
) -> str:
    """A ``[modules.<name>]`` table for tests/cr_modules/echo.py (``more``: extra TOML lines)."""
    args = ", ".join(json.dumps(a) for a in ("--name", name, *extra))
    dep = f"after = [{after}]" if after else ""
    return f"""
[modules.{name}]
module = "{ECHO}"
port = {port}
args = [{args}]
restart = "{restart}"
restart_delay_s = {restart_delay}
{dep}
{more}
"""


@pytest.fixture
def room_factory(tmp_path: Path, lsl_name: str) -> Iterator[Callable[..., ControlRoom]]:
    """Write a config (header + ``body``), start a ControlRoom in this process, stop it at teardown."""
    rooms: list[ControlRoom] = []

    def make(body: str, start: bool = True, extra: str = "") -> ControlRoom:
        path = tmp_path / f"mesh{len(rooms)}.toml"
        path.write_text(header(tmp_path, lsl_name, extra=extra) + body)
        room = ControlRoom(load_config(path))
        rooms.append(room)
        if start:
            room.up()
        return room

    yield make
    for r in rooms:
        r.down()


def cli(
    *args: str, port: int, timeout: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m control_room --port PORT ARGS`` to the end (``env`` is added to ours)."""
    return subprocess.run(
        [PY, "-m", "control_room", "--port", str(port), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@dataclass
class Up:
    """A running ``control-room up`` process: its port and each module's (pid, port)."""

    proc: subprocess.Popen
    port: int
    modules: dict[str, tuple[int, int]] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[object]:  # ``proc, port = running_up(body)``
        return iter((self.proc, self.port))


def spawn_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m control_room ARGS`` in its own session, output (stdout + stderr) piped."""
    return subprocess.Popen(
        [PY, "-m", "control_room", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def start_up(cfg: Path, body_header: str, body: str, env: dict[str, str] | None = None) -> Up:
    """Write ``cfg`` and run ``control-room up`` on it in its own session; wait until it runs.

    The status table it prints once ready gives every module's pid and port.
    """
    port = free_port()
    cfg.write_text(body_header.replace("port = 0\n", f"port = {port}\n", 1) + body)
    proc = spawn_cli("up", str(cfg), env=env)
    up = Up(proc, port)
    table = False
    for line in proc.stdout:  # type: ignore[union-attr]
        up.output.append(line)
        if line.startswith("module ") and "pid" in line:
            table = True
        elif table and line.startswith("log file:"):
            return up
        elif table:
            name, _state, mport, pid, *_ = line.split()
            up.modules[name] = (int(pid), int(mport))
        if "start-up failed" in line:
            break
    proc.wait(30)
    raise AssertionError(f"control room did not start: {''.join(up.output)}")


@pytest.fixture
def running_up(tmp_path: Path, lsl_name: str) -> Iterator[Callable[..., Up]]:
    """Run ``python -m control_room up CONFIG`` as its own process; killed at teardown."""
    ups: list[Up] = []

    def start(body: str, env: dict[str, str] | None = None, extra: str = "") -> Up:
        up = start_up(
            tmp_path / f"up{len(ups)}.toml", header(tmp_path, lsl_name, extra=extra), body, env
        )
        ups.append(up)
        return up

    yield start
    for up in ups:
        kill_up(up)


def kill_up(up: Up) -> None:
    """SIGKILL the control room's session and every module it listed; reap the control room."""
    p = up.proc
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)
    for pid, _ in up.modules.values():
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if p.stdout:
        p.stdout.close()
