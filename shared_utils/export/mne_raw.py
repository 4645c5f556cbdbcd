"""Open a recording in MNE: an XDF file to an ``mne.io.Raw`` with the right units and every marker
stream as annotations on the signal's own time base.

    >>> from shared_utils.export import read_raw_xdf
    >>> raw = read_raw_xdf("data/mesh_20261204_101500.xdf")          # the EEG-like stream
    >>> raw.annotations.description[:3]    # markers of every stream (raw.annotations.extras: which)

:func:`signal_annotations` is shared with the BIDS export, so an analysis opened here and the
exported dataset place every event on the same sample (the BIDS export writes the samples itself,
through pybv, to keep an hour of 64 channels out of memory). The session report reads the same
file through :mod:`shared_utils.streams.xdf_reader`, as this does, and needs no ``Raw``.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared_utils.checks import unknown_message
from shared_utils.export.content import Plan, Signal, plan_streams
from shared_utils.export.events import Event, all_events
from shared_utils.export.recording import GAP_S, GAP_SAMPLES
from shared_utils.export.report import ExportError, Findings
from shared_utils.export.session import find_session
from shared_utils.export.timebase import time_base
from shared_utils.streams.xdf_reader import load_xdf

if TYPE_CHECKING:
    import mne

BOUNDARY = "boundary"  # EEGLAB's name for a discontinuity in the data


def choose_signal(plan: Plan, stream: str | None) -> Signal:
    """The signal called ``stream``, else the EEG-like one with the most data."""
    if stream is not None:
        for s in plan.signals:
            if s.name == stream:
                return s
        raise ExportError(
            unknown_message("signal stream", stream, [s.name for s in plan.signals])
            + " (marker streams and streams without a sampling rate cannot be opened as Raw)"
        )
    if not plan.eeg:
        names = [s.name for s in plan.signals]
        raise ExportError(
            "no EEG-like stream (a numeric stream with a sampling rate and an electrophysiology "
            f"type such as EEG); signal streams present: {names or 'none'}"
        )
    return max(plan.eeg, key=lambda s: s.stream.n_samples * s.stream.channel_count)


def signal_info(sig: Signal, meas_date: _dt.datetime | None, line_freq: float | None) -> Any:
    """``mne.Info`` for a signal: names, MNE channel types, rate, date and line frequency."""
    import mne

    info = mne.create_info(
        [c.name for c in sig.channels], sig.sfreq, [c.kind for c in sig.channels], verbose=False
    )
    with info._unlock():
        info["line_freq"] = line_freq
        if meas_date is not None:
            info["meas_date"] = meas_date.astimezone(_dt.UTC)
    return info


def signal_annotations(
    sig: Signal, events: list[Event], findings: Findings, prefix: bool = False
) -> Any:
    """Events as zero-duration annotations placed by the signal's own timestamps.

    An event's onset is its fractional sample position / sfreq, so sub-sample timing survives
    until a writer rounds it to a sample. Events before the first or after the last sample are
    left out (and reported); each gap in the signal gets a ``boundary`` annotation.
    """
    import mne

    n = sig.stream.n_samples
    times = np.array([e.time for e in events], dtype=np.float64)
    pos = sig.sample_position(times) if len(events) else np.zeros(0)
    inside = (pos >= -0.5) & (pos <= n - 0.5)
    outside: dict[str, int] = {}
    for e, ok in zip(events, inside, strict=True):
        if not ok:
            outside[e.stream] = outside.get(e.stream, 0) + 1
    for stream, k in outside.items():
        findings.skip(
            f"{k} event(s) of stream {stream!r}",
            f"outside the samples of signal {sig.name!r} (before its first or after its last)",
        )
    kept = [e for e, ok in zip(events, inside, strict=True) if ok]
    onsets = list(np.clip(pos[inside], 0, None) / sig.sfreq)
    desc = [f"{e.stream}/{e.label}" if prefix else e.label for e in kept]
    extras: list[dict[str, Any]] = [{"stream": e.stream} for e in kept]
    for first, _last in sig.stream.segments[1:]:
        onsets.append(first / sig.sfreq)
        desc.append(BOUNDARY)
        extras.append({"stream": sig.name})
    order = np.argsort(onsets, kind="stable")
    return mne.Annotations(
        onset=np.asarray(onsets, dtype=np.float64)[order],
        duration=np.zeros(len(onsets)),
        description=[desc[i] for i in order],
        extras=[extras[i] for i in order],
    )


def read_raw_xdf(
    source: str | Path,
    stream: str | None = None,
    *,
    prefix_markers: bool = False,
    line_freq: float | None = None,
) -> mne.io.RawArray:
    """Open ``source`` (an ``.xdf`` file or a session folder) as an MNE Raw.

    - ``stream``: the signal stream to open (default: the EEG-like stream with the most data);
    - data in volts (``microvolts``, ``mV``... scaled; missing units on EEG channels taken as µV);
    - channel names and types from the stream header (EEG/EOG/ECG/EMG/misc...);
    - every marker stream's samples, and the on/off switches of irregular numeric streams (a
      decoder's ``control`` channel), as annotations on this stream's time base, after pyxdf's
      clock synchronisation; ``raw.annotations.extras[i]["stream"]`` names the source stream,
      ``prefix_markers`` also puts it in the description (``stream/label``);
    - ``meas_date`` from ``session.json`` or the XDF header.

    What could not be carried over (events outside the data, unnamed channels...) is reported as
    a ``UserWarning``. The data are loaded into memory (float64); for long recordings export to
    BIDS instead (``control-room export``), which streams the data.
    """
    import mne

    session = find_session(source)
    findings = Findings()
    xdf = load_xdf(session.xdf, gap_s=GAP_S, gap_samples=GAP_SAMPLES)
    plan = plan_streams(xdf.streams, findings)
    sig = choose_signal(plan, stream)
    base = time_base(session.meta, xdf.header, session.xdf, plan.time_span(), findings)
    info = signal_info(sig, base.wall(sig.stream.time_stamps[0]), line_freq)
    scales = np.array([c.scale if c.scale is not None else 1.0 for c in sig.channels])
    data = np.asarray(sig.stream.time_series, dtype=np.float64).T * scales[:, None]
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_annotations(
        signal_annotations(sig, all_events(plan, findings), findings, prefix_markers)
    )
    for item in [*findings.skipped, *findings.notes]:
        warnings.warn(f"{session.xdf.name}: {item}", UserWarning, stacklevel=2)
    return raw
