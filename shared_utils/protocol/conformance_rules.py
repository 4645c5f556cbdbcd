"""The required conformance rules: what every module, in any language, must do for the control
room, the CLI and ``nc`` to work with it (``docs/protocol.md`` section 8).

Each rule is one function that takes a connection factory and returns what it saw, or raises
:class:`CheckFailed` saying what was expected and what arrived. The recommended rules live in
:mod:`shared_utils.protocol.conformance_recommended`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable

from shared_utils.protocol.conformance_probe import (
    QUIET_S,
    CheckFailed,
    ProbeConn,
    command_names,
    expect_error,
    expect_ok,
    short,
)

REQUIRED_NAMES = ["UP", "GET_PCOMMS"]
Opener = Callable[[], ProbeConn]


def check_r1(open_conn: Opener) -> str:
    with open_conn() as c:
        banner = c.quiet_bytes(first_wait=QUIET_S)
        if banner:
            raise CheckFailed(f"the module sent {banner[:80]!r} on accept; send nothing unasked")
        c.authenticate()
        c.send(b"UP\n")
        expect_ok(c.reply("UP"), "UP")
        c.expect_nothing_more("the UP reply")
    return "UP answered with one JSON reply line, no banner"


def check_r2(open_conn: Opener) -> str:
    with open_conn() as c:
        c.authenticate()
        c.send(b"U")
        time.sleep(0.05)  # make the two halves separate TCP segments
        c.send(b"P\n")
        expect_ok(c.reply("UP sent as 'U' + 'P\\n'"), "UP")
        c.expect_nothing_more("the split UP")
        c.send(b"UP\nGET_PCOMMS\n")
        expect_ok(c.reply("the first of two commands in one write"), "UP")
        expect_ok(c.reply("the second of two commands in one write"), "GET_PCOMMS")
        c.expect_nothing_more("two commands in one write")
    with open_conn() as c:  # ';' inside a JSON string of a connection's first command, and \r
        c.authenticate()
        c.send(b'UP|{"note": "U;P"}\r\n')
        r = c.reply("UP with ';' inside a JSON string, ended by \\r\\n")
        if r.get("cmd") != "UP":  # ok or an "unknown argument" error: either is one reply
            raise CheckFailed(f"expected one reply with cmd UP, got {short(r)}")
        c.expect_nothing_more("UP with ';' inside a JSON string")
    return (
        "split command answered once; two commands in one write answered once each; "
        "';' inside a JSON string and \\r\\n handled"
    )


def check_r3(open_conn: Opener) -> str:
    order = ["GET_PCOMMS", "UP", "UP", "GET_PCOMMS", "UP"]
    with open_conn() as c:
        c.authenticate()
        c.send(b"".join(n.encode() + b"\n" for n in order))
        got = [c.reply(f"command {i + 1} of {len(order)}").get("cmd") for i in range(len(order))]
    if got != order:
        raise CheckFailed(f"sent {order}, replies came as {got}")
    return f"{len(order)} pipelined commands answered in order"


def check_r4(open_conn: Opener) -> str:
    with open_conn() as c:
        c.authenticate()
        r = c.ask(b"NO_SUCH_COMMAND_R4\n", "an unknown command")
        expect_error(r, "unknown command")
        expect_ok(c.ask(b"UP\n", "UP after the error"), "UP")
    return f"error {r['error'][:60]!r}, then UP answered"


def check_r5(open_conn: Opener) -> str:
    cases = [
        (b'{"id": 7, "cmd": "UP"}\n', 7, True),
        (b'{"id": "abc-1", "cmd": "UP", "kwargs": {}}\n', "abc-1", True),
        (b'{"id": 9, "cmd": "NO_SUCH_COMMAND_R5"}\n', 9, False),
    ]
    with open_conn() as c:
        c.authenticate()
        for raw, want, ok in cases:
            r = c.ask(raw, raw.decode().strip())
            if r.get("id") != want or "id" not in r:
                raise CheckFailed(f"request {raw.strip()!r}: reply id {r.get('id')!r} != {want!r}")
            if r.get("ok") is not ok:
                raise CheckFailed(f"request {raw.strip()!r}: expected ok {ok}, got {short(r)}")
    return "ids 7, 'abc-1' and an error reply's id echoed"


def check_r6(open_conn: Opener) -> str:
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
            expect_error(c.ask(raw, what), what)
            expect_ok(c.ask(b"UP\n", f"UP after {what}"), "UP")
    return f"{len(bad)} malformed inputs each got an error, UP answered after each"


def check_r9(open_conn: Opener) -> str:
    with open_conn() as a:
        a.authenticate()
        expect_ok(a.ask(b"UP\n", "UP on the first connection"), "UP")
        a.send(b"U")  # an unfinished command stays pending on the first connection
        with open_conn() as b:
            b.authenticate()
            expect_ok(b.ask(b"UP\n", "UP on a second connection while the first is open"), "UP")
        expect_ok(a.ask(b"P\n", "the first connection's finished UP"), "UP")
    return "a second connection was served while the first was open mid-command"


def check_r11(open_conn: Opener) -> str:
    names = command_names(open_conn)
    missing = [n for n in REQUIRED_NAMES if n not in names]
    if missing:
        raise CheckFailed(f"GET_PCOMMS must list {missing} too; it lists {names}")
    return (
        f"{len(names)} commands listed: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}"
    )


def check_r14(open_conn: Opener) -> str:
    """A module may leave AUTH out (then it binds loopback only), but one that answers AUTH must
    compare the token: accepting any token is worse than having none, it looks safe."""
    wrong = json.dumps({"token": f"conformance-wrong-{secrets.token_hex(8)}"}).encode()
    with open_conn() as c:  # deliberately without AUTH
        gated = c.ask(b"UP\n", "UP before AUTH").get("ok") is not True
        token_given = bool(c.token)
    with open_conn() as c:
        r = c.ask(b"AUTH|" + wrong + b"\n", "AUTH with a wrong token")
    if r.get("ok") is not True:
        return f"a wrong token got an error: {str(r.get('error'))[:70]!r}"
    if token_given or gated:
        why = "--token was given" if token_given else "commands need AUTH"
        raise CheckFailed(
            f"AUTH accepted a wrong token ({why}); compare it with the module's token "
            "(constant time) and answer ok: false otherwise"
        )
    return (
        "the module has no token (commands work without AUTH), so AUTH had nothing to check; "
        "start it with a token and pass --token to check that it refuses wrong ones"
    )
