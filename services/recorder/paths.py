"""File names for recordings: template expansion and the checks done before anything starts.

Kept apart from the recording engine so START can refuse a bad path (unknown template field,
a field value that would change the folder, unwritable directory, existing file) before a single
thread or inlet exists. Where a name may go at all is :func:`shared_utils.paths.resolve_in`'s
rule: inside the data folder, absolute paths elsewhere only with ``--allow-absolute-paths``.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared_utils.checks import short
from shared_utils.errors import CommandError

MAX_FIELD = 128  # characters in one template field's value

#: LabRecorder's file-name wildcards (remote-control ``filename {template:...}``) -> our fields
LABRECORDER_WILDCARDS = {
    "%p": "participant",
    "%s": "session",
    "%b": "task",
    "%n": "run",
    "%a": "acquisition",
    "%m": "modality",
}


MAX_SPEC_WIDTH = 64  # {run:03d} is useful; {date:.<50000000} is a memory bomb


def template_fields(template: str) -> list[str]:
    """Names of the ``{field}`` placeholders in ``template`` (format specs allowed)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise CommandError(f"bad file template {short(template)}: {e}") from None
    names = []
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        widths = [int(n) for n in re.findall(r"\d+", spec or "")]
        if "{" in (spec or ""):  # a width from a value: as large as the value says
            raise CommandError(
                f"nested placeholder in {{{name}:{short(spec, 40)[1:-1]}}} of file template: "
                f"give widths as numbers up to {MAX_SPEC_WIDTH} (e.g. {{run:03d}})"
            )
        if widths and max(widths) > MAX_SPEC_WIDTH:
            raise CommandError(
                f"format {{{name}:{short(spec, 40)[1:-1]}}} in file template asks for "
                f"{max(widths)} characters; widths up to {MAX_SPEC_WIDTH} (e.g. {{run:03d}})"
            )
        if not name.isidentifier():
            raise CommandError(
                f"bad placeholder {{{name}}} in file template {short(template)}: use plain names such "
                "as {subject}, {session}, {run}, {date}"
            )
        names.append(name)
    return names


def expand_template(
    template: str, values: Mapping[str, Any], now: _dt.datetime | None = None
) -> str:
    """Fill ``{subject}``-style placeholders; ``{date}`` (YYYYMMDD) and ``{time}`` (HHMMSS) are
    always available. A missing value is an error that names it (no silent 'None' in paths)."""
    now = now or _dt.datetime.now()
    vals: dict[str, Any] = {"date": now.strftime("%Y%m%d"), "time": now.strftime("%H%M%S")}
    vals.update({k: v for k, v in values.items() if v is not None})
    missing = [n for n in template_fields(template) if n not in vals]
    if missing:
        need = ", ".join(f'"{m}"' for m in dict.fromkeys(missing))
        raise CommandError(
            f"file template {short(template)} needs {need}: pass them with START "
            f'(e.g. START|{{"file": "...", {need.split(",")[0]}: "01"}})'
        )
    try:
        return template.format(**vals)
    except (ValueError, TypeError) as e:
        raise CommandError(f"cannot fill file template {short(template)}: {e}") from None


def expand_labrecorder(template: str, values: Mapping[str, Any]) -> str:
    """Replace LabRecorder's ``%p %s %b %n %a %m`` wildcards with their values."""
    out = template
    for wc, key in LABRECORDER_WILDCARDS.items():
        out = out.replace(wc, str(values.get(key, "")))
    return out


def check_fields(template: str, values: Mapping[str, Any]) -> None:
    """The values of the fields ``template`` uses are plain names: a string or number without
    a path separator or ``..``, so a field can never move the file into another folder (the
    template itself is checked as a whole against the data folder)."""
    for name in dict.fromkeys(template_fields(template)):
        value = values.get(name)
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, str | int | float):
            raise CommandError(
                f'template field "{name}" must be a string or a number, got {short(value)}'
            )
        text = str(value)
        if len(text) > MAX_FIELD:
            raise CommandError(
                f'template field "{name}" is {len(text)} characters long (at most {MAX_FIELD})'
            )
        if "/" in text or "\\" in text or ".." in text or any(ord(c) < 32 for c in text):
            raise CommandError(
                f'template field "{name}" = {text!r} may not contain "/", "\\", ".." or '
                "control characters: field values name a file, they do not choose its folder"
            )


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse targets that would lose data or cannot be written; create missing folders.

    ``path`` is already resolved inside the data folder (:func:`shared_utils.paths.resolve_in`).
    """
    if path.is_dir():
        raise CommandError(f"{path} is a directory; give a file name ending in .xdf")
    if path.exists() and not overwrite:
        raise CommandError(
            f"{path} already exists; refusing to overwrite recorded data. Choose another name "
            'or pass "overwrite": true'
        )
    blocker = next((p for p in [*reversed(path.parents)] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise CommandError(f"cannot write {path}: {blocker} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(f"cannot create folder {path.parent}: {e.strerror or e}") from None
    if not os.access(path.parent, os.W_OK):
        raise CommandError(f"folder {path.parent} is not writable")
