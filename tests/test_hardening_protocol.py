"""Issue 12, protocol level: requests from other protocols, tokens, unreadable lines, bad values,
signal bursts and slow subscribers. Each test failed before the fix it covers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for
from wire_helpers import Wire

from shared_utils.server import DefaultServer

ROOT = Path(__file__).resolve().parent.parent


def _recorder(calls: list[str]) -> dict[str, Callable[..., Any]]:
    def close_cmd() -> None:
        """Remember that CLOSE's hook ran."""
        calls.append("CLOSE")

    def load(path: str = "") -> str:
        """Remember that LOAD ran."""
        calls.append(f"LOAD {path}")
        return "loaded"

    def add(a: float = 0.0) -> float:
        """Add one."""
        return a + 1

    return {"LOAD": load, "ADD": add, "CLOSE": close_cmd}


def _raw(port: int, data: bytes, wait_s: float = 1.0) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it (or ``wait_s``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


# -- 1. cross-protocol requests ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /;CLOSE; HTTP/1.1\r\nHost: 127.0.0.1:8101\r\nUser-Agent: curl/8\r\n\r\n",
        b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 24\r\n\r\nLOAD|{"path": "/x"}\nCLOSE\n',
        b'Host: 127.0.0.1\r\nLOAD|{"path": "y"}\n',
        b"OPTIONS * HTTP/1.1\r\n\r\nCLOSE\n",
    ],
)
def test_http_requests_run_nothing_and_are_closed(
    make_server: Callable[..., DefaultServer], request_bytes: bytes
) -> None:
    """A browser or curl reaching a command port gets its connection closed; nothing runs."""
    calls: list[str] = []
    s = make_server(_recorder(calls))
    out = _raw(s.port, request_bytes)
    assert b'"ok": true' not in out
    assert calls == []
    assert not s.closed
    with Wire(s.port) as w:
        assert w.cmd("UP")["ok"] is True


# -- 2. tokens ----------------------------------------------------------------------------------------
def test_a_token_given_on_loopback_is_enforced(make_server: Callable[..., DefaultServer]) -> None:
    """--token on a loopback bind is not silently ignored: commands wait for AUTH."""
    s = make_server(_recorder([]), token="sesame")
    with Wire(s.port) as w:
        assert "authentication required" in w.cmd("ADD")["error"]
        assert w.cmd("AUTH", token="sesame")["ok"] is True
        assert w.cmd("ADD", a=1)["result"] == 2


def test_wrong_tokens_are_slowed_logged_and_end_the_connection(
    make_server: Callable[..., DefaultServer],
) -> None:
    """Three wrong tokens close the connection; guessing in parallel stays at a few per second."""
    s = make_server({}, token="sesame")
    with Wire(s.port) as w:
        assert w.cmd("AUTH", token="a")["error"] == "AUTH: wrong token"
        assert w.cmd("AUTH", token="b")["error"] == "AUTH: wrong token"
        assert "closed after 3 failures" in w.cmd("AUTH", token="c")["error"]
        assert w.read_until_closed() == b""
    guesses: list[int] = []

    def guess() -> None:
        with Wire(s.port) as w2:
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                if "wrong token" not in w2.cmd("AUTH", token="x").get("error", ""):
                    break
                guesses.append(1)
                if len(guesses) > 100:
                    return

    threads = [threading.Thread(target=guess) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(guesses) <= 12, f"{len(guesses)} guesses answered in about a second"


def test_token_file_and_command_line_warning(
    module_process: Callable[..., Any], tmp_path: Path
) -> None:
    """--token-file is read; --token on the command line works but warns that ps shows it."""
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    proc, port = module_process("tests.sample_module", "--token-file", str(secret), wait=False)
    wait_for(lambda: _auth_ok(port, "from-file"), "AUTH with the token from the file")
    proc2, port2 = module_process("tests.sample_module", "--token", "on-argv", wait=False)
    wait_for(lambda: _auth_ok(port2, "on-argv"), "AUTH with the token from argv")
    proc2.send_signal(signal.SIGTERM)
    out, _ = proc2.communicate(timeout=10)
    assert "visible to every user in `ps`" in out


def _raw_reply(w: Wire, line: bytes) -> dict[str, Any]:
    w.send(line + b"\n")
    return w.reply()


def _auth_ok(port: int, token: str) -> bool:
    try:
        with Wire(port) as w:
            return w.cmd("AUTH", token=token)["ok"] and w.cmd("UP")["ok"]
    except OSError:
        return False


# -- 4./5. unreadable lines and unusable values ------------------------------------------------------
UNREADABLE = [
    b"ADD|" + b"[" * 1000 + b"]" * 1000,
    b'ADD|{"a": ' + b"9" * 5000 + b"}",
    b'{"cmd": "ADD", "kwargs": {"a": ' + b"1" * 4400 + b"}}",
    b'{"cmd": "ADD", "kwargs": ' + b'{"x":' * 900 + b"1" + b"}" * 900 + b"}",
]
UNUSABLE = [
    (b'ADD|{"a": 1e400}', "must be a finite number"),
    (b'ADD|{"a": 123456789012345678901234567890}', "fit in 64 bits"),
    (b'LOAD|{"path": "a\\u0000b"}', "NUL byte"),
    (b'STATUS|{"self": 1}', "'self' cannot be an argument name"),
    (b'STOP|{"self": 1}', "'self' cannot be an argument name"),
    (b'LOAD|{"path": [[[[{"deep": NaN}]]]]}', "finite number"),
    (b'LOAD|{"path": "a\\ud800b.xdf"}', "lone surrogate"),
    (b'LOAD|{"path": {"\\udfff": 1}}', "lone surrogate (\\ud800-\\udfff is not text) in a key"),
]


def test_every_unreadable_line_gets_one_reply(make_server: Callable[..., DefaultServer]) -> None:
    """Deep nesting and 4,300+ digit integers are errors, not dropped connections."""
    s = make_server(_recorder([]))
    with Wire(s.port) as w:
        for line in UNREADABLE:
            reply = _raw_reply(w, line)
            assert reply["ok"] is False, reply
            assert "cannot be read" in reply["error"] or "nested too deeply" in reply["error"]
        assert w.cmd("UP")["ok"] is True


@pytest.mark.parametrize(("line", "error"), UNUSABLE)
def test_unusable_values_are_refused_at_the_boundary(
    make_server: Callable[..., DefaultServer], line: bytes, error: str
) -> None:
    """Non-finite or huge numbers, NUL bytes and reserved names are refused with a reason."""
    calls: list[str] = []
    s = make_server(_recorder(calls))
    with Wire(s.port) as w:
        reply = _raw_reply(w, line)
        assert reply["ok"] is False, reply
        assert error in reply["error"], reply
        assert w.cmd("STATUS")["ok"] is True
    assert calls == []


# -- 7. a burst of signals ----------------------------------------------------------------------------
@pytest.mark.parametrize("attempt", range(20))
def test_a_burst_of_sigterms_always_ends_the_module(
    module_process: Callable[..., Any], attempt: int
) -> None:
    """300 SIGTERMs 0.2 ms apart: the module exits (it used to hang on a lock in 1 of 6 runs)."""
    proc, port = module_process("tests.sample_module", env={"MESH_LOG_SERVER": "none"})
    for _ in range(300):
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            break
        time.sleep(0.0002)
    # 0 after a clean shutdown; -SIGTERM when a late signal lands after Python restored the default
    # handler during interpreter exit. Either way the module is gone, which is what counts.
    assert proc.wait(timeout=10) in (0, -signal.SIGTERM)


# -- 13. slow subscribers cost nobody else anything -----------------------------------------------------
def test_a_subscriber_that_stops_reading_does_not_block_events_or_others(
    make_server: Callable[..., DefaultServer],
) -> None:
    """send_event never waits for a stuck client; the stuck one is dropped once far behind."""
    s = make_server({})
    stuck = socket.create_connection(("127.0.0.1", s.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"SUBSCRIBE\n")
    n, blob = 12_000, "x" * 2000  # 24 MB: three times what a client may fall behind
    with Wire(s.port) as live:
        assert live.cmd("SUBSCRIBE")["ok"] is True
        wait_for(lambda: s.dispatcher.connections() == 2, "both subscribers connected")
        seen: list[int] = []

        def read_live() -> None:
            while len(seen) < n:
                if json.loads(live.line()).get("event") == "tick":
                    seen.append(1)

        reader = threading.Thread(target=read_live, daemon=True)
        reader.start()
        sent = []
        for i in range(n):
            sent.append(s.send_event("tick", i=i, blob=blob))
            if i % 500 == 0:  # a live client keeps up within a few MB; the stuck one never reads
                wait_for(lambda i=i: len(seen) > i - 1500, "the live client to keep up")
        reader.join(60)
        assert len(seen) == n  # the reading client got every event
        assert min(sent) >= 1
        assert sent[-1] == 1  # the stuck client was dropped on the way
        assert live.cmd("UP")["ok"] is True
        wait_for(lambda: s.dispatcher.connections() == 1, "the stuck subscriber dropped")
    stuck.close()


def test_module_exits_when_its_parent_dies_even_mid_command(tmp_path: Path) -> None:
    """MESH_PARENT_PID gone: the module shuts down (clean, or hard after a grace period)."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-m', 'tests.sample_module', '--port', '0'],"
            " env={**os.environ, 'MESH_PARENT_PID': str(os.getpid()), 'MESH_LOG_SERVER': 'none'},"
            " start_new_session=True)\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        time.sleep(1.0)  # let the module start serving
        parent.kill()
        parent.wait()
        wait_for(lambda: not _alive(child), "the orphaned module to exit", timeout=10)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
