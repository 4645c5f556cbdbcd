"""Error replies still answer the request they belong to, and CLOSE is never triggered by a typo."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from wire_helpers import Wire

from shared_utils.server import DefaultServer


@pytest.mark.parametrize(
    ("line", "cmd", "error"),
    [
        (b'{"id": 4, "cmd": "UP", "kwargs": [1]}\n', "UP", "'kwargs' must be a JSON object"),
        (b'{"id": 5, "cmd": "UP", "kw": {}}\n', "UP", "unknown request keys ['kw']"),
        (b'{"id": 6}\n', "?", "needs a non-empty string 'cmd'"),
    ],
)
def test_bad_json_request_keeps_its_id_and_command(
    make_server: Callable[..., DefaultServer], line: bytes, cmd: str, error: str
) -> None:
    """A malformed JSON request is answered with its own id and command name."""
    s = make_server()
    with Wire(s.port) as w:
        w.send(line)
        reply = w.reply()
        assert reply["ok"] is False
        assert reply["id"] == int(line.split(b":")[1].split(b",")[0].strip(b" }\n"))
        assert reply["cmd"] == cmd
        assert error in reply["error"]
        assert w.cmd("UP")["result"] is True


def test_close_with_unknown_argument_is_refused_and_server_stays(
    make_server: Callable[..., DefaultServer],
) -> None:
    """CLOSE|{"x": 1} is an error, not a shutdown."""
    s = make_server()
    with Wire(s.port) as w:
        reply = w.cmd('CLOSE|{"x": 1}')
        assert reply["ok"] is False
        assert "CLOSE: unknown argument x" in reply["error"]
        assert w.cmd("UP")["result"] is True
    assert not s.wait_closed(0.2)
