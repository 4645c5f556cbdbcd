"""NWB export with pynwb: one file holding every stream, the Bpod trials and the session header.

What goes where (all times in seconds from the session start, on the recorder's LSL clock):

- EEG-like signals -> ``acquisition/<stream>`` ElectricalSeries (samples as recorded, volts via
  ``conversion``/``channel_conversion``; one electrode per channel with its name and type);
  other fixed-rate streams -> TimeSeries; streams without a rate (decoder output) -> TimeSeries
  with timestamps;
- each marker stream -> an ``EventsTable`` in ``/events`` (``timestamp``, ``annotation`` = the
  marker text; Bpod streams add the ``trial`` number); on/off switches -> ``<stream>_switches``;
- Bpod trials -> the trials table: start/stop, states visited with their start/stop times,
  Bpod events, outcome (completed / stopped / error / incomplete), state machine;
- session metadata (exp_ref, subject, project, procedures, modules) -> the file header.

Signals are written from the spooled samples chunk by chunk (gzip), never held whole in memory.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from shared_utils import __version__
from shared_utils.export.content import Signal
from shared_utils.export.events import Event, on_off_channels, switch_events
from shared_utils.export.recording import ExportOptions, Recording
from shared_utils.export.report import Findings
from shared_utils.export.session import bids_label, entity_labels, parse_wall
from shared_utils.export.trials import Trial
from shared_utils.streams.xdf_reader import XdfStream

CHUNK_BYTES = 1 << 20  # HDF5 chunk ~1 MB (HDF5 advice: 1-16 MB... small enough to read a window)
BUFFER_BYTES = 64 << 20  # rows read from the spool per write


def nwb_name(text: str) -> str:
    """An NWB object name: no '/' (a path separator in HDF5)."""
    return text.replace("/", "_") or "unnamed"


def file_name(rec: Recording, opts: ExportOptions) -> str:
    """DANDI-style ``sub-<subject>_ses-<session>.nwb``; the XDF's name when no subject is known."""
    subject, session = entity_labels(rec.session.meta, opts.subject, opts.session)
    if not subject:
        return f"{rec.session.xdf.stem}.nwb"
    ses = f"_ses-{bids_label(session)}" if session and bids_label(session) else ""
    return f"sub-{bids_label(subject) or 'unknown'}{ses}.nwb"


def write_nwb(rec: Recording, folder: Path, opts: ExportOptions, findings: Findings) -> Path:
    """Write ``folder/<name>.nwb``; returns its path."""
    from pynwb import NWBHDF5IO

    nwb = _nwbfile(rec, opts, findings)
    for sig in rec.plan.signals:
        _add_signal(nwb, rec, sig)
    for s in rec.plan.irregular:
        _add_irregular(nwb, rec, s)
    by_stream: dict[str, list[Event]] = {}
    for e in rec.events:
        by_stream.setdefault(e.stream, []).append(e)
    for s in rec.plan.markers:
        if by_stream.get(s.name):
            _add_events(nwb, rec, s, by_stream[s.name])
    for s in rec.plan.irregular:
        if on_off_channels(s):
            _add_events(nwb, rec, s, switch_events(s), suffix="_switches")
    if rec.trials:
        _add_trials(nwb, rec.trials, rec.base.t0)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(rec, opts)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def _subject(subject_id: str | None, info: dict[str, Any], findings: Findings) -> Any:
    """pynwb Subject from the id and ``subject_info`` (species, sex, age, date_of_birth...).

    Nothing is made up: an unknown sex is NWB's "U" (unknown); a missing age or species is left
    out and said in a note, since DANDI requires them.
    """
    from pynwb.file import Subject

    if not subject_id and not info:
        findings.note(
            "no subject: the NWB file has none (DANDI requires one: --subject, subject_info)"
        )
        return None
    known = {
        "species",
        "sex",
        "age",
        "date_of_birth",
        "strain",
        "genotype",
        "description",
        "weight",
        "age__reference",
    }
    unknown = sorted(set(info) - known)
    if unknown:
        findings.note(f"subject_info keys not used: {unknown} (NWB Subject has {sorted(known)})")
    kw = {k: info[k] for k in known if info.get(k) not in (None, "")}
    if "date_of_birth" in kw:
        kw["date_of_birth"] = parse_wall(str(kw["date_of_birth"])) or kw.pop("date_of_birth")
    kw.setdefault("sex", "U")
    lacking = [
        k for k in ("species", "age") if k not in kw and not (k == "age" and "date_of_birth" in kw)
    ]
    if lacking:
        findings.note(
            f"subject {', '.join(lacking)} unknown: not written (DANDI requires them; give "
            "them in session.json subject_info or --subject-info)"
        )
    return Subject(subject_id=subject_id or "unknown", **kw)


def _nwbfile(rec: Recording, opts: ExportOptions, findings: Findings) -> Any:
    from pynwb import NWBFile

    meta = rec.session.meta
    subject, _ = entity_labels(meta, opts.subject, opts.session)
    ref = (meta.exp_ref if meta else None) or opts.session or rec.session.xdf.stem
    notes = {"source": str(rec.session.xdf.name), "clock": rec.base.how}
    if meta is not None:
        notes.update(procedures=meta.procedures, modules=meta.modules)
    return NWBFile(
        session_description=(
            f"closed-loop session {ref}, recorded by closedloop-mesh as XDF "
            f"({len(rec.xdf.streams)} LSL streams) and exported to NWB"
        ),
        identifier=str(uuid.uuid4()),
        session_start_time=rec.base.wall0,
        timestamps_reference_time=rec.base.wall0,
        session_id=ref,
        experiment_description=(f"project {meta.project}" if meta and meta.project else None),
        notes=json.dumps(notes, default=str),
        was_generated_by=[["closedloop-mesh", __version__]],
        subject=_subject(
            subject, {**(meta.subject_info if meta else {}), **opts.subject_info}, findings
        ),
        keywords=["closed-loop"] + ([opts.task] if opts.task else []),
        **_lab_fields(meta.raw if meta else {}),
    )


def _lab_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """Optional session.json keys NWB has a place for: experimenter, institution, lab."""
    out: dict[str, Any] = {}
    who = raw.get("experimenter")
    if isinstance(who, str) and who:
        out["experimenter"] = [who]
    elif isinstance(who, list) and who:
        out["experimenter"] = [str(w) for w in who]
    for key in ("institution", "lab"):
        if isinstance(raw.get(key), str) and raw[key]:
            out[key] = raw[key]
    return out


def _timing(stream: XdfStream, sfreq: float, t0: float) -> dict[str, Any]:
    """rate + starting_time for one evenly spaced run, explicit timestamps when there are gaps."""
    if len(stream.segments) <= 1:
        return {"rate": float(sfreq), "starting_time": float(stream.time_stamps[0] - t0)}
    return {"timestamps": stream.time_stamps - t0}


def _data(stream: XdfStream) -> Any:
    """The stream's samples as a chunked, compressed HDF5 dataset fed from the spool."""
    from hdmf.backends.hdf5 import H5DataIO
    from hdmf.data_utils import GenericDataChunkIterator

    n, n_ch = stream.n_samples, stream.channel_count
    dtype = np.dtype(stream.time_series.dtype)
    row = max(1, n_ch * dtype.itemsize)
    chunk_rows = int(max(1, min(n, CHUNK_BYTES // row)))
    buffer_rows = int(max(chunk_rows, min(n, (BUFFER_BYTES // row) // chunk_rows * chunk_rows)))

    class SpoolData(GenericDataChunkIterator):
        def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
            rows = stream.rows(selection[0].start or 0, selection[0].stop or n)
            return rows[:, selection[1]]

        def _get_maxshape(self) -> tuple[int, int]:
            return (n, n_ch)

        def _get_dtype(self) -> np.dtype:
            return dtype

    it = SpoolData(chunk_shape=(chunk_rows, n_ch), buffer_shape=(buffer_rows, n_ch))
    return H5DataIO(data=it, compression="gzip", compression_opts=4, shuffle=True)


def _add_signal(nwb: Any, rec: Recording, sig: Signal) -> None:
    from pynwb import TimeSeries
    from pynwb.ecephys import ElectricalSeries

    s = sig.stream
    name = nwb_name(sig.name)
    desc = (
        f"LSL stream {s.name!r} (type {s.type!r}, source_id {s.source_id!r}, host {s.hostname!r})"
    )
    timing = _timing(s, sig.sfreq, rec.base.t0)
    if sig.eeg_like and sig.voltage:
        region = _electrodes(nwb, sig, desc)
        scales = np.array([c.scale for c in sig.channels], dtype=np.float64)
        uniform = bool(np.all(scales == scales[0]))
        nwb.add_acquisition(
            ElectricalSeries(
                name=name,
                data=_data(s),
                electrodes=region,
                conversion=float(scales[0]) if uniform else 1.0,
                channel_conversion=None if uniform else scales,
                description=desc,
                **timing,
            )
        )
        return
    units = {c.unit for c in sig.channels}
    nwb.add_acquisition(
        TimeSeries(
            name=name,
            data=_data(s),
            unit=units.pop() if len(units) == 1 and "" not in units else "n/a",
            description=f"{desc}; channels: "
            + ", ".join(_chan(c.name, c.unit) for c in sig.channels),
            **timing,
        )
    )


def _electrodes(nwb: Any, sig: Signal, desc: str) -> Any:
    if nwb.electrodes is None or "channel_name" not in nwb.electrodes.colnames:
        nwb.add_electrode_column("channel_name", "channel label in the LSL stream header")
        nwb.add_electrode_column("channel_type", "MNE channel type (eeg, eog, ecg, emg...)")
    device = nwb.create_device(name=nwb_name(f"{sig.name} amplifier"), description=desc)
    group = nwb.create_electrode_group(
        name=nwb_name(sig.name), description=desc, location="unknown", device=device
    )
    first = len(nwb.electrodes) if nwb.electrodes is not None else 0
    for c in sig.channels:
        nwb.add_electrode(group=group, location="unknown", channel_name=c.name, channel_type=c.kind)
    return nwb.create_electrode_table_region(
        region=list(range(first, first + len(sig.channels))),
        description=f"channels of {sig.name}",
    )


def _add_irregular(nwb: Any, rec: Recording, s: XdfStream) -> None:
    from pynwb import TimeSeries

    units = set(s.units)
    nwb.add_acquisition(
        TimeSeries(
            name=nwb_name(s.name),
            data=np.asarray(s.time_series),
            timestamps=s.time_stamps - rec.base.t0,
            unit=units.pop() if len(units) == 1 and "" not in units else "n/a",
            description=(
                f"LSL stream {s.name!r} (type {s.type!r}, no fixed rate); channels: "
                + ", ".join(_chan(lab, u) for lab, u in zip(s.labels, s.units, strict=True))
            ),
        )
    )


def _chan(name: str, unit: str) -> str:
    return f"{name} ({unit})" if unit else name


def _add_events(
    nwb: Any, rec: Recording, s: XdfStream, events: list[Event], suffix: str = ""
) -> None:
    from pynwb.event import EventsTable

    bpod = s.name in rec.bpod_streams
    table = EventsTable(
        name=nwb_name(s.name + suffix),
        description=(
            f"on/off switches of the channels of LSL stream {s.name!r}"
            if suffix
            else f"samples of LSL marker stream {s.name!r} (type {s.type!r}); annotation = text"
        ),
        source_description=f"LSL stream {s.name!r} from host {s.hostname!r}",
    )
    if bpod:
        table.add_column("trial", "Bpod trial number the marker belongs to (-1: between trials)")
    trial = -1
    for e in events:
        row: dict[str, Any] = {
            "timestamp": e.time - rec.base.t0,
            "annotation": e.label,
        }
        if bpod:
            if e.label.startswith("trial_start:"):
                trial = _int(e.label.partition(":")[2])
            row["trial"] = trial
            if e.label.startswith(("trial_end:", "trial_error:")):
                trial = -1
        table.add_row(**row)
    nwb.add_events_table(table)


TRIAL_COLUMNS = {
    "trial": "Bpod trial number",
    "state_machine": "name of the Bpod state machine",
    "outcome": "completed, stopped (by a command), error, incomplete (recording ended)",
    "states": "states visited, in order",
    "state_start_times": "start of each visited state (s from session start)",
    "state_stop_times": "end of each visited state (s from session start)",
    "events": "Bpod events, in order",
    "event_times": "time of each Bpod event (s from session start)",
    "bpod_stream": "LSL marker stream of the trial ('' if only in a trial file)",
    "source": "xdf (markers), jsonl+xdf (trial file aligned on markers), jsonl",
}


def _add_trials(nwb: Any, trials: list[Trial], t0: float) -> None:
    rows = [
        {
            "trial": t.number,
            "state_machine": t.state_machine,
            "outcome": t.outcome,
            "states": np.array([s[0] for s in t.states], dtype=str),
            "state_start_times": np.array([s[1] - t0 for s in t.states], dtype=float),
            "state_stop_times": np.array([s[2] - t0 for s in t.states], dtype=float),
            "events": np.array([e[0] for e in t.events], dtype=str),
            "event_times": np.array([e[1] - t0 for e in t.events], dtype=float),
            "bpod_stream": t.stream,
            "source": t.source,
        }
        for t in trials
    ]
    # a list column that is empty in every trial has no type HDF5 could store: leave it out
    empty = {k for k, v in rows[0].items() if isinstance(v, np.ndarray)}
    empty = {k for k in empty if all(len(r[k]) == 0 for r in rows)}
    for name, desc in TRIAL_COLUMNS.items():
        if name not in empty:
            nwb.add_trial_column(
                name=name,
                description=desc,
                index=name in rows[0] and isinstance(rows[0][name], np.ndarray),
            )
    for t, row in zip(trials, rows, strict=True):
        nwb.add_trial(
            start_time=t.start - t0,
            stop_time=max(t.stop, t.start) - t0,
            **{k: v for k, v in row.items() if k not in empty},
        )


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1
