"""Interop both ways with dareplane-utils 0.0.24, unmodified.

Our ModuleClient drives their DefaultServer (banner, ';', UP, GET_PCOMMS, commands run without
replies); their launcher + ModuleConnection, as their control room uses them, start and drive
our module (UP -> 1, GET_PCOMMS -> A|B|..., commands run).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, free_port, wait_until_up
from dareplane_utils.module_handling.communication import SocketCommunicator
from dareplane_utils.module_handling.launcher import PythonLauncher
from dareplane_utils.module_handling.module_connection import ModuleConnection
from wire_helpers import dareplane_server_class, wait_for

from shared_utils.client import ModuleClient
from shared_utils.errors import ModuleError


@pytest.fixture
def dareplane_server() -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    calls: list[dict[str, Any]] = []

    def start(**kwargs: Any) -> int:
        calls.append(kwargs)
        return 0

    srv = dareplane_server_class()(
        port=free_port(), ip="127.0.0.1", name="dp_mod", pcommand_map={"START": start}
    )
    srv.init_server()
    t = threading.Thread(target=srv.start_listening, daemon=True)
    t.start()
    yield srv, calls
    srv.shutdown()
    t.join(10)


def test_our_client_drives_a_dareplane_server(
    dareplane_server: tuple[Any, list[dict[str, Any]]],
) -> None:
    """Auto-detects the banner, then UP, GET_PCOMMS and a command with kwargs work."""
    srv, calls = dareplane_server
    with ModuleClient("127.0.0.1", srv.port, timeout=5) as c:
        assert c.send("UP") is True
        assert c.protocol == "dareplane"
        assert c.banner == "Connected to dp_mod"
        assert c.send("GET_PCOMMS") == ["START", "STOP", "CLOSE", "GET_PCOMMS", "UP"]
        assert c.send("START", channels=8, name="x") is None  # Dareplane never replies
        assert c.send("START") is None
        wait_for(lambda: len(calls) == 2, "both START calls to run on the Dareplane server")
        assert c.up() is True
    assert calls == [{"channels": 8, "name": "x"}, {}]


def test_payloads_dareplane_would_mangle_are_refused(
    dareplane_server: tuple[Any, list[dict[str, Any]]],
) -> None:
    """';' or '|' in a payload would be cut by their server: refused; non-ASCII goes escaped."""
    srv, calls = dareplane_server
    with ModuleClient("127.0.0.1", srv.port) as c:
        for bad in ({"note": "a;b"}, {"note": "a|b"}):
            with pytest.raises(ModuleError, match="cannot take ';', '[|]' or non-ASCII"):
                c.send("START", **bad)
        with pytest.raises(ModuleError, match="not sending STÄRT"):
            c.send("STÄRT")
        assert c.send("START", name="Jürgen") is None  # json.dumps escapes it to ASCII
        wait_for(lambda: len(calls) == 1, "the valid START to run")
    assert calls == [{"name": "Jürgen"}]


def test_dareplane_protocol_forced_reads_banner(
    dareplane_server: tuple[Any, list[dict[str, Any]]],
) -> None:
    """protocol='dareplane' skips detection and still consumes the banner."""
    srv, _ = dareplane_server
    with ModuleClient("127.0.0.1", srv.port, protocol="dareplane") as c:
        assert c.send("UP") is True
        assert c.banner == "Connected to dp_mod"


def test_their_module_connection_drives_our_module(tmp_path: Path) -> None:
    """Their PythonLauncher starts our module with --ip=/--port=; ModuleConnection drives it."""
    port = free_port()
    launcher = PythonLauncher(
        "tests.sample_module", cwd=ROOT, kwargs={"ip": "127.0.0.1", "port": port}
    )
    comm = SocketCommunicator("127.0.0.1", port, "sample", retry_after_s=0.2)
    mc = ModuleConnection("sample", launcher, comm)
    mc.launch_module()
    try:
        wait_until_up(port, launcher.process)
        mc.connect_to_module()  # reads (and here gets no) banner, as their control room does
        mc.send_message(b"UP")
        assert mc.receive_message(64) == b"1"
        mc.send_message(b"GET_PCOMMS")
        names = mc.receive_message(4096).decode().split("|")
        assert names[:2] == ["ECHO", "SLOW"]
        assert {"STOP", "CLOSE", "GET_PCOMMS", "UP", "TOUCH"} <= set(names)
        target = tmp_path / "ran.txt"
        mc.send_message(f'TOUCH|{{"path": "{target}", "text": "a;b|c"}}'.encode())
        wait_for(target.exists, "TOUCH sent by ModuleConnection to run")
        assert target.read_text() == "a;b|c"
        mc.send_message(b"UP")  # nothing was replied to TOUCH, so the next byte is UP's
        assert mc.receive_message(64) == b"1"
    finally:
        proc = launcher.process
        mc.stop()  # their teardown: SIGTERM the process group
    assert proc is not None
    assert proc.wait(20) == 0
