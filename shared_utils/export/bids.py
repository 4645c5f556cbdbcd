"""BIDS export (EEG/iEEG/EMG) with MNE-BIDS: one recording per EEG-like stream, events from every
marker stream on that stream's time base.

How the data travel, and why: ``write_raw_bids`` on an in-memory Raw needs the whole recording
as float64 twice over (an hour of 64 ch at 1 kHz: about 4 GB). Here pybv writes the BrainVision
file slice by slice from the spooled samples (float32 µV, resolution 1: the recorded values
exactly), MNE opens it lazily, and ``write_raw_bids`` copies it into the dataset and writes the
sidecars (``channels.tsv``, ``events.tsv``, ``*_eeg.json``, ``scans.tsv``, participants). Only
the slices' BrainVision payloads are appended to one another; every header and sidecar is the
libraries' own. EDF (``bids_format="EDF"``) goes through MNE's EDF export (edfio), which holds
the recording in memory.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from shared_utils import __version__
from shared_utils.checks import choice_message
from shared_utils.export.content import Signal
from shared_utils.export.mne_raw import signal_annotations
from shared_utils.export.recording import ExportOptions, Recording
from shared_utils.export.report import ExportError, Findings
from shared_utils.export.session import bids_label, entity_labels

BLOCK_S = 60.0  # seconds of data per pybv call
FORMATS = ("BrainVision", "EDF")


def labels(rec: Recording, opts: ExportOptions, findings: Findings) -> dict[str, str | None]:
    """subject / session / task labels: options first, then session.json, then defaults."""
    subject, session = entity_labels(rec.session.meta, opts.subject, opts.session)
    task = opts.task
    if not subject:
        subject = "unknown"
        findings.note("no subject in session.json or options: BIDS subject 'unknown' (--subject)")
    if not task:
        task = "closedloop"
        findings.note("no task given: BIDS task 'closedloop' (--task)")
    out: dict[str, str | None] = {}
    for key, value in (("subject", subject), ("session", session), ("task", task)):
        if value is None:
            out[key] = None
            continue
        clean = bids_label(value)
        if not clean:
            raise ExportError(f"BIDS {key} {value!r} has no letters or digits")
        if clean != value:
            findings.note(f"BIDS {key} {value!r} written as {clean!r} (letters and digits only)")
        out[key] = clean
    return out


def write_bids(rec: Recording, root: Path, work: Path, opts: ExportOptions, findings: Findings):
    """Write the dataset into ``root`` (a new folder); ``work`` holds temporary files."""
    import mne_bids

    if opts.bids_format not in FORMATS:
        raise ExportError(f"BIDS format {choice_message(opts.bids_format, FORMATS)}")
    eeg = rec.plan.eeg
    if not eeg:
        names = [s.name for s in rec.xdf.streams]
        raise ExportError(
            "nothing to export to BIDS: no EEG-like stream (numeric, fixed rate, type EEG/ECoG/"
            f"sEEG/EMG...); streams: {names}. NWB holds any stream (--to nwb)"
        )
    for sig in rec.plan.signals:
        if not sig.eeg_like:
            findings.skip(
                f"stream {sig.name!r}",
                f"type {sig.stream.type!r} is not electrophysiology; BIDS EEG holds no other "
                "signals (it is in the NWB export)",
            )
    for s in rec.plan.irregular:
        findings.skip(
            f"stream {s.name!r}",
            "no fixed sampling rate: not a BIDS recording (its on/off switches are events; "
            "the values are in the NWB export)",
        )
    lab = labels(rec, opts, findings)
    root.mkdir(parents=True, exist_ok=True)
    mne_bids.make_dataset_description(
        path=root,
        name=rec.session.name,
        dataset_type="raw",
        generated_by=[
            {
                "Name": "closedloop-mesh",
                "Version": __version__,
                "Description": f"control-room export of {rec.session.xdf.name}",
            }
        ],
        overwrite=True,
        verbose=False,
    )
    for sig in eeg:
        acq = bids_label(sig.name) if len(eeg) > 1 else None
        try:
            _write_signal(rec, sig, root, work, lab, acq, opts, findings)
        except (ValueError, RuntimeError) as exc:
            if len(eeg) == 1:
                raise ExportError(f"BIDS writing of stream {sig.name!r} failed: {exc}") from exc
            findings.skip(f"stream {sig.name!r}", f"MNE-BIDS refused it: {exc}")


def _write_signal(
    rec: Recording,
    sig: Signal,
    root: Path,
    work: Path,
    lab: dict[str, str | None],
    acq: str | None,
    opts: ExportOptions,
    findings: Findings,
) -> None:
    import mne
    import mne_bids

    meas_date = rec.base.wall(sig.stream.time_stamps[0]).astimezone(_dt.UTC)
    # a prefix: mne-bids renames by replacing the base name in "DataFile=<base>.eeg" lines
    vhdr = write_brainvision(sig, work / f"xdf_{bids_label(sig.name)}", meas_date)
    raw = mne.io.read_raw_brainvision(vhdr, preload=False, verbose="error")
    types = {c.name: c.kind for c in sig.channels if c.kind != "eeg"}
    if types:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "unit changed from V to NA" for misc channels
            raw.set_channel_types(types, verbose="error")
    raw.set_meas_date(meas_date)
    with raw.info._unlock():
        raw.info["line_freq"] = opts.line_freq
    if opts.line_freq is None:
        findings.note("power line frequency unknown: PowerLineFrequency 'n/a' (--line-freq 50|60)")
    raw.set_annotations(signal_annotations(sig, rec.events, findings))
    path = mne_bids.BIDSPath(
        subject=lab["subject"],
        session=lab["session"],
        task=lab["task"],
        acquisition=acq,
        root=root,
    )
    fmt = "auto" if opts.bids_format == "BrainVision" else opts.bids_format
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mne-bids' advice (line_freq, montage) is noted above
        mne_bids.write_raw_bids(
            raw,
            path,
            format=fmt,
            allow_preload=fmt != "auto",
            overwrite=False,
            verbose="error",
        )


def write_brainvision(sig: Signal, base: Path, meas_date: Any) -> Path:
    """BrainVision files for ``sig`` written in slices (see the module docstring)."""
    import pybv

    base.parent.mkdir(parents=True, exist_ok=True)
    scales = np.array([c.scale if c.scale is not None else 1.0 for c in sig.channels])
    units = ["µV" if c.scale is not None else (c.unit or "n/a") for c in sig.channels]
    names = [c.name for c in sig.channels]
    rows = max(1, int(BLOCK_S * sig.sfreq))
    eeg_file = base.with_suffix(".eeg")
    part_dir = base.parent / f"{base.name}_part"
    for start, block in sig.stream.blocks(rows):
        first = start == 0
        folder = base.parent if first else part_dir
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-voltage units: said in channels.tsv
            pybv.write_brainvision(
                data=block.T.astype(np.float64) * scales[:, None],
                sfreq=sig.sfreq,
                ch_names=names,
                fname_base=base.name,
                folder_out=folder,
                resolution=1.0,
                unit=units,
                fmt="binary_float32",
                meas_date=meas_date if first else None,
                overwrite=True,
            )
        if not first:
            with open(eeg_file, "ab") as dst, open(part_dir / eeg_file.name, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 22)
    shutil.rmtree(part_dir, ignore_errors=True)
    return base.with_suffix(".vhdr")
