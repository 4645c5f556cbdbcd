"""The conformance tool: passes on our server and the C example, names the rule a module breaks,
and tells required rules (failures) from recommended ones (warnings, failures with --strict)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, free_port, stop_process_group, wait_until_up
from wire_helpers import dareplane_server_class

from shared_utils.conformance import failures, run_checks
from shared_utils.server import DefaultServer

RULES = [f"R{i}" for i in range(1, 17)]
RECOMMENDED = ["R7", "R8", "R10", "R12", "R13", "R15", "R16"]


def conformance_cli(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared_utils.conformance", f"127.0.0.1:{port}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def our_server() -> Iterator[DefaultServer]:
    def echo(**kwargs: Any) -> dict:
        """Return the arguments."""
        return kwargs

    s = DefaultServer(0, pcommand_map={"ECHO": echo}, name="conf")
    s.init_server()
    s.start_in_thread()
    yield s
    s.request_stop()
    assert s.wait_closed(10)


def test_our_server_passes_every_rule(our_server: DefaultServer) -> None:
    """run_checks reports every rule, required and recommended, passing on DefaultServer."""
    results = run_checks("127.0.0.1", our_server.port)
    assert [r.rule for r in results] == RULES
    assert [r for r in results if not r.ok] == []
    assert [r.rule for r in results if r.level == "recommended"] == RECOMMENDED


def test_cli_exit_code_zero_and_per_rule_lines(our_server: DefaultServer) -> None:
    """The CLI prints PASS per rule and exits 0."""
    out = conformance_cli(our_server.port)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("PASS") == 16
    assert "16/16 pass; all required rules pass" in out.stdout


def test_cli_exit_code_two_when_nothing_listens() -> None:
    """No module at the address: exit 2 with a message."""
    out = conformance_cli(free_port())
    assert out.returncode == 2
    assert "cannot connect" in out.stderr


def test_a_module_whose_help_disagrees_gets_only_an_r10_warning() -> None:
    """A module overriding HELP with a different list is caught by R10 and nothing else; R10 is
    recommended, so the module passes unless --strict."""

    def bad_help() -> dict:
        """HELP that forgets most commands."""
        return {"module": "bad", "commands": [{"name": "UP"}]}

    s = DefaultServer(0, pcommand_map={"HELP": bad_help}, name="bad")
    s.init_server()
    s.start_in_thread()
    try:
        results = run_checks("127.0.0.1", s.port)
    finally:
        s.request_stop()
        s.wait_closed(10)
    failed = [r for r in results if not r.ok]
    assert [r.rule for r in failed] == ["R10"]
    assert "GET_PCOMMS and HELP differ" in failed[0].detail
    assert failed[0].verdict == "WARN"
    assert failures(results) == []
    assert failures(results, strict=True) == ["R10"]


def test_dareplane_server_fails_with_the_rules_named() -> None:
    """dareplane-utils' server (banner, ';' only, no JSON) fails R1 and R4; the CLI exits 1."""
    srv = dareplane_server_class()(port=free_port(), ip="127.0.0.1", name="dp", pcommand_map={})
    srv.init_server()
    t = threading.Thread(target=srv.start_listening, daemon=True)
    t.start()
    try:
        out = conformance_cli(srv.port, "--timeout", "0.5", "--rule", "R1", "--rule", "R4")
    finally:
        srv.shutdown()
        t.join(10)
    assert out.returncode == 1, out.stdout
    assert "R1  FAIL" in out.stdout
    assert "on accept" in out.stdout
    assert "R4  FAIL" in out.stdout
    assert "FAILED: R1, R4" in out.stdout


def test_raw_echo_server_fails() -> None:
    """A server that echoes bytes back is not a module: R1 fails with what it sent."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(0.2)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        results = run_checks("127.0.0.1", lsock.getsockname()[1], timeout=0.5, rules=["R1", "R5"])
    finally:
        stop.set()
        t.join(10)
        lsock.close()
    assert [r.ok for r in results] == [False, False]
    assert "reply to UP is not a JSON object: b'UP'" in results[0].detail


def test_c_example_module_passes_every_rule(c_module: Path) -> None:
    """The C module, compiled with -Wall -Werror, passes all rules, recommended ones included;
    CLOSE exits it with 0."""
    port = free_port()
    proc = subprocess.Popen(
        [str(c_module), f"--port={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until_up(port, proc)
        out = conformance_cli(port, "--strict")
        assert out.returncode == 0, out.stdout + out.stderr
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b'ECHO|{"a": "x;y"}\nCLOSE\n')
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        assert data.splitlines()[0] == b'{"ok": true, "cmd": "ECHO", "result": {"a": "x;y"}}'
        assert b'"closing": "c_module"' in data
        assert proc.wait(20) == 0
    finally:
        stop_process_group(proc)
        if proc.stdout:
            proc.stdout.close()
