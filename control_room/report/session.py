"""A recording read back for the report: streams found by role, on one clock, with their parsing.

Why roles: the figures ask for "the EEG", "the decoder output", "the Bpod events", not for stream
names, and a lab's mesh may call them differently. Each role is found by the name the default mesh
uses, else by what the stream holds (type ``EEG``; type ``Control`` for a decoder; ``trial_start:``
markers for a Bpod), and ``ReportExtras.streams`` can name them outright. Everything is read
through ``shared_utils.streams.xdf_reader`` with clocks synchronised, so times from different
streams can be compared; times in the report are seconds from the first sample in the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared_utils.streams.xdf_reader import XdfStream, read_xdf

ROLES = ("eeg", "truth", "decoder", "bpod", "commands", "presenter")
DEFAULT_NAMES = {
    "eeg": "mock_eeg",
    "decoder": "decoder_output",
    "bpod": "bpod_events",
    "commands": "control_room_commands",
    "presenter": "presenter_markers",
}
ROLE_TEXT = {
    "eeg": "EEG stream",
    "truth": "true-state markers of the EEG (<eeg>_markers)",
    "decoder": "decoder output stream",
    "bpod": "Bpod event markers",
    "commands": "control-room command markers",
    "presenter": "presenter markers",
}


class Missing(Exception):
    """What a figure needs is not in the recording; the message says what and why."""


@dataclass
class ReportExtras:
    """What the file alone cannot say. All optional.

    ``screenshot``: a PNG of the presenter's window; ``thresholds``: ``{"on_threshold",
    "off_threshold", "smoothing_s", "min_dwell_s"}`` overriding what the command markers say;
    ``streams``: role -> stream name (roles: eeg, truth, decoder, bpod, commands, presenter);
    ``notes``: key -> value pairs shown at the top of the report (the run's summary figures);
    ``title``: the page title.
    """

    screenshot: str | Path | None = None
    thresholds: dict[str, float] | None = None
    streams: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    title: str | None = None

    @classmethod
    def coerce(cls, extras: ReportExtras | dict[str, Any] | None) -> ReportExtras:
        if extras is None:
            return cls()
        if isinstance(extras, cls):
            return extras
        unknown = set(extras) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(
                f"unknown report extras {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**extras)


@dataclass
class Command:
    """One control-room command marker."""

    t: float
    module: str
    cmd: str
    kwargs: dict[str, Any]
    source: str


@dataclass
class Session:
    """The recording, its streams by role, and the time origin of every figure."""

    path: Path
    streams: list[XdfStream]
    roles: dict[str, XdfStream | None]
    why_missing: dict[str, str]
    t0: float
    t1: float
    extras: ReportExtras

    def need(self, role: str) -> XdfStream:
        """The stream for ``role`` with at least one sample, or :class:`Missing` saying why."""
        s = self.roles.get(role)
        if s is None:
            raise Missing(self.why_missing.get(role) or f"no {ROLE_TEXT[role]}")
        return s

    def rel(self, t: np.ndarray | float) -> Any:
        """Seconds since the start of the recording."""
        return np.asarray(t) - self.t0 if isinstance(t, np.ndarray) else t - self.t0

    def markers(self, role: str) -> tuple[np.ndarray, list[str]]:
        """A marker stream's timestamps and strings in time order (ties keep file order)."""
        s = self.need(role)
        order = np.argsort(s.time_stamps, kind="stable")
        text = s.strings()
        return s.time_stamps[order], [text[i] for i in order]

    def commands(self) -> list[Command]:
        """Control-room command markers, parsed (samples that are not JSON objects are skipped)."""
        ts, texts = self.markers("commands")
        out = []
        for t, text in zip(ts, texts, strict=True):
            try:
                d = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(d, dict):
                kw = d.get("kwargs") if isinstance(d.get("kwargs"), dict) else {}
                out.append(
                    Command(
                        float(t),
                        str(d.get("module", "")),
                        str(d.get("cmd", "")),
                        kw,
                        str(d.get("source", "")),
                    )
                )
        return out

    def marker_streams(self) -> list[XdfStream]:
        """Every string stream, fullest first for equal names, in file order."""
        return [s for s in self.streams if not s.numeric]


def load_session(path: str | Path, extras: ReportExtras | None = None) -> Session:
    """Read ``path`` (XdfReadError if missing or unreadable) and assign streams to roles."""
    extras = extras or ReportExtras()
    p = Path(path).expanduser().resolve()
    streams = read_xdf(p, synchronize_clocks=True, dejitter=True)
    firsts = [s.time_stamps[0] for s in streams if s.n_samples]
    lasts = [s.time_stamps[-1] for s in streams if s.n_samples]
    t0 = float(min(firsts)) if firsts else 0.0
    t1 = float(max(lasts)) if lasts else 0.0
    roles: dict[str, XdfStream | None] = {}
    why: dict[str, str] = {}
    names = sorted({s.name for s in streams}) or ["none"]
    for role in ROLES:
        wanted = extras.streams.get(role) or _default_name(role, roles)
        found = _by_name(streams, wanted) if wanted else None
        if found is None and role not in extras.streams:
            found = _by_content(role, streams)
        if found is None:
            why[role] = (
                f"no {ROLE_TEXT[role]} ({wanted!r} not in the recording; streams: {', '.join(names)})"
                if wanted
                else f"no {ROLE_TEXT[role]} in the recording (streams: {', '.join(names)})"
            )
        elif found.n_samples == 0:
            why[role] = f"{ROLE_TEXT[role]} {found.name!r} is in the recording but has no samples"
            found = None
        roles[role] = found
    return Session(p, streams, roles, why, t0, t1, extras)


def _default_name(role: str, roles: dict[str, XdfStream | None]) -> str | None:
    if role == "truth":
        eeg = roles.get("eeg")
        return f"{eeg.name}_markers" if eeg is not None else None
    return DEFAULT_NAMES.get(role)


def _by_name(streams: list[XdfStream], name: str) -> XdfStream | None:
    matches = [s for s in streams if s.name == name]
    return max(matches, key=lambda s: s.n_samples) if matches else None


def _by_content(role: str, streams: list[XdfStream]) -> XdfStream | None:
    """Fallback when the default name is absent: recognise the stream by type or markers."""
    full = sorted((s for s in streams if s.n_samples), key=lambda s: -s.n_samples)
    for s in full:
        if role == "eeg" and s.numeric and s.srate > 0 and s.type.upper() in ("EEG", "EMG", "ECOG"):
            return s
        if role == "decoder" and s.numeric and s.type == "Control":
            return s
        if (
            role == "bpod"
            and not s.numeric
            and any(x.startswith("trial_start:") for x in s.strings())
        ):
            return s
        if role == "commands" and not s.numeric and "control_room" in s.source_id:
            return s
        if role == "presenter" and not s.numeric and s.source_id.startswith("presenter"):
            return s
    return None
