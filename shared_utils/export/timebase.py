"""One clock for the whole export: the recorder's LSL clock, anchored to wall time.

pyxdf's clock synchronisation puts every stream on the recording host's LSL clock; the export
keeps that clock and only shifts it: time zero (``t0``) is the session start from
``session.json`` when it is known and not after the first recorded sample, else the first
recorded sample. Wall time comes from, in order: ``session.json`` ``start`` (``wall`` and ``lsl``
of one instant: exact), the XDF file header's ``datetime`` (the moment the recorder created the
file, to the second), or the file's modification time minus the recording's length.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

from shared_utils.export.report import Findings
from shared_utils.export.session import SessionMeta, parse_wall


@dataclass(frozen=True)
class TimeBase:
    """``t0`` on the LSL clock and the wall time at that instant (tz-aware)."""

    t0: float
    wall0: _dt.datetime
    how: str

    def wall(self, t: float) -> _dt.datetime:
        """Wall time of LSL time ``t``."""
        return self.wall0 + _dt.timedelta(seconds=float(t) - self.t0)


def time_base(
    meta: SessionMeta | None,
    header: dict[str, str],
    xdf_path: Path,
    span: tuple[float, float] | None,
    findings: Findings,
) -> TimeBase:
    """See the module docstring; ``span`` is the first and last timestamp in the file."""
    first, last = span if span is not None else (0.0, 0.0)
    start = meta.start if meta is not None else None
    if start is not None and start.lsl is not None:
        t0 = min(start.lsl, first)
        return TimeBase(
            t0, start.wall + _dt.timedelta(seconds=t0 - start.lsl), "session.json start"
        )
    if start is not None:
        findings.note(
            "session.json start has no 'lsl' time: its wall time is taken as the first sample's"
        )
        return TimeBase(first, start.wall, "session.json start (wall only)")
    created = parse_wall(header.get("datetime", ""))
    if created is not None:
        findings.note(
            "no session start in session.json: wall times come from the XDF header's creation "
            "time (1 s resolution)"
        )
        return TimeBase(first, created, "XDF header datetime")
    mtime = _dt.datetime.fromtimestamp(xdf_path.stat().st_mtime, _dt.UTC)
    findings.note(
        "no session start and no XDF header time: wall times come from the file's "
        "modification time minus the recording's length"
    )
    return TimeBase(first, mtime - _dt.timedelta(seconds=last - first), "file modification time")
