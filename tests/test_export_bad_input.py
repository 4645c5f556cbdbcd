"""Bad input to the export: what can be exported is, what cannot is named with the reason, and no
output is ever half-written or overwritten by surprise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from export_data import make_session

pytest.importorskip("mne_bids")
pytest.importorskip("pynwb")

from shared_utils.export import ExportError, export_many, export_session  # noqa: E402
from shared_utils.streams.xdf_format import stream_info_xml  # noqa: E402
from shared_utils.streams.xdf_reader import read_xdf  # noqa: E402
from shared_utils.streams.xdf_writer import XdfWriter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def reasons(result) -> dict[str, str]:
    return {s.item: s.reason for s in result.skipped}


def write(path: Path, streams: list[tuple[dict | str, np.ndarray, object]]) -> Path:
    """An XDF with ``(info, timestamps, samples)`` per stream (clock offsets 0)."""
    with XdfWriter(path) as w:
        for sid, (info, ts, data) in enumerate(streams, start=1):
            w.add_stream(sid, info)
            w.write_clock_offset(sid, 0.0, 0.0)
            if len(ts):
                w.write_samples(sid, ts, data)
            w.write_clock_offset(sid, 100.0, 0.0)
    return path


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory):
    """Unnamed/unitless EEG, an empty marker stream, integer triggers, an irregular numeric
    stream, a non-EEG regular stream, and a gap in the EEG; exported to both formats."""
    folder = tmp_path_factory.mktemp("odd")
    ts = np.concatenate([10 + np.arange(200) / 100, 15 + np.arange(200) / 100])  # 3 s gap
    eeg = np.arange(400 * 4, dtype=np.float32).reshape(400, 4)
    path = write(
        folder / "odd.xdf",
        [
            (stream_info_xml("eeg", "EEG", 4, 100.0, "float32"), ts, eeg),
            ({"name": "empty_markers", "type": "Markers", "channel_format": "string"}, [], []),
            (
                {"name": "triggers", "type": "Markers", "channel_format": "int32"},
                np.array([10.5, 15.5]),
                np.array([[5], [7]], dtype=np.int32),
            ),
            (
                stream_info_xml("accel", "Accelerometer", 3, 0.0, "float32"),
                np.array([10.0, 10.3, 11.1]),
                np.ones((3, 3), np.float32),
            ),
            (
                stream_info_xml("audio", "Audio", 1, 50.0, "int16"),
                10 + np.arange(100) / 50,
                np.arange(100, dtype=np.int16),
            ),
        ],
    )
    res = export_many(path, ["bids", "nwb"], options=None)
    return path, {r.format: r for r in res}


def test_what_bids_cannot_hold_is_skipped_with_the_reason(odd) -> None:
    _, res = odd
    why = reasons(res["bids"])
    assert why["stream 'empty_markers'"] == "no samples in the file"
    assert "no fixed sampling rate" in why["stream 'accel'"]
    assert "not electrophysiology" in why["stream 'audio'"]
    notes = " ".join(res["bids"].notes)
    assert "4 channel(s) have no name" in notes
    assert "taken as microvolts" in notes
    assert "numeric samples (int32)" in notes
    assert "1 gap(s)" in notes


def test_bids_events_follow_the_signal_timestamps_across_a_gap(odd) -> None:
    import mne_bids

    _, res = odd
    vhdr = next(res["bids"].out.rglob("*_eeg.vhdr"))
    raw = mne_bids.read_raw_bids(mne_bids.get_bids_path_from_fname(vhdr), verbose="error")
    assert raw.ch_names == ["ch1", "ch2", "ch3", "ch4"]
    np.testing.assert_array_equal(raw.get_data()[:, 250], np.arange(1000, 1004) * 1e-6)
    got = dict(zip(raw.annotations.description, raw.annotations.onset, strict=True))
    assert got["5"] == pytest.approx(0.5)
    assert got["7"] == pytest.approx(2.5)  # 15.5 s is sample 250, not 5.5 s of data
    assert got["boundary"] == pytest.approx(2.0)


def test_nwb_holds_every_stream_with_samples(odd) -> None:
    from pynwb import NWBHDF5IO

    _, res = odd
    assert reasons(res["nwb"]) == {"stream 'empty_markers'": "no samples in the file"}
    with NWBHDF5IO(str(res["nwb"].files[0]), "r") as io:
        nwb = io.read()
        np.testing.assert_allclose(nwb.acquisition["accel"].timestamps[:], [0, 0.3, 1.1], atol=1e-9)
        assert nwb.acquisition["audio"].data.shape == (100,) or nwb.acquisition[
            "audio"
        ].data.shape == (100, 1)
        eeg = nwb.acquisition["eeg"]
        assert eeg.rate is None
        assert eeg.timestamps[200] == pytest.approx(5.0)
        assert list(nwb.events["triggers"]["annotation"][:]) == ["5", "7"]
        assert "empty_markers" not in nwb.events


def test_xdf_cut_short_by_a_crash_exports_what_it_holds(tmp_path: Path) -> None:
    xdf, truth = make_session(tmp_path / "s", footer=False)
    size = xdf.stat().st_size
    with open(xdf, "r+b") as f:  # the crash also tore the last chunk
        f.truncate(size - 7)
    loaded = {s.name: s.n_samples for s in read_xdf(xdf)}
    res = export_session(xdf, "nwb", tmp_path / "nwb")
    assert any("no footer" in n for n in res.notes)
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(res.files[0]), "r") as io:
        nwb = io.read()
        assert nwb.acquisition["mock_eeg"].data.shape[0] == loaded["mock_eeg"]
        n_dec = nwb.acquisition["decoder_output"].data.shape[0] if loaded["decoder_output"] else 0
        assert n_dec == loaded["decoder_output"]


def test_existing_output_is_never_overwritten_without_overwrite(tmp_path: Path) -> None:
    xdf, _ = make_session(tmp_path / "s")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        export_session(xdf, "nwb", out)
    assert (out / "keep.txt").read_text() == "mine"
    res = export_session(xdf, "nwb", out, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert res.files[0].parent == out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_interrupted_export_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "long.xdf"
    n = 120 * 500  # 2 minutes, 32 ch at 500 Hz: an export long enough to interrupt
    write(
        path,
        [
            (
                stream_info_xml("eeg", "EEG", 32, 500.0, "float32"),
                np.arange(n) / 500.0,
                np.ones((n, 32), np.float32),
            )
        ],
    )
    req = {"source": str(path), "formats": ["nwb"], "out": str(tmp_path / "out")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared_utils.export", json.dumps(req)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        for line in proc.stdout:
            if json.loads(line).get("stage", "").startswith("writing"):
                proc.send_signal(signal.SIGTERM)
                break
        assert proc.wait(30) == 143  # stopped while writing (the export takes ~1 s)
    finally:
        proc.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.xdf"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "x.xdf").write_bytes(b"not an xdf file at all"), "cannot read"),
        (lambda d: None, "holds no .xdf"),
        (lambda d: [(d / n).write_bytes(b"XDF:") for n in ("a.xdf", "b.xdf")], "several .xdf"),
        (lambda d: (d / "session.json").write_text('{"procedures": "x"}'), "'procedures'"),
    ],
    ids=["garbage", "empty-folder", "two-xdf", "bad-session-json"],
)
def test_unusable_sources_are_refused_with_the_reason(tmp_path: Path, setup, message) -> None:
    setup(tmp_path)
    if (tmp_path / "session.json").exists():
        make_session(tmp_path / "s")
        (tmp_path / "s" / "session.json").write_text('{"procedures": "x"}')
        tmp_path = tmp_path / "s"
    with pytest.raises(ExportError, match=message):
        export_session(tmp_path, "nwb")
    assert not (tmp_path / "nwb").exists()


def test_markers_only_recording_is_no_bids_but_is_nwb(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.xdf",
        [
            (
                {"name": "mk", "type": "Markers", "channel_format": "string"},
                np.array([1.0, 2.0]),
                [["a"], ["b"]],
            )
        ],
    )
    with pytest.raises(ExportError, match="no EEG-like stream"):
        export_session(path, "bids")
    assert not (tmp_path / "m_bids").exists()
    assert export_session(path, "nwb").files[0].suffix == ".nwb"


def test_broken_trial_file_line_is_skipped_and_named(tmp_path: Path) -> None:
    xdf, _ = make_session(tmp_path / "s")
    f = tmp_path / "s" / "bpod" / "trials_1.jsonl"
    lines = f.read_text().splitlines()
    f.write_text("\n".join([lines[0], lines[1][:40], lines[2]]) + "\n")
    res = export_session(tmp_path / "s", "nwb")
    assert "trials_1.jsonl line 2" in reasons(res)
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(res.files[0]), "r") as io:
        trials = io.read().trials.to_dataframe()
    # trial 2 comes from the Bpod markers instead of the file
    assert list(trials["trial"]) == [1, 2, 3]
    assert list(trials["source"]) == ["jsonl+xdf", "xdf", "jsonl+xdf"]


def test_two_streams_with_one_name_are_both_kept(tmp_path: Path) -> None:
    mk = {"name": "bpod_events", "type": "Markers", "channel_format": "string"}
    path = write(
        tmp_path / "two.xdf",
        [
            ({**mk, "source_id": "box1"}, np.array([1.0]), [["trial_start:1"]]),
            ({**mk, "source_id": "box2"}, np.array([2.0]), [["trial_start:1"]]),
        ],
    )
    res = export_session(path, "nwb")
    assert any("'bpod_events#2'" in n for n in res.notes)
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(res.files[0]), "r") as io:
        nwb = io.read()
        assert sorted(nwb.events) == ["bpod_events", "bpod_events#2"]
        assert list(nwb.trials["bpod_stream"][:]) == ["bpod_events", "bpod_events#2"]
