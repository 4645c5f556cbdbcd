"""From recording to analysis: a session (XDF + metadata + Bpod trials) to BIDS or NWB.

    >>> from shared_utils.export import export_session, read_raw_xdf
    >>> result = export_session("data/session1", to="nwb")       # or "bids"
    >>> print("\\n".join(result.lines()))                         # written, skipped (why), notes

Both writers are the field's libraries (MNE-BIDS + pybv/edfio, pynwb); this package decides what
goes where (``content``), puts every event on one clock (``events``, ``trials``, ``timebase``),
and guards the output: a folder that exists is refused unless ``overwrite``; everything is
written into a hidden staging folder beside it and renamed into place only when complete, so a
failed or interrupted export leaves no half-written dataset behind. Samples are spooled to disk
while reading, so an hour of 64 ch at 1 kHz exports in well under 2 GB of memory.

The libraries are an optional extra (``pip install 'closedloop-mesh[export]'``), imported only
when an export runs; :func:`missing_dependencies` names what is absent.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared_utils.checks import unknown_message
from shared_utils.export.mne_raw import read_raw_xdf
from shared_utils.export.recording import ExportOptions, Recording, open_recording
from shared_utils.export.report import ExportError, ExportResult, Findings, Skipped
from shared_utils.export.session import Session, find_session

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportOptions",
    "ExportResult",
    "Skipped",
    "export_many",
    "export_session",
    "find_session",
    "missing_dependencies",
    "plan_outputs",
    "read_raw_xdf",
]

FORMATS = ("bids", "nwb")
NEEDS = {"bids": ("mne", "mne_bids", "pybv"), "nwb": ("pynwb", "hdmf")}
Progress = Callable[[str], None]


def missing_dependencies(formats: Sequence[str] = FORMATS) -> list[str]:
    """Python packages an export to ``formats`` needs and cannot import."""
    names = dict.fromkeys(m for f in formats for m in NEEDS.get(f, ()))
    return [m for m in names if not _importable(m)]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module blocked or half-installed
        return False


def plan_outputs(
    session: Session, formats: Sequence[str], out: str | Path | None, overwrite: bool
) -> dict[str, Path]:
    """Output folder per format; refuses unknown formats and existing folders (no overwrite).

    ``out`` is the folder itself for one format, the parent of ``<out>/<format>`` for several;
    without it, :meth:`Session.default_out`.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(unknown_message("export format", unknown or formats, FORMATS))
    if out is None:
        outs = {f: session.default_out(f) for f in formats}
    elif len(formats) == 1:
        outs = {formats[0]: Path(out).expanduser()}
    else:
        outs = {f: Path(out).expanduser() / f for f in formats}
    for fmt, path in outs.items():
        if path.exists() and not overwrite:
            raise ExportError(
                f"{path} already exists; refusing to overwrite it (pass --overwrite, or --out "
                "another folder)"
            )
        if path.exists() and not path.is_dir():
            raise ExportError(f"{path} exists and is not a folder")
        if path.resolve() in (session.xdf.resolve(), session.xdf.parent.resolve()):
            raise ExportError(f"{fmt} output {path} would replace the recording itself")
    return outs


def export_session(
    source: str | Path, to: str, out: str | Path | None = None, overwrite: bool = False, **kw: Any
) -> ExportResult:
    """Export ``source`` (session folder or ``.xdf``) to ``to`` ("bids" or "nwb") in ``out``;
    keyword arguments as :func:`export_many` (``trials``, ``options``, ``validate``,
    ``progress``)."""
    return export_many(source, [to], out, overwrite, **kw)[0]


def export_many(
    source: str | Path,
    formats: Sequence[str],
    out: str | Path | None = None,
    overwrite: bool = False,
    *,
    trials: Sequence[str | Path] | None = None,
    options: ExportOptions | None = None,
    validate: bool = False,
    progress: Progress | None = None,
) -> list[ExportResult]:
    """Read ``source`` once and export it to each of ``formats`` (see :func:`plan_outputs`)."""
    say = progress or (lambda _stage: None)
    opts = options or ExportOptions()
    session = find_session(source, list(trials or []))
    outs = plan_outputs(session, list(formats), out, overwrite)
    missing = missing_dependencies(list(outs))
    if missing:
        raise ExportError(
            f"exporting needs {', '.join(missing)}: pip install 'closedloop-mesh[export]'"
        )
    first = next(iter(outs.values()))
    first.parent.mkdir(parents=True, exist_ok=True)
    scratch = first.parent / f".export-{uuid.uuid4().hex[:8]}.work"
    results = []
    try:
        say(f"reading {session.xdf.name}")
        t_read = time.monotonic()
        rec = open_recording(session, scratch / "spool")
        read_s = time.monotonic() - t_read
        for fmt, path in outs.items():
            t0 = time.monotonic()
            say(f"writing {fmt} to {path}")
            findings = rec.findings.copy()
            files = _write_staged(rec, fmt, path, scratch, opts, findings, overwrite)
            res = ExportResult(
                format=fmt,
                source=session.xdf,
                out=path,
                files=files,
                skipped=findings.skipped,
                notes=findings.notes,
                seconds=time.monotonic() - t0 + read_s,
            )
            if validate:
                say(f"validating {fmt}")
                res.validation = _validate(fmt, path, files)
            results.append(res)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say("done")
    return results


def _write_staged(
    rec: Recording,
    fmt: str,
    path: Path,
    scratch: Path,
    opts: ExportOptions,
    findings: Findings,
    overwrite: bool,
) -> list[Path]:
    """Write into a staging folder beside ``path``; rename into place only when complete."""
    from shared_utils.export.bids import write_bids
    from shared_utils.export.nwb import write_nwb

    path.parent.mkdir(parents=True, exist_ok=True)
    stage = path.parent / f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        if fmt == "bids":
            write_bids(rec, stage, scratch / "bids", opts, findings)
        else:
            write_nwb(rec, stage, opts, findings)
        if path.exists():
            if not overwrite:  # appeared while we were writing
                raise ExportError(f"{path} appeared during the export; not overwritten")
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:6]}"
            path.rename(old)
            stage.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return sorted(p for p in path.rglob("*") if p.is_file())


def _validate(fmt: str, path: Path, files: list[Path]) -> dict:
    from shared_utils.export.validate import inspect_nwb, validate_bids

    if fmt == "bids":
        return validate_bids(path)
    nwbs = [f for f in files if f.suffix == ".nwb"]
    return inspect_nwb(nwbs[0]) if nwbs else {"tool": "nwbinspector", "errors": None}
