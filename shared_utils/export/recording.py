"""A session read once for any number of exports: streams sorted, events and time base ready."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_utils.export.content import Plan, plan_streams
from shared_utils.export.events import Event, all_events, stream_events
from shared_utils.export.report import ExportError, Findings
from shared_utils.export.session import Session, read_trial_files
from shared_utils.export.timebase import TimeBase, time_base
from shared_utils.export.trials import Trial, build_trials, is_bpod_stream
from shared_utils.streams.xdf_reader import XdfFile, XdfReadError, load_xdf

#: a jump in a regular stream's timestamps longer than both starts a new segment (a gap)
GAP_S = 0.25
GAP_SAMPLES = 50


@dataclass
class ExportOptions:
    """What the caller may set; everything else comes from the session."""

    subject: str | None = None
    session: str | None = None
    task: str | None = None
    line_freq: float | None = None
    bids_format: str = "BrainVision"  # or "EDF"
    subject_info: dict[str, Any] = field(default_factory=dict)  # over session.json's


@dataclass
class Recording:
    """Everything the writers need, read from the session once."""

    session: Session
    xdf: XdfFile
    plan: Plan
    events: list[Event]
    base: TimeBase
    trials: list[Trial]
    findings: Findings

    @property
    def bpod_streams(self) -> list[str]:
        return sorted({t.stream for t in self.trials if t.stream})


def open_recording(session: Session, spool_dir: Path | None) -> Recording:
    """Read the XDF (samples spooled to ``spool_dir`` when given) and what comes with it."""
    findings = Findings()
    try:
        xdf = load_xdf(session.xdf, spool_dir=spool_dir, gap_s=GAP_S, gap_samples=GAP_SAMPLES)
    except XdfReadError as exc:
        raise ExportError(str(exc)) from None
    if not xdf.streams:
        raise ExportError(f"{session.xdf} holds no streams; nothing to export")
    if xdf.torn_bytes:
        findings.skip(
            f"last {xdf.torn_bytes} bytes of {session.xdf.name}",
            "a chunk cut short (crash); everything before it was read",
        )
    plan = plan_streams(xdf.streams, findings)
    span = plan.time_span()
    if span is None:
        raise ExportError(
            f"{session.xdf}: no stream has any sample ("
            + ", ".join(s.name for s in xdf.streams)
            + "); nothing to export"
        )
    events = all_events(plan, findings)
    bpod = {}
    for s in plan.markers:
        evs = stream_events(s, Findings())
        if is_bpod_stream(evs):
            bpod[s.name] = evs
    records = read_trial_files(session.trial_files, findings)
    trials = build_trials(bpod, records, span, findings)
    first = min([span[0]] + [t.start for t in trials])
    base = time_base(session.meta, xdf.header, session.xdf, (first, span[1]), findings)
    return Recording(session, xdf, plan, events, base, trials, findings)
