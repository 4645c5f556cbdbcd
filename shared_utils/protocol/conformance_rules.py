"""The probes behind the conformance check: a raw-socket connection that judges bytes on the wire,
and one function per rule (R1-R10 of ``docs/protocol.md``). Each returns what it saw or raises
:class:`CheckFailed` saying what was expected and what arrived.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from shared_utils.protocol.framing import MAX_LINE_BYTES

BUILTINS = ["UP", "GET_PCOMMS", "STOP", "CLOSE", "HELP", "STATUS", "AUTH", "SUBSCRIBE"]
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
            self.quiet_bytes()

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

    def expect_nothing_more(self, after: str) -> None:
        extra = self.quiet_bytes(first_wait=QUIET_S)
        if extra:
            raise CheckFailed(f"unexpected extra bytes after {after}: {extra[:120]!r}")


def _expect_ok(reply: dict[str, Any], cmd: str) -> None:
    if reply.get("ok") is not True or reply.get("cmd") != cmd:
        raise CheckFailed(f'expected {{"ok": true, "cmd": "{cmd}", ...}}, got {_short(reply)}')


def _expect_error(reply: dict[str, Any], what: str) -> None:
    if reply.get("ok") is not False or not isinstance(reply.get("error"), str):
        raise CheckFailed(f'{what}: expected {{"ok": false, "error": "..."}}, got {_short(reply)}')
    if not reply["error"].strip():
        raise CheckFailed(f"{what}: the error text is empty; say what was wrong")


def _short(obj: Any) -> str:
    text = json.dumps(obj) if not isinstance(obj, bytes) else repr(obj)
    return text if len(text) <= 160 else text[:157] + "..."


# -- the rules --------------------------------------------------------------------------------
def check_r1(open_conn: Callable[[], ProbeConn]) -> str:
    with open_conn() as c:
        banner = c.quiet_bytes(first_wait=QUIET_S)
        if banner:
            raise CheckFailed(f"the module sent {banner[:80]!r} on accept; send nothing unasked")
        c.authenticate()
        c.send(b"UP\n")
        _expect_ok(c.reply("UP"), "UP")
        c.expect_nothing_more("the UP reply")
    return "UP answered with one JSON reply line, no banner"


def check_r2(open_conn: Callable[[], ProbeConn]) -> str:
    with open_conn() as c:
        c.authenticate()
        c.send(b"U")
        time.sleep(0.05)  # make the two halves separate TCP segments
        c.send(b"P\n")
        _expect_ok(c.reply("UP sent as 'U' + 'P\\n'"), "UP")
        c.expect_nothing_more("the split UP")
        c.send(b"UP\nGET_PCOMMS\n")
        _expect_ok(c.reply("the first of two commands in one write"), "UP")
        _expect_ok(c.reply("the second of two commands in one write"), "GET_PCOMMS")
        c.expect_nothing_more("two commands in one write")
    with open_conn() as c:  # ';' inside a JSON string of a connection's first command, and \r
        c.authenticate()
        c.send(b'HELP|{"command": "U;P"}\r\n')
        r = c.reply("HELP with ';' inside a JSON string, ended by \\r\\n")
        if r.get("cmd") != "HELP":
            raise CheckFailed(f"expected one reply with cmd HELP, got {_short(r)}")
        c.expect_nothing_more("HELP with ';' inside a JSON string")
    return (
        "split command answered once; two commands in one write answered once each; "
        "';' inside a JSON string and \\r\\n handled"
    )


def check_r3(open_conn: Callable[[], ProbeConn]) -> str:
    order = ["GET_PCOMMS", "UP", "HELP", "UP", "GET_PCOMMS"]
    with open_conn() as c:
        c.authenticate()
        c.send(b"".join(n.encode() + b"\n" for n in order))
        got = [c.reply(f"command {i + 1} of {len(order)}").get("cmd") for i in range(len(order))]
    if got != order:
        raise CheckFailed(f"sent {order}, replies came as {got}")
    return f"{len(order)} pipelined commands answered in order"


def check_r4(open_conn: Callable[[], ProbeConn]) -> str:
    with open_conn() as c:
        c.authenticate()
        c.send(b"NO_SUCH_COMMAND_R4\n")
        r = c.reply("an unknown command")
        _expect_error(r, "unknown command")
        c.send(b"UP\n")
        _expect_ok(c.reply("UP after the error"), "UP")
    return f"error {r['error'][:60]!r}, then UP answered"


def check_r5(open_conn: Callable[[], ProbeConn]) -> str:
    cases = [
        (b'{"id": 7, "cmd": "UP"}\n', 7, True),
        (b'{"id": "abc-1", "cmd": "UP", "kwargs": {}}\n', "abc-1", True),
        (b'{"id": 9, "cmd": "NO_SUCH_COMMAND_R5"}\n', 9, False),
    ]
    with open_conn() as c:
        c.authenticate()
        for raw, want, ok in cases:
            c.send(raw)
            r = c.reply(raw.decode().strip())
            if r.get("id") != want or "id" not in r:
                raise CheckFailed(f"request {raw.strip()!r}: reply id {r.get('id')!r} != {want!r}")
            if r.get("ok") is not ok:
                raise CheckFailed(f"request {raw.strip()!r}: expected ok {ok}, got {_short(r)}")
    return "ids 7, 'abc-1' and an error reply's id echoed"


def check_r6(open_conn: Callable[[], ProbeConn]) -> str:
    bad = [
        (b"UP|{not json\n", "a payload that is not JSON"),
        (b"UP|[1, 2]\n", "a JSON array payload"),
        (b'UP|"text"\n', "a JSON string payload"),
        (b"\xff\xfe\x00\x80garbage\xc3\n", "random bytes (not UTF-8)"),
        (b'{"cmd": 5}\n', "a JSON request without a string cmd"),
    ]
    with open_conn() as c:
        c.authenticate()
        for raw, what in bad:
            c.send(raw)
            _expect_error(c.reply(what), what)
            c.send(b"UP\n")
            _expect_ok(c.reply(f"UP after {what}"), "UP")
    return f"{len(bad)} malformed inputs each got an error, UP answered after each"


def check_r7(open_conn: Callable[[], ProbeConn]) -> str:
    listed: Any = None
    try:  # for comparison only; newline mode itself is judged by the other rules
        with open_conn() as c:
            c.authenticate()
            c.send(b"GET_PCOMMS\n")
            listed = c.reply("GET_PCOMMS (newline mode)").get("result")
    except CheckFailed:
        pass
    with open_conn() as c:
        c.authenticate(b";")
        c.send(b"UP;")
        up = c.quiet_bytes()
        if up != b"1":
            raise CheckFailed(f"UP; should get exactly b'1', got {up[:80]!r}")
        c.send(b"GET_PCOMMS;")
        text = c.quiet_bytes()
        names = text.decode("utf-8", "replace").split("|")
        missing = [n for n in ("STOP", "CLOSE", "GET_PCOMMS", "UP") if n not in names]
        if text.endswith(b"\n") or missing:
            raise CheckFailed(
                f"GET_PCOMMS; should get A|B|... without terminator incl. STOP, CLOSE, "
                f"GET_PCOMMS, UP; got {text[:120]!r}"
            )
        if isinstance(listed, list) and names != listed:
            raise CheckFailed(f"GET_PCOMMS; lists {names}, newline mode lists {listed}")
        c.send(b"NO_SUCH_COMMAND_R7;UP;")
        quiet = c.quiet_bytes()
        if quiet != b"1":
            raise CheckFailed(f"an unknown command must get no reply in ; mode; got {quiet!r}")
    return f"UP; -> 1, GET_PCOMMS; -> {len(names)} names, errors silent"


def check_r8(open_conn: Callable[[], ProbeConn]) -> str:
    size = MAX_LINE_BYTES + 1024
    with open_conn() as c:
        c.authenticate()
        errors: list[BaseException] = []

        def push() -> None:
            try:
                c.send(b"x" * size)
            except OSError as exc:  # the module may stop reading once it has replied
                errors.append(exc)

        t = threading.Thread(target=push, daemon=True)
        t.start()
        try:
            r = c.reply(f"a {size}-byte command without terminator")
        except CheckFailed as exc:
            raise CheckFailed(f"{exc} (send errors: {errors or 'none'})") from None
        _expect_error(r, "an over-long line")
        rest = c.quiet_bytes(first_wait=c.timeout)
        t.join(c.timeout)
        try:
            c.sock.settimeout(0.2)
            still_open = c.sock.recv(1) != b""
        except TimeoutError:
            still_open = True
        except OSError:
            still_open = False
        if rest or still_open:
            raise CheckFailed(f"the connection stayed open after the error (then got {rest!r})")
    with open_conn() as c:
        c.authenticate()
        c.send(b"UP\n")
        _expect_ok(c.reply("UP on a new connection"), "UP")
    return "over-long line got an error, the connection closed, UP answered afterwards"


def check_r9(open_conn: Callable[[], ProbeConn]) -> str:
    with open_conn() as a:
        a.authenticate()
        a.send(b"UP\n")
        _expect_ok(a.reply("UP on the first connection"), "UP")
        a.send(b"U")  # an unfinished command stays pending on the first connection
        with open_conn() as b:
            b.authenticate()
            b.send(b"UP\n")
            _expect_ok(b.reply("UP on a second connection while the first is open"), "UP")
        a.send(b"P\n")
        _expect_ok(a.reply("the first connection's finished UP"), "UP")
    return "a second connection was served while the first was open mid-command"


def check_r10(open_conn: Callable[[], ProbeConn]) -> str:
    with open_conn() as c:
        c.authenticate()
        c.send(b"GET_PCOMMS\nHELP\n")
        pcomms = c.reply("GET_PCOMMS")
        helped = c.reply("HELP")
    _expect_ok(pcomms, "GET_PCOMMS")
    _expect_ok(helped, "HELP")
    names = pcomms.get("result")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckFailed(f"GET_PCOMMS result must be a list of names, got {_short(names)}")
    entries = (helped.get("result") or {}).get("commands")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CheckFailed(f"HELP result needs 'commands': [{{'name': ...}}], got {_short(helped)}")
    help_names = [e.get("name") for e in entries]
    if set(help_names) != set(names):
        raise CheckFailed(
            f"GET_PCOMMS and HELP differ: only in GET_PCOMMS {sorted(set(names) - set(help_names))}"
            f", only in HELP {sorted(set(help_names) - set(names))}"
        )
    missing = [b for b in BUILTINS if b not in names]
    if missing:
        raise CheckFailed(f"built-in commands missing from GET_PCOMMS: {missing}")
    return f"{len(names)} commands, same in GET_PCOMMS and HELP, built-ins present"
