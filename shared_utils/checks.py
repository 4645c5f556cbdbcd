"""Checks and the messages they give: every name lookup and argument check in the mesh uses these.

Why one place: a person who mistypes a command, a stream, a module or a config key should get the
same kind of answer everywhere, saying what was wrong, the closest valid name and all valid
choices; and a number that is not finite or out of range must be refused at the boundary, not
explode three calls later.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "check_number",
    "check_point",
    "check_text",
    "did_you_mean",
    "resolve_name",
    "unknown_message",
]


def did_you_mean(name: str, valid: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The valid name closest to ``name`` (case-insensitive), or None when nothing is close."""
    choices = [str(v) for v in valid]
    folded = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(folded), n=1, cutoff=cutoff)
    return folded[close[0]] if close else None


def unknown_message(
    kind: str,
    name: Any,
    valid: Iterable[str],
    *,
    limit: int = 40,
    shown: Iterable[str] | None = None,
) -> str:
    """``unknown <kind> 'x' (did you mean 'y'?); valid: a, b, c`` (long lists cut at ``limit``).

    ``shown`` replaces the listed choices when the full list is long but has a compact form
    (Bpod's ``Valve1..Valve8``); the suggestion is still made among all of ``valid``.
    """
    choices = [str(v) for v in valid]
    close = did_you_mean(str(name), choices)
    hint = f" (did you mean {close!r}?)" if close else ""
    listed = [str(v) for v in shown] if shown is not None else choices
    text = ", ".join(listed[:limit]) + (
        f", ... ({len(listed)} in all)" if len(listed) > limit else ""
    )
    return f"unknown {kind} {shorten(name)}{hint}; valid: {text or 'none'}"


def resolve_name(name: str, names: Iterable[str]) -> str | None:
    """Exact match first, then a unique case-insensitive match (``start`` finds ``START``)."""
    names = list(names)
    if name in names:
        return name
    folded = [n for n in names if n.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def is_finite_number(value: Any) -> bool:
    """True for an int or a finite float (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)


def shorten(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a megabyte of junk is not echoed back."""
    r = repr(value)
    return r if len(r) <= limit else f"{r[: limit - 3]}... ({len(r)} characters)"


def check_number(
    what: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    integer: bool = False,
) -> Any:
    """``value`` if it is a finite number (an integer when ``integer``) in ``lo..hi``.

    Raises :class:`~shared_utils.errors.CommandError` naming ``what``, the range and the value, so
    a documented range is enforced and explained by the same line.
    """
    from shared_utils.errors import CommandError

    kind = "an integer" if integer else "a number"
    span = f" in {_num(lo)}..{_num(hi)}" if lo is not None and hi is not None else ""
    if lo is not None and hi is None:
        span = f" >= {_num(lo)}"
    ok = is_finite_number(value) and (isinstance(value, int) or not integer)
    if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise CommandError(f"{what} must be {kind}{span}, got {shorten(value)}")
    return value


def check_text(what: str, value: Any, max_len: int, *, min_len: int = 1) -> str:
    """``value`` if it is a string of ``min_len..max_len`` characters, else a CommandError."""
    from shared_utils.errors import CommandError

    if not isinstance(value, str):
        raise CommandError(f"{what} must be a string, got {shorten(value)}")
    if not min_len <= len(value) <= max_len:
        need = f"{min_len}..{max_len}" if min_len else f"at most {max_len}"
        raise CommandError(f"{what} must have {need} characters, got {len(value)}")
    return value


def check_point(what: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> list:
    """``[a, b]``: two numbers, each in ``lo..hi`` (a position, a size)."""
    from shared_utils.errors import CommandError

    if not isinstance(value, list | tuple) or len(value) != 2:
        kind = "integers" if integer else "numbers"
        raise CommandError(
            f"{what} must be a list of two {kind} in {_num(lo)}..{_num(hi)}, got {shorten(value)}"
        )
    return [check_number(f"{what}[{i}]", v, lo, hi, integer=integer) for i, v in enumerate(value)]


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)
