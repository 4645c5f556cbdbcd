"""Bpod trials on the recorder's clock: structure from the trial files, times from the XDF.

The Bpod service writes two records of each trial. Its marker stream (``bpod_events``, recorded
in the XDF) carries ``trial_start:N``, ``state:NAME``, ``event:NAME``, ``softcode:C``,
``trial_end:N`` and ``trial_error:N`` with LSL timestamps of the Bpod host; the recorder's clock
offsets put them on the recording's clock. Its JSON-lines file holds the same trial with times in
seconds from trial start, the state machine's name, and whether it was stopped or failed.

Alignment: a file trial's start is the ``trial_start:N`` marker it matches. Matching uses the
trial number and the file's ``lsl_start`` (the Bpod host's clock): the offset between the two
clocks is the most common difference ``marker time - lsl_start`` over trials with the same
number, and a trial matches the marker within 50 ms of ``lsl_start + offset``. Trials only in the
markers are rebuilt from them; trials only in the file are placed at ``lsl_start + offset`` (or
``lsl_start`` when the XDF has no Bpod markers: same host assumed, and said so).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared_utils.export.events import Event
from shared_utils.export.report import Findings

MATCH_S = 0.05


@dataclass
class Trial:
    """One Bpod trial, all times in seconds on the recorder's LSL clock."""

    number: int
    start: float
    stop: float
    states: list[tuple[str, float, float]] = field(default_factory=list)
    events: list[tuple[str, float]] = field(default_factory=list)
    outcome: str = "completed"  # completed | stopped | error | incomplete
    state_machine: str = ""
    stream: str = ""
    source: str = "xdf"  # xdf | jsonl+xdf | jsonl


def is_bpod_stream(events: list[Event]) -> bool:
    return any(e.label.startswith("trial_start:") for e in events)


def trials_from_markers(events: list[Event]) -> list[Trial]:
    """Rebuild trials from one Bpod marker stream's events (time order)."""
    trials: list[Trial] = []
    cur: Trial | None = None
    exited = False

    def close_state(t: float) -> None:
        if cur is not None and cur.states and np.isnan(cur.states[-1][2]):
            name, t0, _ = cur.states[-1]
            cur.states[-1] = (name, t0, t)

    for e in events:
        kind, _, arg = e.label.partition(":")
        if kind == "trial_start":
            if cur is not None:
                close_state(cur.stop)
                cur.outcome = "incomplete"
                trials.append(cur)
            cur = Trial(number=_int(arg), start=e.time, stop=e.time, stream=e.stream)
            exited = False
            continue
        if cur is None:
            continue
        cur.stop = max(cur.stop, e.time)
        if kind == "state":
            close_state(e.time)
            exited = arg == "exit"
            if not exited:
                cur.states.append((arg, e.time, float("nan")))
        elif kind in ("event", "softcode"):
            cur.events.append((arg if kind == "event" else f"softcode:{arg}", e.time))
        elif kind in ("trial_end", "trial_error"):
            close_state(e.time)
            cur.outcome = (
                "error" if kind == "trial_error" else ("completed" if exited else "stopped")
            )
            trials.append(cur)
            cur = None
    if cur is not None:
        close_state(cur.stop)
        cur.outcome = "incomplete"
        trials.append(cur)
    return trials


def trial_from_record(d: dict[str, Any], start: float, source: str, stream: str) -> Trial:
    """A trial file record (times from trial start) placed at ``start`` (recorder clock)."""
    intervals = {k: list(v) for k, v in (d.get("states") or {}).items()}
    states = []
    for name in d.get("visited") or []:
        spans = intervals.get(name) or []
        t0, t1 = spans.pop(0) if spans else (0.0, 0.0)
        t1 = t0 if t1 is None else t1
        states.append((str(name), start + float(t0), start + float(t1)))
    events = [(str(n), start + float(t)) for n, t in d.get("event_list") or []]
    outcome = "error" if d.get("error") else "stopped" if d.get("stopped") else "completed"
    stop = max([start + float(d.get("duration_s") or 0.0)] + [s[2] for s in states])
    return Trial(
        number=int(d["trial"]),
        start=start,
        stop=stop,
        states=states,
        events=events,
        outcome=outcome,
        state_machine=str(d.get("state_machine") or ""),
        stream=stream,
        source=source,
    )


def build_trials(
    streams_events: dict[str, list[Event]],
    records: list[dict[str, Any]],
    span: tuple[float, float] | None,
    findings: Findings,
) -> list[Trial]:
    """Trials from the Bpod marker streams (``{stream: events}``) and trial-file records."""
    from_markers = [t for evs in streams_events.values() for t in trials_from_markers(evs)]
    if not records:
        return sorted(from_markers, key=lambda t: t.start)
    starts = [(t.number, t.start, t) for t in from_markers]
    offset = _clock_offset(records, starts)
    matched: set[int] = set()
    out: list[Trial] = []
    for d in records:
        n, lsl = int(d["trial"]), d.get("lsl_start")
        item = f"trial {n} ({d.get('_file', 'trial file')})"
        hit = None
        if isinstance(lsl, int | float) and offset is not None:
            near = [s for s in starts if s[0] == n and abs(s[1] - (lsl + offset)) < MATCH_S]
            hit = min(near, key=lambda s: abs(s[1] - (lsl + offset))) if near else None
        if hit is not None and id(hit[2]) not in matched:
            matched.add(id(hit[2]))
            out.append(trial_from_record(d, hit[1], "jsonl+xdf", hit[2].stream))
            continue
        if not isinstance(lsl, int | float):
            findings.skip(item, "no lsl_start in the trial file and no matching Bpod marker")
            continue
        start = lsl + (offset or 0.0)
        if span is not None and not span[0] <= start <= span[1]:
            findings.skip(item, "starts outside the recording's time span")
            continue
        if offset is None:
            findings.note(
                "the XDF has no Bpod markers: trial times come from the trial files' lsl_start, "
                "taken to be on the recorder's clock (Bpod on the recording host)"
            )
        out.append(trial_from_record(d, start, "jsonl", ""))
    out += [t for t in from_markers if id(t) not in matched]
    return sorted(out, key=lambda t: t.start)


def _clock_offset(
    records: list[dict[str, Any]], starts: list[tuple[int, float, Trial]]
) -> float | None:
    """Most common ``marker time - lsl_start`` over same-numbered trials (10 ms bins)."""
    diffs = [
        t - float(d["lsl_start"])
        for d in records
        if isinstance(d.get("lsl_start"), int | float)
        for n, t, _ in starts
        if n == d["trial"]
    ]
    if not diffs:
        return None
    best, _ = Counter(round(x, 2) for x in diffs).most_common(1)[0]
    return float(np.median([x for x in diffs if round(x, 2) == best]))


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1
