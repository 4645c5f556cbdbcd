"""Check a running module, in any language, against the rules of ``docs/protocol.md`` section 8.

    python -m shared_utils.conformance 127.0.0.1:8101 [--timeout 2] [--token T] [--json] [--strict]

Prints one line per rule: PASS, FAIL (a required rule) or WARN (a recommended one). Exits 0 when
every required rule passes (warnings are printed, not counted; ``--strict`` counts them), 1 when
one fails, 2 when nothing listens there. ``run_checks(host, port)`` returns the same results as a
list of :class:`CheckResult` (the control room's ``check`` subcommand uses it).

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

from shared_utils.protocol import conformance_recommended as rec
from shared_utils.protocol import conformance_rules as req
from shared_utils.protocol.conformance_probe import CheckFailed, ProbeConn

REQUIRED = "required"
RECOMMENDED = "recommended"


@dataclass
class CheckResult:
    """The outcome of one rule; ``level`` says whether a failure fails the module."""

    rule: str
    title: str
    ok: bool
    detail: str
    level: str = REQUIRED

    @property
    def verdict(self) -> str:
        return "PASS" if self.ok else ("FAIL" if self.level == REQUIRED else "WARN")

    def line(self) -> str:
        return f"{self.rule:<4}{self.verdict}  {self.title}: {self.detail}"


Rule = tuple[str, str, str, Callable[[Callable[[], ProbeConn]], str]]
RULES: list[Rule] = [
    ("R1", REQUIRED, "UP gets one JSON reply line", req.check_r1),
    ("R2", REQUIRED, "split and coalesced commands", req.check_r2),
    ("R3", REQUIRED, "replies in request order", req.check_r3),
    ("R4", REQUIRED, "unknown command is an error, server goes on", req.check_r4),
    ("R5", REQUIRED, "JSON request id echoed", req.check_r5),
    ("R6", REQUIRED, "malformed payloads are errors, server goes on", req.check_r6),
    ("R7", RECOMMENDED, "semicolon mode replies like dareplane-utils", rec.check_r7),
    ("R8", RECOMMENDED, "line over 1 MiB: error, connection closed", rec.check_r8),
    ("R9", REQUIRED, "several connections at once", req.check_r9),
    ("R10", RECOMMENDED, "HELP lists GET_PCOMMS' commands with arguments", rec.check_r10),
    ("R11", REQUIRED, "GET_PCOMMS lists the commands", req.check_r11),
    ("R12", RECOMMENDED, "STATUS answers", rec.check_r12),
    ("R13", RECOMMENDED, "SUBSCRIBE answers", rec.check_r13),
    ("R14", REQUIRED, "AUTH never accepts a wrong token", req.check_r14),
    ("R15", RECOMMENDED, "off loopback, commands need AUTH", rec.check_r15),
    ("R16", RECOMMENDED, "STOP and CLOSE for a clean shutdown", rec.check_r16),
]


def failures(results: list[CheckResult], strict: bool = False) -> list[str]:
    """Rules that fail the module: required ones, and with ``strict`` recommended ones too."""
    return [r.rule for r in results if not r.ok and (strict or r.level == REQUIRED)]


def summary(target: str, results: list[CheckResult], strict: bool = False) -> str:
    """The last line of a report: how many passed, what failed, what is only a warning."""
    failed = failures(results, strict)
    warned = [r.rule for r in results if not r.ok and r.rule not in failed]
    passed = sum(r.ok for r in results)
    text = f"{target}: {passed}/{len(results)} pass; "
    text += f"FAILED: {', '.join(failed)}" if failed else "all required rules pass"
    return text + (f"; warnings: {', '.join(warned)}" if warned else "")


def run_checks(
    host: str,
    port: int,
    timeout: float = 2.0,
    token: str | None = None,
    rules: list[str] | None = None,
) -> list[CheckResult]:
    """Run the conformance rules (all, or the named ones) against ``host:port``.

    ``ok`` is false for every rule that did not pass, required or recommended; use
    :func:`failures` to decide whether the module fails.
    """
    results = []

    def open_conn() -> ProbeConn:
        return ProbeConn(host, port, timeout, token)

    for rule, level, title, check in RULES:
        if rules is not None and rule not in rules:
            continue
        try:
            results.append(CheckResult(rule, title, True, check(open_conn), level))
        except CheckFailed as exc:
            results.append(CheckResult(rule, title, False, str(exc), level))
        except Exception as exc:  # a rule must report, never crash the tool
            results.append(CheckResult(rule, title, False, f"{type(exc).__name__}: {exc}", level))
    return results


def _parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared_utils.conformance",
        description="Check a running module against docs/protocol.md section 8: required rules "
        "fail, recommended ones warn.",
    )
    parser.add_argument("target", type=_parse_target, help="HOST:PORT of the module")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait per reply")
    parser.add_argument("--token", default=None, help="AUTH token for modules off loopback")
    parser.add_argument("--rule", action="append", help="check only this rule (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per rule")
    parser.add_argument(
        "--strict", action="store_true", help="recommended rules fail too (exit 1 on a warning)"
    )
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
    if not args.json:
        print(summary(f"{host}:{port}", results, args.strict))
    return 1 if failures(results, args.strict) else 0


if __name__ == "__main__":
    raise SystemExit(main())
