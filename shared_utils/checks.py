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
    return f"unknown {kind} {name!r}{hint}; valid: {text or 'none'}"


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
