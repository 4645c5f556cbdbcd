"""Events from every marker stream, on the recorder's LSL clock.

Each sample of a marker stream is one event: its label is the marker text (numeric marker
streams: the value, ``5`` or ``2.5``; several channels joined with ``|``). A numeric irregular
stream's on/off channels (a decoder's ``control`` output) give one event per switch,
``control:on`` / ``control:off``. Times are the samples' timestamps after pyxdf's clock
synchronisation, so events from different hosts share one clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared_utils.export.content import ON_OFF_UNITS, Plan
from shared_utils.export.report import Findings
from shared_utils.streams.xdf_reader import XdfStream


@dataclass
class Event:
    """One event: when (LSL seconds, recorder clock), what, and which stream said so."""

    time: float
    label: str
    stream: str
    extra: dict[str, Any] = field(default_factory=dict)


def marker_labels(s: XdfStream) -> list[str]:
    """One label per sample of a marker stream (see the module docstring)."""
    if not s.numeric:
        rows = s.time_series
        return ["|".join(str(v) for v in row) if len(row) > 1 else str(row[0]) for row in rows]
    return ["|".join(_number(v) for v in row) for row in np.asarray(s.time_series)]


def _number(v: Any) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def stream_events(s: XdfStream, findings: Findings) -> list[Event]:
    """The events of one marker stream; empty labels are skipped (and counted)."""
    labels = marker_labels(s)
    events = [
        Event(float(t), lab, s.name)
        for t, lab in zip(s.time_stamps, labels, strict=True)
        if lab.strip()
    ]
    if len(events) < len(labels):
        findings.skip(
            f"{len(labels) - len(events)} marker(s) of stream {s.name!r}", "empty marker text"
        )
    return events


def on_off_channels(s: XdfStream) -> list[int]:
    """Channels of a numeric irregular stream that switch between 0 and 1."""
    out = []
    data = np.asarray(s.time_series)
    for i, unit in enumerate(s.units):
        col = data[:, i] if data.ndim == 2 and len(data) else np.zeros(0)
        if unit.strip().lower() in ON_OFF_UNITS or (
            len(col) > 1 and np.isin(col, (0, 1)).all() and np.unique(col).size == 2
        ):
            out.append(i)
    return out


def switch_events(s: XdfStream) -> list[Event]:
    """``label:on`` / ``label:off`` at each change of an on/off channel (and at its first sample)."""
    data = np.asarray(s.time_series)
    events: list[Event] = []
    for i in on_off_channels(s):
        col = data[:, i] > 0.5
        change = np.flatnonzero(np.diff(col.astype(np.int8))) + 1
        idx = np.concatenate([[0], change]) if len(col) else change
        for k in idx:
            state = "on" if col[k] else "off"
            events.append(Event(float(s.time_stamps[k]), f"{s.labels[i]}:{state}", s.name))
    events.sort(key=lambda e: e.time)
    return events


def all_events(plan: Plan, findings: Findings) -> list[Event]:
    """Events of every marker stream plus on/off switches, in time order."""
    events: list[Event] = []
    for s in plan.markers:
        events += stream_events(s, findings)
    for s in plan.irregular:
        events += switch_events(s)
    events.sort(key=lambda e: e.time)
    return events
