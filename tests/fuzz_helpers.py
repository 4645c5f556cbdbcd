"""Fuzzing a running module through its own HELP: every command, every argument, bad values.

Shared by the presenter and Bpod tests. The values are the classic boundary cases (wrong types,
huge, negative, zero, long strings, path traversal); each is sent in place of one argument of an
otherwise harmless call. The module must answer every line with exactly one reply, an error
must be a sentence (never "X raised TypeError", never a traceback, never an echo of a megabyte),
and afterwards the module still answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from wire_helpers import Wire

LONG = "x" * 100_000
BAD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    -(2**63),
    2**63 - 1,
    1e308,
    -1e308,
    1e-300,
    0.5,
    "",
    "é✓\u202e",
    "a\ud800b.png",  # a lone surrogate: valid JSON, not text
    LONG,
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    "a/../../b.png",
    "~/x.png",
    [],
    [None, None],
    [1e308, -1e308],
    [1] * 1000,
    ["a", "b", "c"],
    {"a": 1},
    {"": [LONG]},
]
MAX_ERROR_CHARS = 2000
PROTOCOL_ONLY = ("CLOSE", "AUTH", "SUBSCRIBE", "UP", "HELP", "GET_PCOMMS")


def fuzz_lines(
    help_result: dict[str, Any],
    base: dict[str, dict[str, Any]],
    skip: Callable[[str, str, Any], bool] = lambda cmd, arg, value: False,
) -> Iterator[tuple[str, list[str]]]:
    """``(command, lines)`` for every command in a HELP reply: one line per (argument, bad
    value) on top of ``base[command]``, plus an unknown argument and a missing one."""
    for entry in help_result["commands"]:
        name = entry["name"]
        if name in PROTOCOL_ONLY or name.startswith("EXP"):
            continue  # CLOSE ends the module; the others are the protocol's, fuzzed elsewhere
        args = dict(base.get(name, {}))
        lines = [f"{name}|{json.dumps({**args, 'no_such_argument': 1})}"]
        if args:
            first = next(iter(args))
            lines.append(f"{name}|{json.dumps({k: v for k, v in args.items() if k != first})}")
        for kw in entry["kwargs"]:
            for value in BAD_VALUES:
                if not skip(name, kw["name"], value):
                    lines.append(f"{name}|{json.dumps({**args, kw['name']: value})}")
        yield name, lines


def send_all(port: int, lines: list[str]) -> list[dict[str, Any]]:
    """Send ``lines`` in one write (pipelined) and read exactly one reply per line."""
    with Wire(port) as w:
        w.send(("\n".join(lines) + "\n").encode())
        return [w.reply() for _ in lines]


def check_replies(lines: list[str], replies: list[dict[str, Any]]) -> list[str]:
    """Problems found: a reply that is not a clean answer to its line."""
    problems = []
    for line, reply in zip(lines, replies, strict=True):
        head = line[:120]
        if "ok" not in reply:
            problems.append(f"{head}: no 'ok' in {str(reply)[:200]}")
        elif not reply["ok"]:
            err = str(reply.get("error"))
            if " raised " in err or "Traceback" in err:
                problems.append(f"{head}: {err[:300]}")
            elif len(err) > MAX_ERROR_CHARS:
                problems.append(f"{head}: error of {len(err)} characters")
    return problems
