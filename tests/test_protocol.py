"""Pure protocol functions: framing, request parsing and reply encoding, on bytes only."""

from __future__ import annotations

import json

import pytest

from shared_utils.protocol import (
    MAX_LINE_BYTES,
    Framer,
    LineTooLong,
    Mode,
    ProtocolError,
    Request,
    encode_reply,
    parse_request,
)


def feed_all(chunks: list[bytes]) -> tuple[list[bytes], Framer]:
    f = Framer()
    out: list[bytes] = []
    for c in chunks:
        out += f.feed(c)
    return out, f


def test_semicolon_inside_json_string_on_first_command_is_data() -> None:
    """A ';' inside a JSON string of the very first command does not end it."""
    lines, f = feed_all([b'START|{"note": "a;b", "x": 1};UP;'])
    assert lines == [b'START|{"note": "a;b", "x": 1}', b"UP"]
    assert f.mode is Mode.SEMICOLON


def test_escaped_quote_keeps_string_open_across_segments() -> None:
    """A backslash at the end of one TCP segment still escapes the first byte of the next."""
    lines, _ = feed_all([b'ECHO|{"a": "x\\', b'";y"}\n'])
    assert lines == [b'ECHO|{"a": "x\\";y"}']


def test_newline_always_ends_a_command_even_inside_a_string() -> None:
    """An unbalanced quote cannot swallow later commands: newline resets the string state."""
    lines, f = feed_all([b'ECHO|{"a": "unterminated\nUP\n'])
    assert lines == [b'ECHO|{"a": "unterminated', b"UP"]
    assert f.mode is Mode.NEWLINE


def test_newline_after_backslash_in_string_still_terminates() -> None:
    """An escape never consumes a newline."""
    lines, _ = feed_all([b'ECHO|{"a": "x\\', b"\nUP\n"])
    assert lines == [b'ECHO|{"a": "x\\', b"UP"]


def test_command_split_across_many_feeds() -> None:
    """Byte-by-byte delivery yields the same single command."""
    raw = b'START|{"channels": 8, "s": "a;b|c"}\n'
    lines, _ = feed_all([bytes([b]) for b in raw])
    assert lines == [raw[:-1]]


def test_two_commands_in_one_chunk_and_a_partial_third() -> None:
    """Complete commands come out at once, the rest waits for its terminator."""
    f = Framer()
    assert f.feed(b"UP\nGET_PCOMMS\nHEL") == [b"UP", b"GET_PCOMMS"]
    assert f.pending == 3
    assert f.feed(b"P\n") == [b"HELP"]
    assert f.pending == 0


def test_carriage_returns_are_ignored_everywhere() -> None:
    """Telnet's \\r\\n works, and a \\r between a backslash and its escaped byte is ignored too."""
    lines, _ = feed_all([b"UP\r\n", b'ECHO|{"a": "\\\r";"}\r\n', b"\r\r\n"])
    assert lines == [b"UP", b'ECHO|{"a": "\\";"}']


def test_blank_commands_are_dropped_but_fix_the_mode() -> None:
    """Whitespace-only commands produce nothing; the first terminator still picks the mode."""
    lines, f = feed_all([b" \n;;  ;UP;"])
    assert lines == [b"UP"]
    assert f.mode is Mode.NEWLINE


def test_mode_is_fixed_by_the_first_terminator() -> None:
    """A later different terminator does not switch the mode."""
    f = Framer()
    f.feed(b"UP;")
    f.feed(b"UP\n")
    assert f.mode is Mode.SEMICOLON


def test_line_of_exactly_one_mebibyte_is_accepted() -> None:
    """The limit is inclusive: 1 MiB without a terminator is still waiting, not an error."""
    f = Framer()
    assert f.feed(b"x" * MAX_LINE_BYTES) == []
    assert f.feed(b"\n") == [b"x" * MAX_LINE_BYTES]


def test_unterminated_line_over_limit_raises_with_earlier_lines() -> None:
    """Over 1 MiB without terminator raises; complete commands before it are kept."""
    f = Framer()
    with pytest.raises(LineTooLong, match="longer than 1048576 bytes") as info:
        f.feed(b"UP\nGET_PCOMMS\n" + b"x" * (MAX_LINE_BYTES + 1))
    assert info.value.lines == [b"UP", b"GET_PCOMMS"]
    assert f.pending == 0


def test_terminated_line_over_limit_raises_too() -> None:
    """A complete over-long command is refused the same way, whatever the TCP chunking."""
    f = Framer()
    with pytest.raises(LineTooLong, match="connection closed"):
        f.feed(b"y" * (MAX_LINE_BYTES + 5) + b"\nUP\n")


def test_small_limit_applies_across_feeds() -> None:
    """The limit counts bytes accumulated over several feeds."""
    f = Framer(max_line=10)
    assert f.feed(b"12345") == []
    with pytest.raises(LineTooLong, match="longer than 10 bytes"):
        f.feed(b"678901")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"UP", Request("UP")),
        (b"  UP  ", Request("UP")),
        (b"START|", Request("START")),
        (b"START|   ", Request("START")),
        (b'START|{"a": 1, "b": "x|y;z"}', Request("START", {"a": 1, "b": "x|y;z"})),
        (b'RUN MODIFIED STROOP|{"n": 3}', Request("RUN MODIFIED STROOP", {"n": 3})),
        ('ECHO|{"name": "Jürgen ✓"}'.encode(), Request("ECHO", {"name": "Jürgen ✓"})),
        (b'{"id": 7, "cmd": "UP"}', Request("UP", {}, 7, True)),
        (b'{"cmd": "ECHO", "kwargs": {"a": 1}}', Request("ECHO", {"a": 1})),
        (b'{"cmd": "ECHO", "kwargs": null, "id": null}', Request("ECHO", {}, None, True)),
    ],
)
def test_parse_request_accepts(line: bytes, expected: Request) -> None:
    """Both command forms parse into name, keyword arguments and optional id."""
    assert parse_request(line) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"START|{bad", r"payload of START is not valid JSON \(.* at column 2\)"),
        (b"START|[1, 2]", "payload of START must be a JSON object, got list"),
        (b'START|"x"', "payload of START must be a JSON object, got str"),
        (b"START|12", "payload of START must be a JSON object, got int"),
        (b"|{}", "empty command name"),
        (b"UP\xff", r"command is not valid UTF-8 \(byte 2\)"),
        (b"{not json", "request is not valid JSON"),
        (b'{"id": 1}', "needs a non-empty string 'cmd'"),
        (b'{"cmd": 3}', "needs a non-empty string 'cmd'"),
        (b'{"cmd": "UP", "kwargs": [1]}', "'kwargs' must be a JSON object, got list"),
        (b'{"cmd": "UP", "arg": 1}', r"unknown request keys \['arg'\]"),
    ],
)
def test_parse_request_errors_name_the_problem(line: bytes, message: str) -> None:
    """Every malformed line raises ProtocolError with a message that says what is wrong."""
    with pytest.raises(ProtocolError, match=message):
        parse_request(line)


def test_encode_reply_shapes() -> None:
    """Replies are one JSON line with ok/cmd/result or error, and the id only when sent."""
    ok = encode_reply("ECHO", True, {"a": [1, 2]})
    assert ok.endswith(b"\n")
    assert ok.count(b"\n") == 1
    assert json.loads(ok) == {"ok": True, "cmd": "ECHO", "result": {"a": [1, 2]}}
    err = encode_reply("X", False, error="nope", req_id="abc", has_id=True)
    assert json.loads(err) == {"ok": False, "cmd": "X", "id": "abc", "error": "nope"}
    assert json.loads(encode_reply("X", True, None, req_id=None, has_id=True))["id"] is None


def test_encode_reply_sends_nan_and_inf_as_null() -> None:
    """Non-finite floats become null so any JSON parser can read the reply."""
    import numpy as np

    reply = json.loads(encode_reply("X", True, {"v": [float("nan"), float("inf"), 1.5]}))
    assert reply["result"] == {"v": [None, None, 1.5]}
    arr = json.loads(encode_reply("X", True, np.array([1.0, np.nan])))
    assert arr["result"] == [1.0, None]


def test_encode_reply_never_raises_on_unencodable_results() -> None:
    """A result JSON cannot hold turns into an error reply that says so."""
    circular: list = []
    circular.append(circular)
    for bad in ({(1, 2): 3}, circular):
        reply = json.loads(encode_reply("GET", True, bad, req_id=4, has_id=True))
        assert reply["ok"] is False
        assert reply["id"] == 4
        assert "cannot be sent as JSON" in reply["error"]


def test_encode_reply_uses_numpy_and_sets() -> None:
    """Numpy scalars/arrays and sets/tuples are converted to plain JSON."""
    import numpy as np

    reply = json.loads(encode_reply("X", True, {"n": np.int64(3), "s": {1}, "t": (1, 2)}))
    assert reply["result"] == {"n": 3, "s": [1], "t": [1, 2]}
