"""A small but complete session, written with our own XdfWriter, for the export tests.

Six streams as the default mesh records them, two of them from "other hosts" (their samples on a
clock offset from the recorder's, with the ClockOffset chunks to undo it): EEG (8 ch, 250 Hz,
µV), its state markers, presenter flips (offset +5 s), Bpod events with 3 trials (offset -2.5 s),
decoder output (irregular; a ``control`` on/off channel and probabilities) and control-room
command markers (JSON). Plus the Bpod trial file (times on the Bpod host's clock) and
``session.json``. Every expected value is returned so tests compare against the truth, not
against the reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared_utils.streams.xdf_format import stream_info_xml
from shared_utils.streams.xdf_writer import XdfWriter

T0 = 1000.0  # recorder LSL clock at the first EEG sample
SRATE = 250.0
LABELS = ["Fz", "Cz", "Pz", "Oz", "C3", "C4", "EOG", "ECG"]
PRESENTER_OFFSET = 5.0  # presenter host clock + 5 s = recorder clock
BPOD_OFFSET = -2.5


@dataclass
class Truth:
    """What the session holds, on the recorder's clock."""

    eeg: np.ndarray  # (n, 8) float32, µV
    eeg_ts: np.ndarray
    markers: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)
    switches: list[tuple[float, str]] = field(default_factory=list)


def channels_xml(labels: list[str], types: list[str], units: list[str]) -> str:
    chans = "".join(
        f"<channel><label>{lab}</label><type>{t}</type><unit>{u}</unit></channel>"
        for lab, t, u in zip(labels, types, units, strict=True)
    )
    return f"<channels>{chans}</channels>"


def marker_stream(w: XdfWriter, sid: int, name: str, items: list[tuple[float, str]], offset=0.0):
    w.add_stream(
        sid,
        {
            "name": name,
            "type": "Markers",
            "channel_format": "string",
            "source_id": f"{name}-src",
            "hostname": "otherhost" if offset else "rec",
        },
    )
    w.write_clock_offset(sid, T0 - 10 - offset, offset)
    if items:
        w.write_samples(sid, np.array([t for t, _ in items]) - offset, [[s] for _, s in items])
    w.write_clock_offset(sid, T0 + 60 - offset, offset)


def bpod_trials() -> tuple[list[tuple[float, str]], list[dict[str, Any]]]:
    """Markers (recorder clock) and trial-file records (Bpod clock) for 3 trials."""
    markers, records = [], []
    for n, (start, reward) in enumerate(
        [(T0 + 2.0, True), (T0 + 6.0, False), (T0 + 10.0, True)], 1
    ):
        states = [("WaitForDecoder", 0.0, 1.2 if reward else 3.0)]
        if reward:
            states.append(("Reward", 1.2, 1.4))
        states.append(("ITI", states[-1][2], states[-1][2] + 0.5))
        end = states[-1][2]
        events = [("SoftCode1", 1.2)] if reward else [("Tup", 3.0)]
        events += [("Tup", end)]
        markers.append((start, f"trial_start:{n}"))
        for name, t0, _ in states:
            markers.append((start + t0, f"state:{name}"))
        for name, t in events:
            markers.append((start + t, f"event:{name}"))
        markers.append((start + end, "state:exit"))
        markers.append((start + end, f"trial_end:{n}"))
        by_name: dict[str, list] = {}
        for name, t0, t1 in states:
            by_name.setdefault(name, []).append([t0, t1])
        records.append(
            {
                "trial": n,
                "state_machine": "closed_loop",
                "start_us": 0,
                "end_us": int(end * 1e6),
                "duration_s": end,
                "lsl_start": start - BPOD_OFFSET,
                "visited": [s[0] for s in states],
                "states": by_name,
                "events": {},
                "event_list": [list(e) for e in events],
                "soft_codes": [],
                "stopped": False,
                "error": None,
                "garbage_bytes": 0,
            }
        )
    markers.sort(key=lambda m: m[0])
    return markers, records


def make_session(folder: Path, seconds: float = 16.0, footer: bool = True) -> tuple[Path, Truth]:
    """Write ``folder/rec.xdf`` (+ trial file and session.json); returns the XDF and the truth."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    n = int(seconds * SRATE)
    eeg = (rng.standard_normal((n, 8)) * 20).astype(np.float32)
    ts = T0 + np.arange(n) / SRATE
    truth = Truth(eeg=eeg, eeg_ts=ts)
    truth.markers["mock_eeg_markers"] = [
        (T0 + 4.0 * k + 0.0021, "high" if k % 2 else "low") for k in range(int(seconds // 4))
    ]
    truth.markers["presenter_markers"] = [(T0 + 1.5 + 2 * k, f"cue:{k}") for k in range(6)]
    bpod, records = bpod_trials()
    truth.markers["bpod_events"] = bpod
    truth.trials = records
    cmds = [
        (T0 - 0.5, {"module": "recorder", "cmd": "START"}),
        (T0 + 3.3, {"module": "decoder", "cmd": "START", "kwargs": {"input": "mock_eeg"}}),
    ]
    truth.markers["control_room_commands"] = [(t, json.dumps(c)) for t, c in cmds]
    dec_ts = T0 + 3.0 + np.arange(60) * 0.1
    control = ((np.arange(60) // 15) % 2).astype(np.float32)
    p_high = rng.random(60).astype(np.float32)
    dec = np.column_stack([control, p_high, 1 - p_high]).astype(np.float32)
    truth.switches = [(dec_ts[0], "control:off")] + [
        (dec_ts[k], f"control:{'on' if control[k] else 'off'}")
        for k in range(1, 60)
        if control[k] != control[k - 1]
    ]
    path = folder / "rec.xdf"
    w = XdfWriter(path)
    w.add_stream(
        1,
        stream_info_xml(
            "mock_eeg",
            "EEG",
            8,
            SRATE,
            "float32",
            source_id="eeg-src",
            hostname="rec",
            desc_xml=channels_xml(LABELS, ["EEG"] * 6 + ["EOG", "ECG"], ["microvolts"] * 8),
        ),
    )
    w.write_clock_offset(1, T0 - 1, 0.0)
    for k in range(0, n, 100):
        w.write_samples(1, ts[k : k + 100], eeg[k : k + 100])
    w.write_clock_offset(1, T0 + seconds, 0.0)
    sid = 2
    for name, items in truth.markers.items():
        offset = {"presenter_markers": PRESENTER_OFFSET, "bpod_events": BPOD_OFFSET}.get(name, 0.0)
        marker_stream(w, sid, name, items, offset)
        sid += 1
    w.add_stream(
        sid,
        stream_info_xml(
            "decoder_output",
            "Control",
            3,
            0.0,
            "float32",
            source_id="dec",
            hostname="rec",
            desc_xml=channels_xml(
                ["control", "p_high", "p_low"],
                ["", "", ""],
                ["on/off", "probability", "probability"],
            ),
        ),
    )
    w.write_clock_offset(sid, T0, 0.0)
    w.write_samples(sid, dec_ts, dec)
    w.write_clock_offset(sid, T0 + seconds, 0.0)
    w.close(footers=footer)
    bpod_dir = folder / "bpod"
    bpod_dir.mkdir(exist_ok=True)
    (bpod_dir / "trials_1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "session.json").write_text(
        json.dumps(
            {
                "exp_ref": "2026-12-04_1_mouse01",
                "subject": "mouse01",
                "project": "closedloop",
                "procedures": ["Behavior training/tasks"],
                "start": {"wall": "2026-12-04T10:15:00+01:00", "lsl": T0 - 1.0},
                "end": {"wall": "2026-12-04T10:15:30+01:00", "lsl": T0 + 29.0},
                "modules": {"bpod": {"port": 8105}},
                "subject_info": {"species": "Mus musculus", "sex": "F", "age": "P90D"},
            }
        )
    )
    return path, truth
