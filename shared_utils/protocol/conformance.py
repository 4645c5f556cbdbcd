"""Check a running module, in any language, against the rules R1-R10 of ``docs/protocol.md``.

    python -m shared_utils.conformance 127.0.0.1:8101 [--timeout 2] [--token T] [--json]

Prints one line per rule (PASS/FAIL and what was seen) and exits 1 when a rule fails, 2 when
nothing listens there. ``run_checks(host, port)`` returns the same results as a list of
:class:`CheckResult` (the control room's ``check`` subcommand uses it).

Only raw sockets are used, never :class:`shared_utils.client.ModuleClient`, so the tool judges
the bytes on the wire exactly as a client in another language would see them. Every check opens
its own connections; a module that misbehaves in one rule does not spoil the others.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

from shared_utils.protocol.conformance_rules import (
    CheckFailed,
    ProbeConn,
    check_r1,
    check_r2,
    check_r3,
    check_r4,
    check_r5,
    check_r6,
    check_r7,
    check_r8,
    check_r9,
    check_r10,
)


@dataclass
class CheckResult:
    """The outcome of one rule."""

    rule: str
    title: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.rule:<4}{'PASS' if self.ok else 'FAIL'}  {self.title}: {self.detail}"


RULES: list[tuple[str, str, Callable[[Callable[[], ProbeConn]], str]]] = [
    ("R1", "UP gets one JSON reply line", check_r1),
    ("R2", "split and coalesced commands", check_r2),
    ("R3", "replies in request order", check_r3),
    ("R4", "unknown command is an error, server goes on", check_r4),
    ("R5", "JSON request id echoed", check_r5),
    ("R6", "malformed payloads are errors, server goes on", check_r6),
    ("R7", "semicolon mode replies like dareplane-utils", check_r7),
    ("R8", "line over 1 MiB: error, connection closed", check_r8),
    ("R9", "several connections at once", check_r9),
    ("R10", "GET_PCOMMS and HELP agree, built-ins listed", check_r10),
]


def run_checks(
    host: str,
    port: int,
    timeout: float = 2.0,
    token: str | None = None,
    rules: list[str] | None = None,
) -> list[CheckResult]:
    """Run the conformance rules (all, or the named ones) against ``host:port``."""
    results = []

    def open_conn() -> ProbeConn:
        return ProbeConn(host, port, timeout, token)

    for rule, title, check in RULES:
        if rules is not None and rule not in rules:
            continue
        try:
            results.append(CheckResult(rule, title, True, check(open_conn)))
        except CheckFailed as exc:
            results.append(CheckResult(rule, title, False, str(exc)))
        except Exception as exc:  # a rule must report, never crash the tool
            results.append(CheckResult(rule, title, False, f"{type(exc).__name__}: {exc}"))
    return results


def _parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared_utils.conformance",
        description="Check a running module against docs/protocol.md (rules R1-R10).",
    )
    parser.add_argument("target", type=_parse_target, help="HOST:PORT of the module")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait per reply")
    parser.add_argument("--token", default=None, help="AUTH token for modules off loopback")
    parser.add_argument("--rule", action="append", help="check only this rule (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per rule")
    args = parser.parse_args(argv)
    host, port = args.target
    try:
        socket.create_connection((host, port), timeout=args.timeout).close()
    except OSError as exc:
        print(f"cannot connect to {host}:{port}: {exc}", file=sys.stderr)
        return 2
    results = run_checks(host, port, args.timeout, args.token, args.rule)
    for r in results:
        print(json.dumps(asdict(r)) if args.json else r.line())
    failed = [r.rule for r in results if not r.ok]
    if not args.json:
        summary = f"FAILED: {', '.join(failed)}" if failed else "all rules pass"
        print(f"{host}:{port}: {len(results) - len(failed)}/{len(results)} pass; {summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
