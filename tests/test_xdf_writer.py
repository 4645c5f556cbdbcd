"""XdfWriter: files that pyxdf reads back exactly and without a single warning."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pylsl
import pytest
from helpers import load_xdf_strict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_utils.streams.xdf_format import (
    BOUNDARY_UUID,
    CHANNEL_FORMATS,
    stream_info_xml,
    varlen_int,
)
from shared_utils.streams.xdf_writer import XdfWriteError, XdfWriter

ROOT = Path(__file__).resolve().parent.parent


def by_name(streams: list[dict]) -> dict[str, dict]:
    return {s["info"]["name"][0]: s for s in streams}


def fields(name: str, fmt: str, n_ch: int, srate: float) -> dict:
    return {
        "name": name,
        "type": "T",
        "channel_count": n_ch,
        "nominal_srate": srate,
        "channel_format": fmt,
    }


def test_every_numeric_format_round_trips_exactly(tmp_path: Path) -> None:
    path = tmp_path / "all.xdf"
    rng = np.random.default_rng(1)
    pushed = {}
    with XdfWriter(path) as w:
        for sid, fmt in enumerate([f for f in CHANNEL_FORMATS if f != "string"], start=1):
            dt = np.dtype(CHANNEL_FORMATS[fmt])
            if dt.kind == "f":
                data = rng.standard_normal((700, 3)).astype(dt)
            else:
                info = np.iinfo(dt)
                data = rng.integers(info.min, info.max, (700, 3), dtype=dt, endpoint=True)
            ts = 50.0 + np.arange(700) / 250.0
            w.add_stream(sid, fields(f"s_{fmt}", fmt, 3, 250.0))
            w.write_clock_offset(sid, 49.0, 0.0)
            w.write_samples(sid, ts[:123], data[:123])  # chunk sizes need not line up
            w.write_boundary()
            w.write_samples(sid, ts[123:], data[123:])
            w.write_clock_offset(sid, 53.0, 0.0)
            pushed[f"s_{fmt}"] = (ts, data)
    raw = by_name(load_xdf_strict(path, synchronize_clocks=False, dejitter_timestamps=False))
    assert set(raw) == set(pushed)
    for name, (ts, data) in pushed.items():
        assert raw[name]["time_series"].dtype == data.dtype
        np.testing.assert_array_equal(raw[name]["time_series"], data)
        np.testing.assert_array_equal(raw[name]["time_stamps"], ts)
        footer = raw[name]["footer"]["info"]
        assert footer["sample_count"] == ["700"]
        assert float(footer["first_timestamp"][0]) == ts[0]
        assert float(footer["last_timestamp"][0]) == ts[-1]
        assert len(footer["clock_offsets"][0]["offset"]) == 2
    # and the default load (clock sync + dejitter) has nothing to complain about either
    synced = by_name(load_xdf_strict(path))
    assert synced["s_float32"]["info"]["effective_srate"] == pytest.approx(250.0)


def test_strings_utf8_bytes_and_empty_values(tmp_path: Path) -> None:
    path = tmp_path / "markers.xdf"
    rows = [["stop ü", ""], [b"raw\x00bytes", "x" * 300], ["🎯", "a|b"]]
    ts = [1.5, 2.25, 9.0]
    with XdfWriter(path) as w:
        w.add_stream(7, fields("mk", "string", 2, 0.0))
        w.write_clock_offset(7, 1.0, 0.0)
        w.write_samples(7, ts, rows)
    mk = by_name(load_xdf_strict(path))["mk"]
    assert mk["time_series"] == [["stop ü", ""], ["raw\x00bytes", "x" * 300], ["🎯", "a|b"]]
    np.testing.assert_array_equal(mk["time_stamps"], ts)


def test_layout_bytes_match_the_spec(tmp_path: Path) -> None:
    """Check a few bytes by hand: magic, chunk framing, the boundary UUID, a clock offset."""
    path = tmp_path / "layout.xdf"
    with XdfWriter(path) as w:
        w.add_stream(3, fields("x", "int16", 1, 0.0))
        w.write_clock_offset(3, 1.25, -0.5)
        w.write_boundary()
    blob = path.read_bytes()
    assert blob[:4] == b"XDF:"
    # the clock offset chunk: len byte-count 1, length 2+4+16, tag 4, stream id 3, two doubles
    expected = bytes([1, 22]) + struct.pack("<HIdd", 4, 3, 1.25, -0.5)
    assert expected in blob
    assert bytes([1, 18]) + struct.pack("<H", 5) + BOUNDARY_UUID in blob
    assert varlen_int(5) == b"\x01\x05"
    assert varlen_int(70000) == b"\x04" + struct.pack("<I", 70000)
    assert varlen_int(2**33) == b"\x08" + struct.pack("<Q", 2**33)


def test_lsl_streaminfo_and_xml_are_accepted_with_desc_intact(tmp_path: Path) -> None:
    info = pylsl.StreamInfo("lslinfo", "EEG", 2, 100.0, "double64", "abc")
    info.desc().append_child("channels").append_child("channel").append_child_value("label", "Cz")
    path = tmp_path / "info.xdf"
    xml = stream_info_xml("fromxml", "Markers", 1, 0.0, "string", channel_labels=["m"])
    with XdfWriter(path) as w:
        w.add_stream(1, info)
        w.add_stream(2, xml)
        w.write_clock_offset(1, 0.0, 0.0)
        w.write_samples(1, [1.0, 1.01], np.array([[1.5, 2.5], [3.5, 4.5]]))
    streams = by_name(load_xdf_strict(path))
    desc = streams["lslinfo"]["info"]["desc"][0]
    assert desc["channels"][0]["channel"][0]["label"] == ["Cz"]
    assert streams["lslinfo"]["info"]["source_id"] == ["abc"]
    assert streams["fromxml"]["info"]["desc"][0]["channels"][0]["channel"][0]["label"] == ["m"]


def test_file_cut_after_any_complete_chunk_still_loads(tmp_path: Path) -> None:
    """What a kill -9 leaves behind: no footers. Every complete chunk must still be there."""
    path = tmp_path / "cut.xdf"
    w = XdfWriter(path)
    w.add_stream(1, fields("eeg", "float32", 4, 100.0))
    w.write_clock_offset(1, 0.0, 0.0)
    data = np.arange(400, dtype=np.float32).reshape(100, 4)
    w.write_samples(1, np.arange(100) / 100.0, data)
    w.close(footers=False)  # what a crashed writer leaves: no footer chunks
    streams = load_xdf_strict(path, dejitter_timestamps=False)
    assert "footer" not in streams[0]
    np.testing.assert_array_equal(streams[0]["time_series"], data)


def test_existing_file_is_refused_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keep.xdf"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        XdfWriter(path)
    assert path.read_bytes() == b"precious"
    with XdfWriter(path, overwrite=True):
        pass
    assert path.read_bytes().startswith(b"XDF:")


def test_bad_arguments_are_refused_with_clear_messages(tmp_path: Path) -> None:
    with XdfWriter(tmp_path / "bad.xdf") as w:
        with pytest.raises(ValueError, match="lacks <channel_format>"):
            w.add_stream(
                1,
                "<info><name>a</name><channel_count>1</channel_count>"
                "<nominal_srate>0</nominal_srate></info>",
            )
        with pytest.raises(ValueError, match="not valid XML"):
            w.add_stream(1, "<info>")
        w.add_stream(1, fields("a", "float32", 2, 0.0))
        with pytest.raises(ValueError, match="already added"):
            w.add_stream(1, fields("a", "float32", 2, 0.0))
        with pytest.raises(KeyError, match="add_stream first"):
            w.write_samples(9, [0.0], [[1.0, 2.0]])
        with pytest.raises(ValueError, match=r"shape \(1, 3\) != \(1, 2\)"):
            w.write_samples(1, [0.0], [[1.0, 2.0, 3.0]])


def test_write_error_is_raised_and_the_file_rolled_back(tmp_path: Path) -> None:
    """A file-size limit stands in for a full disk: writes fail part-way through a chunk."""
    path = tmp_path / "full.xdf"
    code = f"""
import resource, numpy as np, sys
from shared_utils.streams.xdf_writer import XdfWriter, XdfWriteError
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
w = XdfWriter({str(path)!r})
w.add_stream(1, dict(name="eeg", channel_count=8, nominal_srate=1000.0))
w.write_clock_offset(1, 0.0, 0.0)
n = 0
try:
    while True:
        ts = (np.arange(1000) + n) / 1000.0
        w.write_samples(1, ts, np.full((1000, 8), n, np.float32))
        n += 1000
except XdfWriteError as e:
    print("ERR", n, w.bytes_written, e)
w.close()
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    _, n, written, *msg = out.split()
    assert "failed" in " ".join(msg)
    assert path.stat().st_size == int(written) < 200_000
    eeg = load_xdf_strict(path, dejitter_timestamps=False)[0]
    assert len(eeg["time_stamps"]) == int(n) > 0
    np.testing.assert_array_equal(
        eeg["time_series"][:, 0], np.repeat(np.arange(0, int(n), 1000), 1000)
    )


def test_unwritable_device_raises_write_error() -> None:
    with pytest.raises(XdfWriteError, match="No space"):
        XdfWriter("/dev/full", overwrite=True)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(sorted(CHANNEL_FORMATS)),
    n_ch=st.integers(1, 5),
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(
    tmp_path: Path, fmt: str, n_ch: int, sizes: list[int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    path = tmp_path / f"p{seed}_{fmt}.xdf"
    total = sum(sizes)
    ts = np.cumsum(rng.uniform(0.001, 0.01, total)) + 10
    if fmt == "string":
        data = [
            [
                str(rng.integers(0, 10 ** rng.integers(1, 12))) * int(rng.integers(0, 3))
                for _ in range(n_ch)
            ]
            for _ in range(total)
        ]
    else:
        data = (rng.standard_normal((total, n_ch)) * 100).astype(CHANNEL_FORMATS[fmt])
    with XdfWriter(path, overwrite=True) as w:
        w.add_stream(1, fields("p", fmt, n_ch, 0.0))
        w.write_clock_offset(1, 0.0, 0.0)
        i = 0
        for s in sizes:
            w.write_samples(1, ts[i : i + s], data[i : i + s])
            i += s
    got = load_xdf_strict(path, synchronize_clocks=False)[0]
    np.testing.assert_array_equal(got["time_stamps"], ts)
    if fmt == "string":
        assert got["time_series"] == data
    else:
        np.testing.assert_array_equal(got["time_series"], data)


def test_fsync_does_not_hold_up_writes_from_other_threads(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "f.xdf"
    w = XdfWriter(path)
    w.add_stream(1, {"name": "F", "channel_count": 2, "nominal_srate": 100.0})
    w.write_clock_offset(1, 0.0, 0.0)
    stop = threading.Event()

    def fsyncs() -> None:
        while not stop.is_set():
            w.flush(fsync=True)

    t = threading.Thread(target=fsyncs)
    t.start()
    try:
        for i in range(200):
            w.write_samples(1, [i / 100.0], np.array([[i, -i]], dtype=np.float32))
    finally:
        stop.set()
        t.join()
    w.write_clock_offset(1, 2.0, 0.0)
    w.close()
    w.flush()  # after close: a no-op, not an error
    streams = load_xdf_strict(path)
    assert streams[0]["time_series"][:, 0].tolist() == list(range(200))
