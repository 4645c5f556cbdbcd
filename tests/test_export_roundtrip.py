"""Export round trip: a session written with our XdfWriter, exported to BIDS and NWB, read back
with the field's readers (MNE-BIDS, pynwb) and checked against what was written, then checked by
the field's validators (BIDS validator, nwbinspector)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from export_data import BPOD_OFFSET, LABELS, SRATE, T0, make_session

pytest.importorskip("mne_bids")
pytest.importorskip("pynwb")

from shared_utils.export import export_many, read_raw_xdf  # noqa: E402
from shared_utils.export.validate import bids_validator_command, inspect_nwb  # noqa: E402

ONE_SAMPLE = 1.0 / SRATE


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("session")
    xdf, truth = make_session(folder)
    from shared_utils.export import ExportOptions

    results = export_many(folder, ["bids", "nwb"], options=ExportOptions(line_freq=50.0))
    return folder, truth, {r.format: r for r in results}


def read_bids(root: Path):
    import mne_bids

    path = mne_bids.BIDSPath(
        subject="mouse01", session="20261204s1", task="closedloop", datatype="eeg", root=root
    )
    return mne_bids.read_raw_bids(path, verbose="error")


def expected_events(truth) -> list[tuple[float, str]]:
    """Every marker and switch inside the EEG's samples, in seconds from the first sample."""
    end = truth.eeg_ts[-1]
    items = [m for ms in truth.markers.values() for m in ms] + truth.switches
    return sorted((t - T0, lab) for t, lab in items if T0 <= t <= end)


def test_bids_data_read_back_sample_for_sample(exported) -> None:
    folder, truth, res = exported
    raw = read_bids(res["bids"].out)
    assert raw.ch_names == LABELS
    assert raw.info["sfreq"] == SRATE
    assert raw.get_channel_types() == ["eeg"] * 6 + ["eog", "ecg"]
    assert raw.info["line_freq"] == 50.0
    data = raw.get_data()  # volts
    assert data.shape == truth.eeg.T.shape
    np.testing.assert_array_equal(data, truth.eeg.T.astype(np.float64) * 1e-6)
    # 10:15:00+01:00 at LSL T0-1: the first EEG sample (T0) is one second later
    assert raw.info["meas_date"] == dt.datetime(2026, 12, 4, 9, 15, 1, tzinfo=dt.UTC)


def test_bids_events_from_every_marker_stream_within_one_sample(exported) -> None:
    folder, truth, res = exported
    events = next(res["bids"].out.rglob("*_events.tsv"))
    rows = [line.split("\t") for line in events.read_text().splitlines()]
    head, rows = rows[0], rows[1:]
    got = sorted((float(r[head.index("onset")]), r[head.index("trial_type")]) for r in rows)
    want = expected_events(truth)
    for (t_got, lab_got), (t_want, lab_want) in zip(got, want, strict=True):
        assert lab_got == lab_want
        assert abs(t_got - t_want) <= ONE_SAMPLE, (lab_got, t_got, t_want)
    # other-host streams were put back on the recorder's clock (presenter +5 s, Bpod -2.5 s)
    onsets = dict((lab, t) for t, lab in got)
    assert abs(onsets["cue:0"] - 1.5) <= ONE_SAMPLE
    assert abs(onsets["trial_start:1"] - 2.0) <= ONE_SAMPLE
    assert "stream" in head
    # the command marker from before the first EEG sample is reported, not silently lost
    assert any("control_room_commands" in s.item for s in res["bids"].skipped)
    raw = read_bids(res["bids"].out)
    assert len(raw.annotations) == len(want)


def test_nwb_read_back(exported) -> None:
    from pynwb import NWBHDF5IO

    folder, truth, res = exported
    path = next(f for f in res["nwb"].files if f.suffix == ".nwb")
    assert path.name == "sub-mouse01_ses-20261204s1.nwb"
    t0 = T0 - 1.0  # session.json start.lsl
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.session_start_time == dt.datetime(2026, 12, 4, 9, 15, tzinfo=dt.UTC)
        assert nwb.session_id == "2026-12-04_1_mouse01"
        assert nwb.subject.subject_id == "mouse01"
        assert nwb.subject.species == "Mus musculus"
        eeg = nwb.acquisition["mock_eeg"]
        np.testing.assert_array_equal(eeg.data[:], truth.eeg)
        assert eeg.conversion == 1e-6
        assert eeg.rate == SRATE
        assert eeg.starting_time == pytest.approx(T0 - t0, abs=1e-9)
        names = list(nwb.electrodes["channel_name"][:])
        assert names == LABELS
        assert list(nwb.electrodes["channel_type"][:])[-2:] == ["eog", "ecg"]
        for stream, items in truth.markers.items():
            table = nwb.events[stream]
            np.testing.assert_allclose(table["timestamp"][:], [t - t0 for t, _ in items], atol=1e-9)
            assert list(table["annotation"][:]) == [lab for _, lab in items]
        assert list(nwb.events["bpod_events"]["trial"][:])[:2] == [1, 1]
        sw = nwb.events["decoder_output_switches"]
        assert list(sw["annotation"][:]) == [lab for _, lab in truth.switches]
        dec = nwb.acquisition["decoder_output"]
        assert dec.data.shape == (60, 3)
        assert dec.timestamps[0] == pytest.approx(T0 + 3 - t0)
        trials = nwb.trials.to_dataframe()
        assert list(trials["trial"]) == [1, 2, 3]
        assert set(trials["source"]) == {"jsonl+xdf"}
        assert list(trials["outcome"]) == ["completed"] * 3
        assert list(trials["state_machine"]) == ["closed_loop"] * 3
        for (_, row), rec in zip(trials.iterrows(), truth.trials, strict=True):
            start = rec["lsl_start"] + BPOD_OFFSET  # the recorder's clock
            assert row["start_time"] == pytest.approx(start - t0, abs=1e-6)
            assert list(row["states"]) == rec["visited"]
            assert row["state_start_times"][0] == pytest.approx(start - t0, abs=1e-6)
            assert row["stop_time"] == pytest.approx(start + rec["duration_s"] - t0, abs=1e-6)


def test_nwbinspector_finds_nothing_serious(exported) -> None:
    _, _, res = exported
    path = next(f for f in res["nwb"].files if f.suffix == ".nwb")
    report = inspect_nwb(path)
    assert report["errors"] == 0, report["messages"]


def test_bids_validator_finds_no_error(exported) -> None:
    cmd = bids_validator_command()
    if cmd is None:
        pytest.skip("bids-validator-deno not installed")
    _, _, res = exported
    proc = subprocess.run(
        [*cmd, "--json", str(res["bids"].out)], capture_output=True, text=True, timeout=300
    )
    report = json.loads(proc.stdout)
    issues = report["issues"]["issues"]
    errors = [i for i in issues if i["severity"] == "error"]
    assert errors == [], errors
    assert report["summary"]["subjects"] == ["mouse01"]


def test_read_raw_xdf_places_markers_like_the_export(exported) -> None:
    folder, truth, _ = exported
    with pytest.warns(UserWarning, match="control_room_commands"):
        raw = read_raw_xdf(folder / "rec.xdf")
    np.testing.assert_array_equal(raw.get_data(), truth.eeg.T.astype(np.float64) * 1e-6)
    want = expected_events(truth)
    got = sorted(zip(raw.annotations.onset, raw.annotations.description, strict=True))
    assert [d for _, d in got] == [d for _, d in want]
    np.testing.assert_allclose([t for t, _ in got], [t for t, _ in want], atol=1e-9)
    streams = {x["stream"] for x in raw.annotations.extras}
    assert streams == {
        "mock_eeg_markers",
        "presenter_markers",
        "bpod_events",
        "control_room_commands",
        "decoder_output",
    }


def test_bids_as_edf_within_one_quantisation_step(exported, tmp_path: Path) -> None:
    from shared_utils.export import ExportOptions, export_session

    folder, truth, _ = exported
    res = export_session(
        folder, "bids", tmp_path / "edf", options=ExportOptions(bids_format="EDF", line_freq=50.0)
    )
    edf = next(res.out.rglob("*_eeg.edf"))
    import mne_bids

    raw = mne_bids.read_raw_bids(mne_bids.get_bids_path_from_fname(edf), verbose="error")
    want = truth.eeg.T.astype(np.float64) * 1e-6
    step = (want.max() - want.min()) / (2**16 - 1)  # EDF: 16 bits over the physical range
    assert np.abs(raw.get_data() - want).max() <= step
    assert len(raw.annotations) == len(expected_events(truth))
