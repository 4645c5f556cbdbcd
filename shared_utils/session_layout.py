"""Where a session's files go: one folder per experiment reference, laid out the way IBL does.

``2026-12-04_3_mouse01`` lives in ``<data>/mouse01/2026-12-04/003/``. Why IBL's layout and not a
flat ``<data>/<exp_ref>/``: it is what iblrig writes and what ONE and ibllib read back
(subject/date/number), so a lab that already has IBL tooling finds our sessions where it looks,
a subject's history is one folder, and "the N-th session of this subject today" is counted by
listing one folder, so the number a main sync proposes can be checked by anyone with ``ls``.

Every module that writes a part of a session computes the folder from the ``exp_ref`` alone
(:func:`session_folder`), so nothing but the reference has to travel between hosts; on each host
the folder sits in that host's mesh data folder (``$MESH_DATA_DIR``).

Also here: :func:`write_json_atomic`, the one way session files are written (temp file, fsync,
rename), so a crash never leaves a half-written ``session.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from shared_utils.errors import CommandError
from shared_utils.paths import data_dir

__all__ = [
    "ExpRef",
    "check_subject",
    "next_exp_ref",
    "parse_exp_ref",
    "part_folder",
    "relative_folder",
    "session_folder",
    "wall_clock",
    "write_json_atomic",
]

_EXP_REF = re.compile(r"^(\d{4}-\d{2}-\d{2})_(\d+)_([A-Za-z0-9][A-Za-z0-9._-]*)$")
_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NUMBER_WIDTH = 3  # IBL pads the session number to three digits: 001


class ExpRef(tuple[str, int, str]):
    """(date ``yyyy-mm-dd``, number, subject) of an experiment reference."""

    @property
    def date(self) -> str:
        return self[0]

    @property
    def number(self) -> int:
        return self[1]

    @property
    def subject(self) -> str:
        return self[2]

    def __str__(self) -> str:
        return f"{self[0]}_{self[1]}_{self[2]}"


def check_subject(subject: Any) -> str:
    """A subject name usable in a folder and an exp_ref, or ValueError saying what is wrong."""
    if not isinstance(subject, str) or not _SUBJECT.match(subject) or len(subject) > 128:
        raise ValueError(
            f"subject must be letters, digits, '.', '_' or '-' (starting with a letter or "
            f"digit, at most 128 characters), got {subject!r}"
        )
    return subject


def parse_exp_ref(exp_ref: Any) -> ExpRef:
    """``yyyy-mm-dd_N_subject`` -> :class:`ExpRef`; ValueError for anything else.

    iblutil also sends the reference as ``{"date", "sequence", "subject"}``; that form is
    accepted too.
    """
    if isinstance(exp_ref, dict) and {"date", "sequence", "subject"} <= set(exp_ref):
        exp_ref = f"{exp_ref['date']}_{exp_ref['sequence']}_{exp_ref['subject']}"
    m = _EXP_REF.match(exp_ref) if isinstance(exp_ref, str) else None
    if m is None:
        raise ValueError(
            f"exp_ref must look like 'yyyy-mm-dd_N_subject' (e.g. 2026-12-04_1_mouse01), "
            f"got {exp_ref!r}"
        )
    try:
        _dt.date.fromisoformat(m[1])
    except ValueError:
        raise ValueError(f"exp_ref {exp_ref!r}: {m[1]} is not a calendar date") from None
    if int(m[2]) < 1:
        raise ValueError(f"exp_ref {exp_ref!r}: the session number starts at 1")
    return ExpRef((m[1], int(m[2]), m[3]))


def session_folder(root: str | os.PathLike[str], exp_ref: Any) -> Path:
    """``<root>/<subject>/<yyyy-mm-dd>/<NNN>`` for ``exp_ref`` (not created here)."""
    ref = parse_exp_ref(exp_ref)
    return Path(root) / ref.subject / ref.date / f"{ref.number:0{NUMBER_WIDTH}d}"


def part_folder(
    exp_ref: Any, part: str | None = None, root: str | os.PathLike[str] | None = None
) -> Path:
    """The session folder of ``exp_ref`` (or its sub-folder ``part``, e.g. ``bpod``) in this
    host's data folder (``root``, default ``$MESH_DATA_DIR``), created; what a module's EXPINIT
    calls. Refuses with a :class:`CommandError` that says why."""
    try:
        folder = session_folder(root if root is not None else data_dir(), exp_ref)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if part:
        folder = folder / part
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create the session folder {folder}: {exc.strerror}") from None
    return folder


def relative_folder(exp_ref: Any) -> str:
    """The session folder relative to the data folder, with ``/`` (for replies and JSON)."""
    return session_folder(".", exp_ref).as_posix().removeprefix("./")


def next_exp_ref(root: str | os.PathLike[str], subject: str, day: _dt.date | None = None) -> str:
    """The reference of ``subject``'s next session on ``day`` (default today, local time).

    One more than the highest numbered folder of that day (1 for the first): a number is never
    reused, even after a session folder was deleted from the middle of the day.
    """
    check_subject(subject)
    day = day or _dt.date.today()
    folder = Path(root) / subject / day.isoformat()
    numbers = [int(p.name) for p in _children(folder) if p.name.isdigit() and p.is_dir()]
    return f"{day.isoformat()}_{max(numbers, default=0) + 1}_{subject}"


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:  # no folder yet: no session yet
        return []


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` so that readers see the old file or the new
    one, never a part: a temporary file in the same folder, fsync, then rename over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; session files are shared like the data
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def wall_clock() -> str:
    """Now as ISO 8601 with the local UTC offset (what ``session.json`` ``wall`` holds)."""
    return _dt.datetime.now().astimezone().isoformat(timespec="microseconds")
