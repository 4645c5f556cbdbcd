"""Macro templates and reply checks: ``$name`` / ``${name.key}`` substitution and ``expect``.

Templating: ``"$name"`` or ``"${name.key}"`` inside string values. A string that is exactly one
template keeps the value's type (``"$streams"`` -> ``null``, ``"${fit.accuracy}"`` -> 0.93);
otherwise values are inserted as text. An unknown name fails the step and names what is available.
"""

from __future__ import annotations

import re
from typing import Any

_FULL = re.compile(r"^\$(?:\{([A-Za-z_][\w.\-]*)\}|([A-Za-z_]\w*))$")
_PART = re.compile(r"\$(?:\{([A-Za-z_][\w.\-]*)\}|([A-Za-z_]\w*))")


class MacroError(Exception):
    """A step failed; the text says which step, what it did and why."""


def lookup(ctx: dict[str, Any], dotted: str) -> Any:
    cur: Any = ctx
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            avail = ", ".join(sorted(k for k in ctx if not k.startswith("_")))
            raise MacroError(
                f"template ${{{dotted}}}: no value for {part!r} (known names: {avail})"
            )
    return cur


def render(value: Any, ctx: dict[str, Any]) -> Any:
    """Substitute templates in every string inside ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        m = _FULL.match(value)
        if m:
            return lookup(ctx, m.group(1) or m.group(2))
        return _PART.sub(lambda mm: str(lookup(ctx, mm.group(1) or mm.group(2))), value)
    if isinstance(value, dict):
        return {k: render(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, ctx) for v in value]
    return value


def check_expect(result: Any, expect: dict[str, Any]) -> str | None:
    """None if ``result`` matches every ``expect`` entry, else what differed.

    Keys are dotted paths into the result; a value is compared for equality, or a table of
    operators: ``{">=": 5}``, ``{"!=": "running"}``.
    """
    for key, want in expect.items():
        try:
            got = lookup(result if isinstance(result, dict) else {"result": result}, key)
        except MacroError:
            return f"{key} missing in reply"
        tests = want if isinstance(want, dict) else {"==": want}
        for op, ref in tests.items():
            try:
                ok = {
                    "==": lambda a, b: a == b,
                    "!=": lambda a, b: a != b,
                    ">=": lambda a, b: a >= b,
                    "<=": lambda a, b: a <= b,
                    ">": lambda a, b: a > b,
                    "<": lambda a, b: a < b,
                }[op](got, ref)
            except (KeyError, TypeError):
                return f"{key}: cannot test {got!r} {op} {ref!r}"
            if not ok:
                return f"{key} is {got!r}, want {op} {ref!r}"
    return None
