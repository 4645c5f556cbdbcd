"""Shared fixtures: loopback-only LSL, free ports, module subprocesses that are always cleaned up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ("cr_helpers",)  # control-room fixtures: room_factory, running_up
# Before anything imports pylsl: keep every LSL packet on this machine (children inherit it).
os.environ["LSLAPICFG"] = str(ROOT / "config" / "lsl_loopback.cfg")
os.environ.setdefault("MESH_LOG_SERVER", "none")  # modules under test do not look for port 9020


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Block until the module on ``port`` answers ``UP`` (newline mode), or fail with its output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"module exited with {proc.returncode} before UP:\n{out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(b"UP\n")
                if b'"ok": true' in s.recv(4096):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no UP from port {port} within {timeout} s")


def stop_process_group(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout)


@pytest.fixture(name="free_port")
def _free_port() -> Callable[[], int]:
    return free_port


@pytest.fixture
def module_process() -> Iterator[Callable[..., tuple[subprocess.Popen, int]]]:
    """Start ``python -m <module> --port P [args]``; returns (proc, port) once it answers UP.

    ``wrap``: a launcher command that ends by exec'ing the rest of the line (``unshare ...``).
    """
    procs: list[subprocess.Popen] = []

    def start(
        module: str,
        *args: str,
        port: int | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 30.0,
        wrap: tuple[str, ...] = (),
    ) -> tuple[subprocess.Popen, int]:
        port = port or free_port()
        proc = subprocess.Popen(
            [*wrap, sys.executable, "-m", module, "--port", str(port), *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        procs.append(proc)
        if wait:
            wait_until_up(port, proc, timeout)
        return proc, port

    yield start
    for p in procs:
        stop_process_group(p)
        if p.stdout:
            p.stdout.close()


@pytest.fixture
def make_server() -> Iterator[Callable[..., Any]]:
    """Start in-process ``DefaultServer``s in threads (named "test_module" unless told); each is
    stopped at teardown and must shut down."""
    from shared_utils.server import DefaultServer

    servers: list[DefaultServer] = []

    def make(commands: dict[str, Any] | None = None, port: int = 0, **kwargs: Any) -> DefaultServer:
        kwargs.setdefault("name", "test_module")
        s = DefaultServer(port, pcommand_map=commands or {}, **kwargs)
        s.tasks.join_timeout_s = 0.5  # tasks that ignore their stop event do not slow teardown
        s.tasks.term_timeout_s = 0.5
        s.init_server()
        s.start_in_thread()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.request_stop()
        assert s.wait_closed(10), "server did not shut down"


@pytest.fixture(scope="session")
def display() -> Iterator[str]:
    """$DISPLAY, or a private Xvfb for the whole run (stopped at its end). Raises rather than
    skips: the presenter's tests need a display."""
    from shared_utils.platform.xvfb import display_or_xvfb

    name, vd = display_or_xvfb()
    yield name
    if vd is not None:
        vd.stop()


@pytest.fixture
def lsl_name(request: pytest.FixtureRequest) -> str:
    """A stream name no other test uses."""
    return f"{request.node.name[:40]}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def c_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/modules/c built with its Makefile and warnings as errors (skips without gcc)."""
    import shutil

    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to build the C module (apt-get install gcc make)")
    build = tmp_path_factory.mktemp("c_module")
    for src in (ROOT / "examples" / "modules" / "c").iterdir():
        shutil.copy(src, build / src.name)
    subprocess.run(
        ["make", "-C", str(build), "CC=gcc", "CFLAGS=-O2 -Wall -Wextra -Werror -std=c11"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return build / "c_module"
