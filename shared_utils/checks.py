"""Checks and the messages they give: every name lookup and argument check in the mesh uses these.

Why one place: a person who mistypes a command, a stream, a module or a config key should get the
same kind of answer everywhere, saying what was wrong, the closest valid name and all valid
choices; and a number that is not finite or out of range must be refused at the boundary, not
explode three calls later.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared_utils.errors import CommandError

__all__ = [
    "Range",
    "check_ranges",
    "check_number",
    "check_point",
    "check_string",
    "check_text",
    "choice_message",
    "did_you_mean",
    "hint",
    "resolve_name",
    "short",
    "unknown_message",
]


def did_you_mean(name: str, valid: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The valid name closest to ``name`` (case-insensitive), or None when nothing is close."""
    choices = [str(v) for v in valid]
    folded = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(folded), n=1, cutoff=cutoff)
    return folded[close[0]] if close else None


def hint(name: Any, valid: Iterable[str]) -> str:
    """`` (did you mean 'y'?)`` when a valid name is close to ``name``, else an empty string."""
    close = did_you_mean(str(name), valid)
    return f" (did you mean {close!r}?)" if close else ""


def choice_message(got: Any, valid: Iterable[str]) -> str:
    """``must be one of a, b, c, got 'x' (did you mean 'y'?)``: a setting outside a fixed set."""
    choices = [str(v) for v in valid]
    return f"must be one of {', '.join(choices)}, got {short(got)}{hint(got, choices)}"


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
    listed = [str(v) for v in shown] if shown is not None else choices
    text = ", ".join(listed[:limit]) + (
        f", ... ({len(listed)} in all)" if len(listed) > limit else ""
    )
    return f"unknown {kind} {short(name)}{hint(name, choices)}; valid: {text or 'none'}"


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages quote what a client sent,
    and a 100 kB name must not come back as a 100 kB reply."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"


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


@dataclass(frozen=True)
class Range:
    """The documented range of one numeric argument: ``lo <= x <= hi`` (``lo < x`` if ``open_lo``).

    Modules keep a ``RANGES`` table of these next to their commands and list it in their doc, so
    an absurd but finite value (a 1e300 Hz rate, a 1e9 s period) is refused with the range in the
    message instead of exhausting memory or overflowing later.
    """

    lo: float
    hi: float
    unit: str = ""
    open_lo: bool = False

    def describe(self, name: str = "x") -> str:
        """``0 < srate <= 100000 Hz``."""
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.lo:g} {'<' if self.open_lo else '<='} {name} <= {self.hi:g}{unit}"

    def contains(self, value: float) -> bool:
        above = value > self.lo if self.open_lo else value >= self.lo
        return above and value <= self.hi


def check_ranges(ranges: Mapping[str, Range], **values: Any) -> None:
    """Refuse the first value outside its range: ``srate: 1e+09 is out of range; use 0 < srate
    <= 100000 Hz``. ``None`` (an optional argument left out) and names without a range pass."""
    for name, value in values.items():
        rng = ranges.get(name)
        if rng is None or value is None:
            continue
        if not is_finite_number(value) or not rng.contains(value):
            raise CommandError(f"{name}: {short(value)} is out of range; use {rng.describe(name)}")


def check_text(name: str, value: Any, max_len: int = 256) -> None:
    """Refuse a name that is empty, too long or holds control characters (a stream or class
    name, a template field): such strings mean a client bug, and a 100 kB name would end up in
    every log line and LSL header."""
    if not isinstance(value, str) or not value.strip():
        raise CommandError(f"{name}: give a non-empty string, got {short(value)}")
    if len(value) > max_len:
        raise CommandError(f"{name}: {len(value)} characters is too long (at most {max_len})")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise CommandError(f"{name}: {short(value)} contains control characters")


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
        raise CommandError(f"{what} must be {kind}{span}, got {short(value)}")
    return value


def check_string(what: str, value: Any, max_len: int, *, min_len: int = 1) -> str:
    """``value`` if it is a string of ``min_len..max_len`` characters (any characters: shown
    text may hold newlines), else a CommandError. Names use :func:`check_text`."""
    from shared_utils.errors import CommandError

    if not isinstance(value, str):
        raise CommandError(f"{what} must be a string, got {short(value)}")
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
            f"{what} must be a list of two {kind} in {_num(lo)}..{_num(hi)}, got {short(value)}"
        )
    return [check_number(f"{what}[{i}]", v, lo, hi, integer=integer) for i, v in enumerate(value)]


def _num(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)
