"""ModuleClient against real servers: results, typed errors, timeouts, reconnects, events, auth."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
from wire_helpers import wait_for

from shared_utils.client import ModuleClient
from shared_utils.errors import CommandError, CommandFailed, ModuleError, ModuleUnreachable
from shared_utils.server import DefaultServer


def add(a: int, b: float = 1.0) -> float:
    """Add two numbers."""
    return a + b


def refuse() -> None:
    """Always refused."""
    raise CommandError("cannot REFUSE while IDLE; send START first")


def test_send_returns_results_and_raises_typed_errors(
    make_server: Callable[..., DefaultServer],
) -> None:
    """Results come back as Python values; ok:false raises CommandFailed with the message."""
    s = make_server({"ADD": add, "REFUSE": refuse})
    with ModuleClient("127.0.0.1", s.port, protocol="auto") as c:
        assert c.send("UP") is True
        assert c.protocol == "json"  # no banner: our protocol
        assert c.send("ADD", a=2, b=0.5) == 2.5
        with pytest.raises(CommandFailed, match="cannot REFUSE while IDLE") as info:
            c.send("REFUSE")
        assert info.value.cmd == "REFUSE"
        with pytest.raises(CommandFailed, match="argument 'a' must be int") as info:
            c.send("ADD", a="two")
        assert info.value.error.startswith("ADD: argument 'a'")
        assert c.send("add", a=1) == 2.0  # the connection is still usable


def test_unreachable_module_raises_and_up_is_false(free_port: Callable[[], int]) -> None:
    """Nothing listening: send raises ModuleUnreachable, up() returns False."""
    port = free_port()
    c = ModuleClient("127.0.0.1", port, timeout=2, protocol="json")
    with pytest.raises(ModuleUnreachable, match=f"cannot connect to 127.0.0.1:{port}"):
        c.send("UP")
    assert c.up() is False


def test_timeout_raises_module_unreachable(make_server: Callable[..., DefaultServer]) -> None:
    """A command that does not answer within the timeout raises instead of hanging."""
    release = threading.Event()

    def hang() -> str:
        """Block until released."""
        release.wait(30)
        return "late"

    s = make_server({"HANG": hang})
    c = ModuleClient("127.0.0.1", s.port, timeout=0.3, protocol="json")
    try:
        with pytest.raises(ModuleUnreachable, match="no reply within 0.3 s"):
            c.send("HANG")
    finally:
        release.set()
    c.timeout = 10
    assert c.send("UP") is True  # a fresh connection; the late reply is not mistaken for it
    c.close()


def test_reconnects_after_the_module_restarts(make_server: Callable[..., DefaultServer]) -> None:
    """A connection closed by a restarted module is noticed and re-opened before sending."""
    first = make_server()
    c = ModuleClient("127.0.0.1", first.port, protocol="json")
    assert c.send("UP") is True
    first.request_stop()
    assert first.wait_closed(10)
    second = make_server(port=first.port)
    assert "SUBSCRIBE" in c.send("GET_PCOMMS")
    assert second.port == first.port
    c.close()


def test_connection_lost_after_sending_is_not_retried(
    make_server: Callable[..., DefaultServer],
) -> None:
    """If the connection drops after the command went out, the client raises and never resends."""
    calls: list[int] = []
    holder: dict[str, DefaultServer] = {}

    def drop() -> int:
        """Count the call, then cut this connection."""
        calls.append(1)
        conn = holder["s"].current_conn
        assert conn is not None
        conn.shutdown(socket.SHUT_RDWR)
        return 0

    s = holder["s"] = make_server({"DROP": drop})
    with ModuleClient("127.0.0.1", s.port, protocol="json") as c:
        with pytest.raises(ModuleUnreachable, match="it may or may not have run"):
            c.send("DROP")
        assert calls == [1]
        assert c.send("UP") is True


def test_events_are_collected_while_waiting(make_server: Callable[..., DefaultServer]) -> None:
    """Event lines arriving before a reply go to client.events, the reply is still returned."""
    holder: dict[str, DefaultServer] = {}

    def notify() -> str:
        """Emit an event before replying."""
        holder["s"].send_event("state", state="RUNNING")
        return "sent"

    s = holder["s"] = make_server({"NOTIFY": notify})
    with ModuleClient("127.0.0.1", s.port, protocol="json") as c:
        assert c.send("SUBSCRIBE") is True
        assert c.send("NOTIFY") == "sent"
        assert list(c.events) == [{"event": "state", "module": "test_module", "state": "RUNNING"}]


def test_token_is_sent_with_auth(make_server: Callable[..., DefaultServer]) -> None:
    """A client given the token authenticates on connect; without it commands are refused."""
    s = make_server(token="tok", require_auth=True)
    with ModuleClient("127.0.0.1", s.port, protocol="json", token="tok") as c:
        assert c.send("UP") is True
    with ModuleClient("127.0.0.1", s.port, protocol="json") as c:
        with pytest.raises(CommandFailed, match="authentication required"):
            c.send("UP")
    with pytest.raises(CommandFailed, match="wrong token"):
        ModuleClient("127.0.0.1", s.port, protocol="json", token="bad").send("UP")


def test_non_json_reply_raises_module_error() -> None:
    """A peer that does not speak the protocol gives a clear ModuleError, not a JSON traceback."""
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    def serve() -> None:
        conn, _ = lsock.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"hello there\n")
            conn.recv(1024)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with ModuleClient("127.0.0.1", port, protocol="json") as c:
            with pytest.raises(ModuleError, match="not a JSON reply: b'hello there'"):
                c.send("UP")
    finally:
        lsock.close()
        t.join(10)


def test_one_client_shared_by_threads(make_server: Callable[..., DefaultServer]) -> None:
    """Requests from several threads on one client never get each other's replies."""
    s = make_server({"ADD": add})
    c = ModuleClient("127.0.0.1", s.port, protocol="json")
    wrong: list[tuple[int, Any]] = []
    done: list[int] = []

    def work(k: int) -> None:
        for i in range(50):
            got = c.send("ADD", a=k * 1000 + i, b=0)
            if got != k * 1000 + i:
                wrong.append((k, got))
        done.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    wait_for(lambda: len(done) == 8, "all threads to finish")
    assert wrong == []
    c.close()
