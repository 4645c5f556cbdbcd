"""The raw-socket probe behind the conformance check: a connection that judges bytes on the
wire exactly as a client in another language sees them, with deadline-bound reads, and the small
helpers every rule uses to say what was expected and what arrived.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable
from typing import Any

QUIET_S = 0.15  # how long "nothing more arrives" is watched for


class CheckFailed(Exception):
    """A rule is violated; the text says what was expected and what arrived."""


class ProbeConn:
    """A raw connection with a receive buffer and deadline-bound reads."""

    def __init__(self, host: str, port: int, timeout: float, token: str | None) -> None:
        self.timeout = timeout
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise CheckFailed(f"cannot connect to {host}:{port}: {exc}") from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.token = token

    def __enter__(self) -> ProbeConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def authenticate(self, terminator: bytes = b"\n") -> None:
        """Send AUTH first when a token was given (modules bound beyond loopback need it)."""
        if not self.token:
            return
        self.send(b"AUTH|" + json.dumps({"token": self.token}).encode() + terminator)
        if terminator == b"\n":
            reply = self.reply()
            if reply.get("ok") is not True:
                raise CheckFailed(f"AUTH was refused: {reply.get('error')!r}")
        else:
            self.quiet_bytes(first_wait=QUIET_S)  # semicolon mode: AUTH gets no reply

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self, timeout: float) -> bytes | None:
        """One recv within ``timeout``: bytes, b"" at EOF, None when nothing arrived."""
        r, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        if not r:
            return None
        return self.sock.recv(65536)

    def line(self, what: str) -> bytes:
        """The next ``\\n``-terminated line (without it), or CheckFailed naming ``what``."""
        deadline = time.monotonic() + self.timeout
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + 1]
                return out
            try:
                data = self._recv(deadline - time.monotonic())
            except OSError as exc:
                raise CheckFailed(f"connection failed while waiting for {what}: {exc}") from exc
            if data is None:
                got = f"; received so far: {bytes(self.buf[:80])!r}" if self.buf else ""
                raise CheckFailed(f"no reply line for {what} within {self.timeout} s{got}")
            if not data:
                raise CheckFailed(f"connection closed while waiting for {what}")
            self.buf += data

    def reply(self, what: str = "the command") -> dict[str, Any]:
        raw = self.line(what)
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise CheckFailed(f"reply to {what} is not a JSON object: {raw[:120]!r}")
        return obj

    def quiet_bytes(self, first_wait: float | None = None) -> bytes:
        """Everything that arrives until nothing has come for ``QUIET_S`` (unterminated replies)."""
        out = bytearray(self.buf)
        self.buf.clear()
        wait = self.timeout if first_wait is None and not out else (first_wait or QUIET_S)
        while True:
            try:
                data = self._recv(wait)
            except OSError:
                break
            if not data:
                break
            out += data
            wait = QUIET_S
        return bytes(out)

    def ask(self, line: bytes, what: str) -> dict[str, Any]:
        """Send one command line and return its reply."""
        self.send(line)
        return self.reply(what)

    def expect_nothing_more(self, after: str) -> None:
        extra = self.quiet_bytes(first_wait=QUIET_S)
        if extra:
            raise CheckFailed(f"unexpected extra bytes after {after}: {extra[:120]!r}")


def expect_ok(reply: dict[str, Any], cmd: str) -> None:
    if reply.get("ok") is not True or reply.get("cmd") != cmd:
        hint = ""
        if "authentication required" in str(reply.get("error")):
            hint = " (the module has a token: pass --token)"
        raise CheckFailed(f'expected {{"ok": true, "cmd": "{cmd}", ...}}, got {short(reply)}{hint}')


def expect_error(reply: dict[str, Any], what: str) -> None:
    if reply.get("ok") is not False or not isinstance(reply.get("error"), str):
        raise CheckFailed(f'{what}: expected {{"ok": false, "error": "..."}}, got {short(reply)}')
    if not reply["error"].strip():
        raise CheckFailed(f"{what}: the error text is empty; say what was wrong")


def short(obj: Any) -> str:
    text = json.dumps(obj) if not isinstance(obj, bytes) else repr(obj)
    return text if len(text) <= 160 else text[:157] + "..."


def ask_once(open_conn: Callable[[], ProbeConn], cmd: str) -> dict[str, Any]:
    """``cmd`` on a fresh (authenticated) connection; its reply, which must be ``ok``."""
    with open_conn() as c:
        c.authenticate()
        r = c.ask(cmd.encode() + b"\n", cmd)
    expect_ok(r, cmd)
    return r


def command_names(open_conn: Callable[[], ProbeConn]) -> list[str]:
    """The names ``GET_PCOMMS`` lists (CheckFailed if it does not answer with a list of names)."""
    names = ask_once(open_conn, "GET_PCOMMS").get("result")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise CheckFailed(f"GET_PCOMMS result must be a list of names, got {short(names)}")
    return names
