"""Sorting an XDF's streams into what each export format can hold, with units and channel types.

Four kinds, decided from the stream header and never from its name:

- **signals**: numeric streams with a fixed rate; EEG-like ones (electrophysiology types: EEG,
  ECoG, sEEG, EMG, EOG, ECG, ExG) become BIDS recordings and NWB ElectricalSeries, the rest NWB
  TimeSeries;
- **marker streams**: string streams, and numeric irregular streams typed as markers (integer
  trigger codes); each sample becomes an event;
- **irregular series**: other numeric streams without a rate (a decoder's output); NWB
  TimeSeries with timestamps, and in BIDS only their on/off channels, as switch events;
- streams with no samples: skipped, with the reason.

Units: electrophysiology data go to MNE/NWB in volts. Voltage unit spellings seen in LSL headers
(``microvolts``, ``µV``, ``uV``, ``mV``, ``volts``...) are scaled; a voltage channel with no
unit is taken as microvolts (the XDF meta-data convention for EEG) and said so in a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared_utils.export.report import Findings
from shared_utils.streams.xdf_reader import XdfStream

#: LSL stream/channel type (lower case) -> MNE channel type, for electrophysiology
EPHYS_TYPES = {
    "eeg": "eeg",
    "exg": "eeg",
    "ecog": "ecog",
    "seeg": "seeg",
    "ieeg": "seeg",
    "dbs": "dbs",
    "emg": "emg",
    "eog": "eog",
    "ecg": "ecg",
}
#: other channel types MNE knows (non-voltage or auxiliary)
OTHER_TYPES = {
    "misc": "misc",
    "aux": "misc",
    "stim": "stim",
    "trigger": "stim",
    "resp": "resp",
    "bio": "bio",
    "temp": "temp",
    "gsr": "gsr",
}
MARKER_TYPES = {"markers", "marker", "events", "event", "trigger", "triggers", "stim"}
VOLT_SCALES = {
    "microvolts": 1e-6,
    "microvolt": 1e-6,
    "µv": 1e-6,
    "μv": 1e-6,
    "uv": 1e-6,
    "millivolts": 1e-3,
    "millivolt": 1e-3,
    "mv": 1e-3,
    "nanovolts": 1e-9,
    "nanovolt": 1e-9,
    "nv": 1e-9,
    "volts": 1.0,
    "volt": 1.0,
    "v": 1.0,
}
ON_OFF_UNITS = {"on/off", "bool", "boolean", "switch", "state"}


@dataclass
class Channel:
    """One channel of a signal as the writers need it."""

    name: str
    kind: str  # MNE channel type
    unit: str  # as written in the XDF ("" if none)
    scale: float | None  # factor to volts for voltage channels, None for other units


@dataclass
class Signal:
    """A numeric stream with a fixed rate, ready for a writer."""

    stream: XdfStream
    channels: list[Channel]
    eeg_like: bool
    sfreq: float

    @property
    def name(self) -> str:
        return self.stream.name

    @property
    def voltage(self) -> bool:
        return all(c.scale is not None for c in self.channels)

    def sample_position(self, t: np.ndarray) -> np.ndarray:
        """Fractional sample index of LSL times ``t`` on this stream's own timestamps.

        Within the data this follows the (dejittered) timestamps, so gaps and drift are
        accounted for; outside it, the sampling rate extends the first/last sample.
        """
        ts = self.stream.time_stamps
        n = len(ts)
        t = np.asarray(t, dtype=np.float64)
        pos = np.interp(t, ts, np.arange(n, dtype=np.float64))
        pos = np.where(t < ts[0], (t - ts[0]) * self.sfreq, pos)
        return np.where(t > ts[-1], (n - 1) + (t - ts[-1]) * self.sfreq, pos)


@dataclass
class Plan:
    """What each stream of a file becomes."""

    signals: list[Signal] = field(default_factory=list)
    markers: list[XdfStream] = field(default_factory=list)
    irregular: list[XdfStream] = field(default_factory=list)

    @property
    def eeg(self) -> list[Signal]:
        return [s for s in self.signals if s.eeg_like]

    def time_span(self) -> tuple[float, float] | None:
        """First and last timestamp over all streams (recorder's LSL clock)."""
        streams = [s.stream for s in self.signals] + self.markers + self.irregular
        firsts = [s.time_stamps[0] for s in streams if s.n_samples]
        lasts = [s.time_stamps[-1] for s in streams if s.n_samples]
        return (float(min(firsts)), float(max(lasts))) if firsts else None


def plan_streams(streams: list[XdfStream], findings: Findings) -> Plan:
    """Sort ``streams`` (see the module docstring); empty ones are skipped with the reason."""
    plan = Plan()
    seen: dict[str, int] = {}
    for s in streams:
        seen[s.name] = seen.get(s.name, 0) + 1
        if seen[s.name] > 1:  # two boxes, a restarted source: keep both, told apart
            new = f"{s.name}#{seen[s.name]}"
            findings.note(
                f"several streams are named {s.name!r}; the one from source {s.source_id!r} "
                f"is called {new!r} in the export"
            )
            s.name = new
        what = f"stream {s.name!r}"
        if s.footer is None:
            findings.note(
                f"{what} has no footer: the recording was not closed (crash or still running); "
                f"exported its {s.n_samples} samples up to the last complete chunk"
            )
        if s.n_samples == 0:
            findings.skip(what, "no samples in the file")
            continue
        if not s.numeric:
            plan.markers.append(s)
        elif s.srate <= 0:
            if s.type.lower() in MARKER_TYPES:
                findings.note(
                    f"{what} is a marker stream with numeric samples ({s.channel_format}); "
                    "its values are written as event labels"
                )
                plan.markers.append(s)
            else:
                plan.irregular.append(s)
        else:
            plan.signals.append(_signal(s, findings))
    return plan


def _signal(s: XdfStream, findings: Findings) -> Signal:
    what = f"stream {s.name!r}"
    stream_kind = EPHYS_TYPES.get(s.type.lower())
    names = _names(s, findings)
    channels = []
    assumed: list[str] = []
    n = s.channel_count
    types = (list(s.channel_types) + [""] * n)[:n]
    for name, ctype, unit in zip(names, types, s.units, strict=True):
        kind = EPHYS_TYPES.get(ctype.lower()) or OTHER_TYPES.get(ctype.lower())
        if kind is None:
            kind = stream_kind or "misc"
        scale = VOLT_SCALES.get(unit.strip().lower())
        if kind in EPHYS_TYPES.values() and scale is None:
            if unit.strip():
                findings.note(
                    f"{what} channel {name!r} has unit {unit!r}, not a voltage: written as 'misc'"
                )
                kind = "misc"
            else:
                scale = 1e-6
                assumed.append(name)
        channels.append(Channel(name, kind, unit.strip(), scale))
    if assumed:
        findings.note(
            f"{what}: {len(assumed)} channel(s) have no unit; taken as microvolts "
            f"({_short(assumed)})"
        )
    eeg_like = any(c.kind in EPHYS_TYPES.values() for c in channels)
    sfreq = choose_sfreq(s)
    segs = s.segments
    if len(segs) > 1:
        findings.note(
            f"{what} has {len(segs) - 1} gap(s) in its timestamps; samples are written "
            "back to back, events are placed by the stream's own timestamps, and each gap is "
            "marked by a 'boundary' event"
        )
    if s.effective_srate and abs(s.effective_srate / s.srate - 1) > 0.1:
        findings.note(
            f"{what}: measured rate {s.effective_srate:.3f} Hz differs from the nominal "
            f"{s.srate:g} Hz by more than 10%; using {sfreq:g} Hz"
        )
    return Signal(stream=s, channels=channels, eeg_like=eeg_like, sfreq=sfreq)


def choose_sfreq(s: XdfStream) -> float:
    """The nominal rate if it stays within half a sample of the timestamps over the whole
    recording, else the measured (effective) rate: then seconds in the export are LSL seconds."""
    eff = s.effective_srate
    if eff <= 0 or s.n_samples < 2:
        return float(s.srate)
    duration = float(s.time_stamps[-1] - s.time_stamps[0])
    drift_samples = abs(duration * s.srate - duration * eff)
    return float(s.srate) if drift_samples < 0.5 else float(eff)


def _names(s: XdfStream, findings: Findings) -> list[str]:
    """Channel names: missing ones get the default ``chN`` (noted), duplicates a suffix."""
    what = f"stream {s.name!r}"
    unnamed = [s.labels[i] for i, raw in enumerate(s.raw_labels) if not raw.strip()]
    if unnamed:
        findings.note(f"{what}: {len(unnamed)} channel(s) have no name; named {_short(unnamed)}")
    names: list[str] = []
    for label in s.labels:
        name, k = label.strip() or "ch", 2
        while name in names:
            name, k = f"{label}-{k}", k + 1
        if name != label:
            findings.note(f"{what}: duplicate channel name {label!r} renamed {name!r}")
        names.append(name)
    return names


def _short(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
