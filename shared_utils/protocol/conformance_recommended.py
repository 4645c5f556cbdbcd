"""The recommended conformance rules: what makes a module pleasant and safe to use, but that the
control room does without (``docs/protocol.md`` section 8). The checker reports them as warnings
unless ``--strict`` is given.

What the control room does when one is missing: no ``HELP`` -> commands come from ``GET_PCOMMS``
(no argument schemas to check against); no ``STATUS`` -> the module's status is what ``UP`` says;
no ``STOP``/``CLOSE`` -> shutdown goes straight to SIGTERM; no semicolon mode -> Dareplane's own
control room cannot drive it (ours can).
"""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

from shared_utils.protocol.conformance_probe import (
    CheckFailed,
    ask_once,
    command_names,
    expect_error,
    expect_ok,
    short,
)
from shared_utils.protocol.conformance_rules import REQUIRED_NAMES, Opener
from shared_utils.protocol.framing import MAX_LINE_BYTES


def check_r7(open_conn: Opener) -> str:
    listed: Any = None
    try:  # for comparison only; newline mode itself is judged by the other rules
        listed = command_names(open_conn)
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
        missing = [n for n in REQUIRED_NAMES if n not in names]
        if text.endswith(b"\n") or missing:
            raise CheckFailed(
                f"GET_PCOMMS; should get A|B|... without terminator incl. GET_PCOMMS and UP; "
                f"got {text[:120]!r}"
            )
        if isinstance(listed, list) and names != listed:
            raise CheckFailed(f"GET_PCOMMS; lists {names}, newline mode lists {listed}")
        c.send(b"NO_SUCH_COMMAND_R7;UP;")
        quiet = c.quiet_bytes()
        if quiet != b"1":
            raise CheckFailed(f"an unknown command must get no reply in ; mode; got {quiet!r}")
    return f"UP; -> 1, GET_PCOMMS; -> {len(names)} names, errors silent"


def check_r8(open_conn: Opener) -> str:
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
        expect_error(r, "an over-long line")
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
        expect_ok(c.ask(b"UP\n", "UP on a new connection"), "UP")
    return "over-long line got an error, the connection closed, UP answered afterwards"


def check_r10(open_conn: Opener) -> str:
    names = command_names(open_conn)
    helped = ask_once(open_conn, "HELP")
    entries = (helped.get("result") or {}).get("commands")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CheckFailed(f"HELP result needs 'commands': [{{'name': ...}}], got {short(helped)}")
    help_names = [e.get("name") for e in entries]
    if set(help_names) != set(names):
        raise CheckFailed(
            f"GET_PCOMMS and HELP differ: only in GET_PCOMMS {sorted(set(names) - set(help_names))}"
            f", only in HELP {sorted(set(help_names) - set(names))}"
        )
    no_schema = [
        e.get("name")
        for e in entries
        if not isinstance(e.get("kwargs"), list)
        or not all(isinstance(k, dict) and isinstance(k.get("name"), str) for k in e["kwargs"])
    ]
    if no_schema:
        raise CheckFailed(
            f"HELP entries without an argument schema ('kwargs': [{{'name', 'type', 'required', "
            f"'default'}}]): {no_schema[:8]}"
        )
    return f"{len(names)} commands, same in GET_PCOMMS and HELP, each with its arguments"


def check_r12(open_conn: Opener) -> str:
    result = ask_once(open_conn, "STATUS").get("result")
    if not isinstance(result, dict) or not isinstance(result.get("module"), str):
        raise CheckFailed(f"STATUS result should be an object with 'module', got {short(result)}")
    return f"STATUS answered with {sorted(result)[:8]}"


def check_r13(open_conn: Opener) -> str:
    result = ask_once(open_conn, "SUBSCRIBE").get("result")
    if result is not True:
        raise CheckFailed(f"SUBSCRIBE should answer true, got {short(result)}")
    return "SUBSCRIBE answered true"


def check_r15(open_conn: Opener) -> str:
    with open_conn() as c:
        peer = c.sock.getpeername()[0]
        if ipaddress.ip_address(peer.split("%")[0]).is_loopback:
            return f"bound to loopback ({peer}): a token is optional here"
        r = c.ask(b"UP\n", "UP before AUTH")
    if r.get("ok") is True:
        raise CheckFailed(
            f"{peer} is not loopback and the module answers without AUTH: anyone on the network "
            "can command it; require a token (MESH_TOKEN) and AUTH first"
        )
    return f"{peer}: commands need AUTH first ({str(r.get('error'))[:60]!r})"


def check_r16(open_conn: Opener) -> str:
    names = command_names(open_conn)
    missing = [n for n in ("STOP", "CLOSE") if n not in names]
    if missing:
        raise CheckFailed(
            f"{missing} not listed: the control room then stops the module with SIGTERM "
            "instead of asking it to close"
        )
    return "STOP and CLOSE listed (CLOSE itself is not sent: it would end the module)"
