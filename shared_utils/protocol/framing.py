"""The wire protocol as pure functions: framing, request parsing and reply encoding.

Nothing here touches a socket, so every rule in ``docs/protocol.md`` is testable with bytes.

Framing rules (why they are shaped this way):
- ``\\n`` always ends a command. JSON forbids raw control characters inside strings, so a newline
  can never be part of a valid payload; a person typing into ``nc`` is therefore never left waiting
  because of an unbalanced quote.
- ``;`` ends a command only outside a JSON string, so ``{"note": "a;b"}`` survives. Dareplane
  clients terminate every command with ``;``.
- ``\\r`` is dropped (telnet sends ``\\r\\n``).
- The first terminator a connection uses picks its reply mode (``Mode``).
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_LINE_BYTES = 1 << 20

_SPECIAL = re.compile(rb'[\n;"\\]')
_NL, _SEMI, _QUOTE, _BACKSLASH = 0x0A, 0x3B, 0x22, 0x5C


class Mode(enum.Enum):
    """How a connection is answered, fixed by the first terminator it sends."""

    UNSET = "unset"
    NEWLINE = "newline"  # one JSON reply line per command
    SEMICOLON = (
        "semicolon"  # dareplane-utils 0.0.24 replies: UP -> 1, GET_PCOMMS -> A|B, else nothing
    )


class ProtocolError(ValueError):
    """A line that cannot be turned into a request; the text is sent back as the error.

    ``request`` carries what could be read (the id and command of a JSON request) so that the
    error reply still matches the request it answers.
    """

    def __init__(self, message: str, request: Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class LineTooLong(ProtocolError):
    """More than ``MAX_LINE_BYTES`` without a terminator: the connection is closed after the reply.

    ``lines`` holds the complete commands that arrived before the over-long one; they are still
    served, in order, before the error reply.
    """

    def __init__(self, message: str, lines: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.lines = lines or []


class Framer:
    """Splits a byte stream into command lines, honouring JSON strings for ``;``.

    State carried between ``feed`` calls: the unterminated rest, how far it has been scanned,
    whether the scan is inside a JSON string, and whether the last byte seen was a backslash
    inside a string (its escaped byte may arrive in the next TCP segment).
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._in_string = False
        self._escape = False
        self.max_line = max_line
        self.mode = Mode.UNSET

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete command lines (``\\r`` removed, blanks dropped).

        Raises :class:`LineTooLong` (carrying the complete lines before it) when a command exceeds
        ``max_line`` bytes, terminated or not; the framer is empty afterwards.
        """
        if b"\r" in data:
            data = data.replace(b"\r", b"")
        buf = self._buf
        buf += data
        n = len(buf)
        lines: list[bytes] = []
        start = 0  # first byte of the command being scanned
        pos = self._pos
        in_string = self._in_string
        escape = self._escape
        too_long = False
        while pos < n:
            if escape:  # the byte after a backslash in a string is data, unless it is a newline
                escape = False
                if buf[pos] != _NL:
                    pos += 1
                continue
            m = _SPECIAL.search(buf, pos)
            if m is None:
                pos = n
                break
            i = m.start()
            c = buf[i]
            if c == _NL or (c == _SEMI and not in_string):
                if i - start > self.max_line:
                    too_long = True
                    break
                if self.mode is Mode.UNSET:
                    self.mode = Mode.NEWLINE if c == _NL else Mode.SEMICOLON
                line = bytes(buf[start:i]).strip()
                if line:
                    lines.append(line)
                start = pos = i + 1
                in_string = False
            elif c == _QUOTE:
                in_string = not in_string
                pos = i + 1
            elif c == _BACKSLASH and in_string:
                escape = True
                pos = i + 1
            else:  # a backslash outside a string, or a ';' inside one
                pos = i + 1
        if too_long or n - start > self.max_line:
            del buf[:]
            self._pos = 0
            self._in_string = False
            self._escape = False
            raise LineTooLong(
                f"command longer than {self.max_line} bytes; connection closed "
                "(end each command with a newline; send large data through LSL or a file)",
                lines,
            )
        if start:
            del buf[:start]
        self._pos = pos - start
        self._in_string = in_string
        self._escape = escape
        return lines

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete command."""
        return len(self._buf)


@dataclass
class Request:
    """One parsed command: name, keyword arguments and the optional client-chosen id."""

    cmd: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: Any = None
    has_id: bool = False


def parse_request(line: bytes) -> Request:
    """Turn one framed line into a :class:`Request` or raise :class:`ProtocolError`."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"command is not valid UTF-8 (byte {exc.start}); send UTF-8 text"
        ) from exc
    text = text.strip()
    if text.startswith("{"):
        return _parse_envelope(text)
    cmd, sep, payload = text.partition("|")
    cmd = cmd.strip()
    if not cmd:
        raise ProtocolError("empty command name; send CMD or CMD|{json object}")
    kwargs: dict[str, Any] = {}
    if sep and payload.strip():
        try:
            kwargs = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise ProtocolError(
                f"payload of {cmd} is not valid JSON ({exc.msg} at column {exc.colno}); "
                'send CMD|{"key": value} with double-quoted keys'
            ) from exc
        except (ValueError, RecursionError) as exc:  # 4,300-digit ints, nesting ~1,000 deep
            raise ProtocolError(f"payload of {cmd} cannot be read: {_json_limit(exc)}") from exc
        if not isinstance(kwargs, dict):
            raise ProtocolError(
                f"payload of {cmd} must be a JSON object, got {type(kwargs).__name__}; "
                'send CMD|{"key": value}'
            )
    return Request(cmd=cmd, kwargs=kwargs)


def _parse_envelope(text: str) -> Request:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"request is not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except (ValueError, RecursionError) as exc:  # 4,300-digit ints, nesting ~1,000 deep
        raise ProtocolError(f"request cannot be read: {_json_limit(exc)}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(
            "a JSON request must be an object with 'cmd' and optional 'id', 'kwargs'"
        )
    cmd = obj.get("cmd")
    seen = Request(
        cmd=cmd.strip() if isinstance(cmd, str) and cmd.strip() else "?",
        id=obj.get("id"),
        has_id="id" in obj,
    )
    if seen.cmd == "?":
        raise ProtocolError("a JSON request needs a non-empty string 'cmd'", seen)
    kwargs = obj.get("kwargs", {})
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise ProtocolError(f"'kwargs' must be a JSON object, got {type(kwargs).__name__}", seen)
    unknown = set(obj) - {"cmd", "kwargs", "id"}
    if unknown:
        raise ProtocolError(
            f"unknown request keys {sorted(unknown)}; allowed: cmd, kwargs, id", seen
        )
    seen.kwargs = kwargs
    return seen


def _json_limit(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply; send flat objects"
    if "digits" in str(exc):
        return "an integer has more than 4,300 digits; numbers must fit in 64 bits"
    return str(exc)


_HTTP_METHODS = (
    b"GET",
    b"POST",
    b"PUT",
    b"DELETE",
    b"HEAD",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
)
_HTTP_LINE = re.compile(rb"^(?:%b) +(?:/|\*|https?:)" % b"|".join(_HTTP_METHODS), re.IGNORECASE)
_HEADER_LINE = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*: ")


def looks_like_http(data: bytes) -> bool:
    """True for an HTTP request line (``GET /...``, ``POST http://...``) or a header (``Host: x``).

    Browsers can be made to send such requests to any port on the lab PC; a module must close the
    connection without running anything (as Redis does), or any web page could send ``CLOSE``.
    No command of ours starts like either (a command is ``NAME`` or ``NAME|{json}``).
    """
    head = data.lstrip()[:256]
    return bool(_HTTP_LINE.match(head) or _HEADER_LINE.match(head))


def _json_default(obj: Any) -> Any:
    """Encode numpy values and other objects commands commonly return."""
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


_ENCODER = json.JSONEncoder(default=_json_default, allow_nan=False)
_ENCODER_NAN_OK = json.JSONEncoder(default=_json_default)


def encode_reply(
    cmd: str,
    ok: bool,
    result: Any = None,
    error: str | None = None,
    req_id: Any = None,
    has_id: bool = False,
) -> bytes:
    """One reply line: ``{"ok": ..., "cmd": ..., "result"|"error": ...}`` plus ``id`` if sent.

    Never raises: NaN/inf become ``null``; a result that cannot be encoded at all (circular, odd
    dict keys) turns the reply into an error that says so.
    """
    body: dict[str, Any] = {"ok": ok, "cmd": cmd}
    if has_id:
        body["id"] = req_id
    if ok:
        body["result"] = result
    else:
        body["error"] = error or "unknown error"
    try:
        text = _ENCODER.encode(body)
    except ValueError:
        try:
            text = _ENCODER_NAN_OK.encode(_replace_nan(body))
        except Exception as exc:  # circular references and the like
            text = _unencodable(cmd, exc, req_id, has_id)
    except Exception as exc:  # e.g. TypeError for tuple dict keys
        text = _unencodable(cmd, exc, req_id, has_id)
    return text.encode("utf-8") + b"\n"


def _unencodable(cmd: str, exc: Exception, req_id: Any, has_id: bool) -> str:
    body: dict[str, Any] = {"ok": False, "cmd": cmd}
    if has_id:
        try:
            body["id"] = json.loads(_ENCODER_NAN_OK.encode(req_id))
        except Exception:
            body["id"] = None
    body["error"] = (
        f"{cmd} returned a value that cannot be sent as JSON ({type(exc).__name__}: {exc}); "
        "return dicts with string keys, lists, numbers, strings, booleans or null"
    )
    return json.dumps(body)


def _replace_nan(obj: Any) -> Any:
    """NaN/inf are not JSON: send them as null so any client can parse the reply."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _replace_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_replace_nan(v) for v in obj]
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return _replace_nan(tolist())
    return obj
