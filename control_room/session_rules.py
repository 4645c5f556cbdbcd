"""Who numbers a session, and in which order participants hear about it (docs/sessions.md).

Pure functions on the participants' ``EXPINFO`` replies, so the rule is testable and readable in
one place: exactly one participant claims main sync and its proposed ``exp_ref`` is used; the
config may name the main sync (modules that would claim it then stand down), or hand the numbering
to the control room itself. Zero or two claims is an error that lists who claimed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from shared_utils.session_layout import next_exp_ref, parse_exp_ref

T = TypeVar("T")


class SessionError(RuntimeError):
    """A session could not be started or stopped as asked; the text says who and why."""


def main_first(names: list[T], key: Any, main: str | None) -> list[T]:
    """``names`` with the main sync moved to the front (it starts first and stops last, so the
    recording runs before anything it should hold starts)."""
    if main is None:
        return names
    return [n for n in names if key(n) == main] + [n for n in names if key(n) != main]


def decide_main_sync(
    subject: str, replies: dict[str, dict[str, Any]], wanted: str | None, data_dir: Path
) -> tuple[str, str]:
    """(exp_ref, main sync name) from the EXPINFO replies; :class:`SessionError` if not exactly
    one participant claims the role (or not the one ``[session] main_sync`` names)."""
    if wanted == "control_room":
        return next_exp_ref(data_dir, subject), "control_room"
    claims = [n for n, r in replies.items() if r.get("main_sync")]
    if wanted is not None and wanted not in claims:
        others = f"; claimed by: {', '.join(claims)}" if claims else ""
        raise SessionError(
            f"[session] main_sync names {wanted!r}, but its EXPINFO does not claim the role "
            f"(main_sync false){others}"
        )
    if wanted is not None and len(claims) > 1:
        raise SessionError(
            f"{len(claims)} participants claim main sync: {', '.join(claims)}; [session] "
            f"main_sync names {wanted!r}, so the others must not claim it (an iblutil rig decides "
            "this in its own configuration)"
        )
    if not claims:
        raise SessionError(
            f"no participant claims main sync (asked: {', '.join(replies) or 'nobody'}); add a "
            'recorder, or set [session] main_sync = "control_room"'
        )
    if len(claims) > 1:
        raise SessionError(
            f"{len(claims)} participants claim main sync: {', '.join(claims)}; exactly one may. "
            f'Set [session] main_sync = "{claims[0]}" (modules then stand down) or stop the '
            "others from claiming it"
        )
    main = claims[0]
    proposed = replies[main].get("exp_ref")
    try:
        ref = parse_exp_ref(proposed)
    except ValueError as exc:
        raise SessionError(f"main sync {main} proposed a bad exp_ref: {exc}") from None
    if ref.subject != subject:
        raise SessionError(f"main sync {main} proposed {proposed} for subject {subject!r}")
    return str(ref), main
