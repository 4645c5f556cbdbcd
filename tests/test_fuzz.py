"""Hypothesis throws random bytes and command-like lines at a real server; it must keep serving.

Properties: on a newline-mode connection every framed command gets exactly one JSON reply line
(with an ``ok`` key) in order, and afterwards ``UP`` answers on that connection and on a new one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_helpers import Wire

from shared_utils.protocol import Framer, Mode
from shared_utils.server import DefaultServer

NAMES = ["UP", "up", "ECHO", "ADD", "FAIL", "GET_PCOMMS", "HELP", "STATUS", "STOP", "NOPE", ""]
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def add(a: int, b: float = 1.0) -> float:
    """Add."""
    return a + b


def fail() -> None:
    """Raise."""
    raise RuntimeError("fuzz")


def echo(**kwargs: Any) -> dict:
    """Echo."""
    return kwargs


class _QuietLog:
    """Discards the server's log records (thousands of tracebacks would dominate the run time)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@pytest.fixture(scope="module")
def server() -> Iterator[DefaultServer]:
    s = DefaultServer(
        0, pcommand_map={"ECHO": echo, "ADD": add, "FAIL": fail}, name="fuzz", logger=_QuietLog()
    )
    s.tasks.join_timeout_s = 0.2
    s.init_server()
    s.start_in_thread()
    yield s
    s.request_stop()
    assert s.wait_closed(10)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
tricky_text = st.text(alphabet=st.sampled_from(list('ab|;"\\{}[]:, \r\n\t\x00é✓')), max_size=40)


@st.composite
def command_lines(draw: st.DrawFn) -> bytes:
    """Lines that look like commands: a name, maybe '|' and a JSON-ish or broken payload."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(NAMES) | st.text(max_size=6))
        kind = draw(st.sampled_from(["bare", "json", "text", "envelope"]))
        if kind == "bare":
            body = name
        elif kind == "json":
            body = f"{name}|{json.dumps(draw(json_values))}"
        elif kind == "text":
            body = f"{name}|{draw(tricky_text)}"
        else:
            body = json.dumps({"id": draw(json_values), "cmd": name, "kwargs": draw(json_values)})
        parts.append(body + draw(st.sampled_from(["\n", "\r\n", ";", "\n\n"])))
    return "".join(parts).encode()


def _check_connection_survives(server: DefaultServer, payload: bytes) -> None:
    if b"close" in payload.lower():
        return  # CLOSE would legitimately end the server
    framer = Framer()
    try:
        expected = len(framer.feed(payload + b"\n"))
    except ValueError:
        expected = -1
    with Wire(server.port) as w:
        w.send(payload)
        w.send(b'\n{"id": "fuzz-end", "cmd": "UP"}\n')
        if framer.mode is Mode.NEWLINE and expected >= 0:
            replies = 0
            while True:
                reply = json.loads(w.line())
                assert isinstance(reply, dict), reply
                assert "ok" in reply, reply
                if reply.get("id") == "fuzz-end":
                    break
                replies += 1
            assert replies == expected, (payload, replies, expected)
    with Wire(server.port) as w:
        assert w.cmd("UP") == {"ok": True, "cmd": "UP", "result": True}


@SETTINGS
@given(payload=st.binary(max_size=300))
def test_random_bytes_never_break_the_server(server: DefaultServer, payload: bytes) -> None:
    """Arbitrary bytes: one reply per framed command, and UP still answers."""
    _check_connection_survives(server, payload)


@SETTINGS
@given(payload=command_lines())
def test_command_like_lines_never_break_the_server(server: DefaultServer, payload: bytes) -> None:
    """Plausible commands with broken or odd payloads: one reply each, and UP still answers."""
    _check_connection_survives(server, payload)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=6))
def test_any_segmentation_gives_the_same_replies(
    server: DefaultServer, chunks: list[bytes]
) -> None:
    """The same bytes sent in different TCP writes produce the same replies."""
    payload = b"".join(chunks).replace(b"\n", b" ").replace(b";", b" ")
    if b"close" in payload.lower():
        return
    stream = b"ECHO|" + json.dumps({"p": payload.decode("latin-1")}).encode() + b"\nUP\n"
    step = max(1, len(stream) // len(chunks))
    with Wire(server.port) as whole, Wire(server.port) as pieces:
        whole.send(stream)
        for i in range(0, len(stream), step):
            pieces.send(stream[i : i + step])
        assert [whole.line(), whole.line()] == [pieces.line(), pieces.line()]
