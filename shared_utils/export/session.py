"""What a session holds, as the export reads it: one XDF file, optional metadata, Bpod trials.

The session folder contract (written by the session work, read here; docs/export.md):

- exactly one ``*.xdf`` at the top of the folder (the recording);
- optionally ``session.json`` with ``exp_ref`` (``2026-12-04_1_mouse01``), ``subject``,
  ``project``, ``procedures`` (list), ``start``/``end`` (each ``{"wall": ISO-8601 with offset,
  "lsl": seconds on the recorder's LSL clock}``) and ``modules`` ({name: {...}});
- optionally Bpod trial files, ``bpod*/*.jsonl`` or ``*trials*.jsonl``: one JSON object per line,
  as the Bpod service writes them (``TrialRecord.to_dict``).

A bare ``.xdf`` file is a session too: without ``session.json`` the subject, session and task
come from the caller's options; trial files can be named explicitly.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_utils.export.report import ExportError, Findings

SESSION_FILE = "session.json"
TRIAL_GLOBS = ("bpod*/*.jsonl", "*trials*.jsonl")
EXP_REF = re.compile(r"^(\d{4})-(\d{2})-(\d{2})_(\d+)_(.+)$")


@dataclass
class ClockPoint:
    """One instant known on both clocks: wall time (tz-aware) and the recorder's LSL clock."""

    wall: _dt.datetime
    lsl: float | None


@dataclass
class SessionMeta:
    """The parts of ``session.json`` the export uses (``raw`` keeps the whole file)."""

    exp_ref: str | None = None
    subject: str | None = None
    project: str | None = None
    procedures: list[str] = field(default_factory=list)
    start: ClockPoint | None = None
    end: ClockPoint | None = None
    modules: dict[str, Any] = field(default_factory=dict)
    subject_info: dict[str, Any] = field(default_factory=dict)  # optional: species, sex, age...
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Session:
    """A recording to export: the XDF, its folder (None for a bare file) and what came with it."""

    xdf: Path
    folder: Path | None
    meta: SessionMeta | None
    trial_files: list[Path]

    @property
    def name(self) -> str:
        if self.meta is not None and self.meta.exp_ref:
            return self.meta.exp_ref
        return self.xdf.stem

    def default_out(self, fmt: str) -> Path:
        """``SESSION/<fmt>`` for a session folder, ``<stem>_<fmt>`` beside a bare XDF file."""
        if self.folder is not None:
            return self.folder / fmt
        return self.xdf.with_name(f"{self.xdf.stem}_{fmt}")


def find_session(source: str | Path, trials: list[str | Path] | None = None) -> Session:
    """The session behind ``source``: a session folder or an ``.xdf`` file (see the module doc).

    An ``.xdf`` inside a folder that has a ``session.json`` belongs to that session.
    ``trials`` names trial files explicitly (added to those found in a session folder).
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise ExportError(f"{src} does not exist (give a session folder or an .xdf file)")
    folder: Path | None
    if src.is_dir():
        xdfs = sorted(p for p in src.glob("*.xdf") if p.is_file())
        if not xdfs:
            raise ExportError(f"{src} holds no .xdf file at its top level; nothing to export")
        if len(xdfs) > 1:
            names = ", ".join(p.name for p in xdfs)
            raise ExportError(f"{src} holds several .xdf files ({names}); name the one to export")
        folder, xdf = src, xdfs[0]
    else:
        if src.suffix.lower() != ".xdf":
            raise ExportError(f"{src} is not an .xdf file or a session folder")
        xdf = src
        folder = src.parent if (src.parent / SESSION_FILE).is_file() else None
    meta = read_session_json(folder / SESSION_FILE) if folder is not None else None
    found: list[Path] = []
    if folder is not None:
        for pattern in TRIAL_GLOBS:
            found += [p for p in sorted(folder.glob(pattern)) if p.is_file() and p not in found]
    for t in trials or []:
        p = Path(t).expanduser()
        if not p.is_file():
            raise ExportError(f"trial file {p} does not exist")
        if p not in found:
            found.append(p)
    return Session(xdf=xdf, folder=folder, meta=meta, trial_files=found)


def read_session_json(path: Path) -> SessionMeta:
    """Parse ``session.json``; a malformed file is an error that names the bad key."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} must hold a JSON object, not {type(data).__name__}")

    def text(key: str) -> str | None:
        v = data.get(key)
        if v is None:
            return None
        if not isinstance(v, str | int):
            raise ExportError(f"{path}: {key!r} must be a string, got {v!r}")
        return str(v)

    procedures = data.get("procedures") or []
    if not isinstance(procedures, list):
        raise ExportError(f"{path}: 'procedures' must be a list, got {procedures!r}")
    modules = data.get("modules") or {}
    if not isinstance(modules, dict):
        raise ExportError(f"{path}: 'modules' must be an object, got {modules!r}")
    subject_info = data.get("subject_info") or {}
    if not isinstance(subject_info, dict):
        raise ExportError(f"{path}: 'subject_info' must be an object, got {subject_info!r}")
    return SessionMeta(
        subject_info=subject_info,
        exp_ref=text("exp_ref"),
        subject=text("subject"),
        project=text("project"),
        procedures=[str(p) for p in procedures],
        start=_clock_point(path, "start", data.get("start")),
        end=_clock_point(path, "end", data.get("end")),
        modules=modules,
        raw=data,
    )


def _clock_point(path: Path, key: str, value: Any) -> ClockPoint | None:
    if value is None:
        return None
    if not isinstance(value, dict) or "wall" not in value:
        raise ExportError(f'{path}: {key!r} must be {{"wall": ISO-8601, "lsl": seconds}}')
    wall = parse_wall(str(value["wall"]))
    if wall is None:
        raise ExportError(
            f"{path}: {key}.wall {value['wall']!r} is not an ISO-8601 time with a UTC offset"
        )
    lsl = value.get("lsl")
    if lsl is not None and (isinstance(lsl, bool) or not isinstance(lsl, int | float)):
        raise ExportError(f"{path}: {key}.lsl must be a number (seconds), got {lsl!r}")
    return ClockPoint(wall=wall, lsl=None if lsl is None else float(lsl))


def parse_wall(text: str) -> _dt.datetime | None:
    """An ISO-8601 time with its UTC offset (``+01:00`` or LabRecorder's ``+0100``), else None."""
    try:
        t = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def read_trial_files(paths: list[Path], findings: Findings) -> list[dict[str, Any]]:
    """Trial dicts from JSON-lines files; a bad line is skipped and reported, not fatal."""
    out: list[dict[str, Any]] = []
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            findings.skip(f"trial file {path}", f"cannot be read: {exc}")
            continue
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                findings.skip(f"{path.name} line {i}", f"not JSON ({exc.msg}); a cut-short write?")
                continue
            if not isinstance(d, dict) or not isinstance(d.get("trial"), int):
                findings.skip(
                    f"{path.name} line {i}", "not a Bpod trial record (no 'trial' number)"
                )
                continue
            d["_file"] = path.name
            out.append(d)
    return out


def bids_label(text: str) -> str:
    """A BIDS entity label (also used in NWB file names): letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", text)


def entity_labels(
    meta: SessionMeta | None, subject: str | None, session: str | None
) -> tuple[str | None, str | None]:
    """Subject and session: the options first, then ``session.json`` (``subject``, and the
    session from ``exp_ref``: ``2026-12-04_1_mouse01`` -> ``20261204s1``)."""
    parts = exp_ref_parts(meta.exp_ref if meta else None)
    subj = subject or (meta.subject if meta else None) or (parts[2] if parts else None)
    ses = session or (f"{parts[0]}s{parts[1]}" if parts else None)
    return subj, ses


def exp_ref_parts(exp_ref: str | None) -> tuple[str, int, str] | None:
    """``2026-12-04_1_mouse01`` -> ("20261204", 1, "mouse01"); None when it has another form."""
    m = EXP_REF.match(exp_ref or "")
    if not m:
        return None
    return f"{m[1]}{m[2]}{m[3]}", int(m[4]), m[5]
