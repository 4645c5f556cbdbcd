"""The Dareplane dialect of the protocol, in one place: parsing and encoding, no sockets.

dareplane-utils (0.0.24) modules greet a new connection with ``Connected to <name>\\n``, end every
command with ``;``, answer only ``UP`` (``1``) and ``GET_PCOMMS`` (``A|B|...``), and ask their
control room for callbacks by writing unterminated ``target|CMD|{json}``. Our server speaks this
dialect to a connection whose first command ends with ``;`` (semicolon mode), our client and the
control room speak it to Dareplane modules. Everything that knows these rules is here.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "BANNER_PREFIX",
    "BUILTINS",
    "DialectError",
    "encode_callback",
    "encode_command",
    "parse_callbacks",
    "semicolon_reply",
    "split_banner",
]

#: Dareplane's GET_PCOMMS lists these after the module's own commands, in this order.
BUILTINS = ["STOP", "CLOSE", "GET_PCOMMS", "UP"]
BANNER_PREFIX = b"Connected to"
_DECODER = json.JSONDecoder()


class DialectError(ValueError):
    """A command the Dareplane dialect cannot carry (it would be cut or dropped silently)."""


def encode_command(
    cmd: str, kwargs: dict[str, Any] | None = None, who: str = "the module"
) -> bytes:
    """``CMD|{json};`` as dareplane-utils reads it; refuses what it would mangle.

    dareplane-utils splits on every ``;`` and ``|`` and decodes ASCII, so a payload containing
    those, or any non-ASCII text, would be cut or dropped without a reply: refuse it before sending.
    """
    payload = json.dumps(kwargs) if kwargs else ""
    if any(ch in payload for ch in ";|") or not (cmd + payload).isascii():
        raise DialectError(
            f"{who} is a dareplane-utils module, which cannot take ';', '|' or non-ASCII text in "
            f"a command; not sending {cmd} with {payload[:80]}"
        )
    return (f"{cmd}|{payload}" if payload else cmd).encode() + b";"


def split_banner(data: bytes) -> tuple[str | None, bytes]:
    """(greeting line, rest) when ``data`` starts with a dareplane-utils greeting, else (None, data)."""
    if not data.startswith(BANNER_PREFIX):
        return None, data
    line, _, rest = data.partition(b"\n")
    return line.decode(errors="replace"), rest


def semicolon_reply(cmd: str, ok: bool, pcommands: list[str]) -> bytes | None:
    """What a dareplane-utils server writes back for ``cmd``: ``1``, ``A|B|...`` or nothing."""
    if not ok:
        return None
    if cmd == "UP":
        return b"1"
    if cmd == "GET_PCOMMS":
        return "|".join(pcommands).encode()
    return None


def encode_callback(target: str, cmd: str, kwargs: dict[str, Any]) -> bytes:
    """A module's request to its control room to run ``cmd`` on ``target`` (unterminated)."""
    return f"{target}|{cmd}|{json.dumps(kwargs)}".encode()


def parse_callbacks(
    buf: str, pending_acks: int = 0
) -> tuple[list[tuple[str, str, dict[str, Any]]], str, int]:
    """Split ``buf`` into complete ``target|CMD|payload`` callbacks.

    A leading ``1`` is taken as an ``UP`` acknowledgement only while one is expected
    (``pending_acks``), so callbacks that start with a digit are not eaten. Unlike Dareplane's
    broker the JSON payload is parsed to its end instead of splitting on ``|``, so two callbacks in
    one read, or a payload containing ``|`` or ``1``, are not mangled.
    Returns (callbacks, unparsed rest, acknowledgements consumed).
    """
    out: list[tuple[str, str, dict[str, Any]]] = []
    acks = 0
    while True:
        buf = buf.lstrip(" \r\n\t;")
        if buf.startswith("1") and acks < pending_acks:
            buf = buf[1:]
            acks += 1
            continue
        parts = buf.split("|", 2)
        if len(parts) < 3:
            return out, buf, acks
        target, cmd, rest = parts[0].strip(), parts[1].strip(), parts[2]
        body = rest.lstrip()
        if body.startswith("{"):
            try:
                kwargs, end = _DECODER.raw_decode(body)
            except json.JSONDecodeError:
                cuts = [i for i in (body.find("\n"), body.find(";")) if i >= 0]
                if cuts:  # malformed and terminated: drop it up to the terminator
                    buf = body[min(cuts) + 1 :]
                    continue
                return out, buf, acks  # incomplete: wait for more bytes
            buf = body[end:]
            out.append((target, cmd, kwargs if isinstance(kwargs, dict) else {"value": kwargs}))
            continue
        # empty payload: ends at a terminator or at the end of what arrived
        cuts = [i for i in (body.find(";"), body.find("\n")) if i >= 0]
        out.append((target, cmd, {}))
        if not cuts:
            return out, "", acks
        buf = body[min(cuts) + 1 :]
