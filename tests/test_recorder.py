"""The recorder as a real subprocess, real LSL outlets here, files read back with pyxdf."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import helpers
import numpy as np
import pylsl
import pytest
import pyxdf
from conftest import ROOT, free_port, stop_process_group, wait_until_up
from helpers import load_xdf_strict

from shared_utils.client import ModuleClient
from shared_utils.errors import CommandFailed

RECORDER = "services.recorder"


def load_strict(path: Path, only: list[str] | None = None, **kwargs: Any) -> dict[str, dict]:
    """pyxdf.load_xdf with warnings (Python and log records) as errors; streams by name.

    ``only`` restricts loading to these stream names: tests of other modules may run on this
    machine at the same time, and a recording of "all streams" picks their streams up too.
    """
    if only is not None:
        infos = pyxdf.resolve_streams(str(path))
        ids = [i["stream_id"] for i in infos if i["name"] in only]
        assert len(ids) == len(only), f"{only} not all in {[i['name'] for i in infos]}"
        kwargs["select_streams"] = ids
    return {s["info"]["name"][0]: s for s in load_xdf_strict(path, **kwargs)}


wait_for = partial(helpers.wait_for, every=0.05)


def client(port: int) -> ModuleClient:
    return ModuleClient("127.0.0.1", port, timeout=10, protocol="json")


def recorded(c: ModuleClient, name: str) -> int | None:
    """Samples of ``name`` in the running recording (None until its header is written)."""
    st = c.send("STATUS")
    return st.get("counts", {}).get(name)


def subscribed(c: ModuleClient, outlet: pylsl.StreamOutlet, name: str) -> bool:
    return recorded(c, name) is not None and outlet.have_consumers()


def eeg_outlet(
    name: str, n_ch: int = 8, srate: float = 500.0, source_id: str = ""
) -> pylsl.StreamOutlet:
    return pylsl.StreamOutlet(pylsl.StreamInfo(name, "EEG", n_ch, srate, "float32", source_id))


def counter_block(start: int, n: int, n_ch: int) -> np.ndarray:
    """Channel 0 counts samples, the rest are derived from it: loss and order are checkable."""
    idx = np.arange(start, start + n, dtype=np.float32)
    return np.stack([idx + 1000.0 * c for c in range(n_ch)], axis=1).astype(np.float32)


@pytest.fixture
def recorder(module_process, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    return module_process(RECORDER, "--data-dir", str(tmp_path))


def test_records_every_stream_sample_for_sample(recorder, tmp_path: Path, lsl_name: str) -> None:
    _, port = recorder
    eeg_name, mk_name, late_name = f"{lsl_name}_eeg", f"{lsl_name}_mk", f"{lsl_name}_late"
    eeg = eeg_outlet(eeg_name, source_id=f"{lsl_name}_src")
    mk = pylsl.StreamOutlet(pylsl.StreamInfo(mk_name, "Markers", 1, 0, "string", ""))
    other = eeg_outlet(f"{lsl_name}_not_wanted", n_ch=1)
    with client(port) as c:
        wait_for(lambda: {eeg_name, mk_name} <= {s["name"] for s in c.send("LIST")}, "LIST")
        res = c.send(
            "START",
            file="rec_{subject}_{run:02d}.xdf",
            streams=[eeg_name, mk_name, late_name],
            subject="S7",
            run=3,
        )
        path = tmp_path / "rec_S7_03.xdf"
        assert res["file"] == str(path)
        assert late_name in res["waiting_for"]
        wait_for(lambda: subscribed(c, eeg, eeg_name) and subscribed(c, mk, mk_name), "subscribe")

        # a stream that appears after START is added to the running recording
        late = pylsl.StreamOutlet(pylsl.StreamInfo(late_name, "Ctrl", 2, 0, "int32", ""))
        wait_for(lambda: subscribed(c, late, late_name), "late stream")

        t0 = pylsl.local_clock()
        data = counter_block(0, 3000, 8)
        ts = t0 + np.arange(3000) / 500.0
        markers, m_ts = [], []
        for i in range(0, 3000, 25):
            eeg.push_chunk(data[i : i + 25], ts[i + 24])
            if i % 250 == 0:
                markers.append(f"trial {i} ü|{{x}}")
                m_ts.append(ts[i])
                mk.push_sample([markers[-1]], ts[i])
            if i % 500 == 0:
                late.push_sample([i, -i], ts[i])
            other.push_sample([float(i)])
        wait_for(lambda: recorded(c, eeg_name) == 3000 and recorded(c, mk_name) == 12, "counts")
        stop = c.send("STOP")
        assert c.send("UP") is True

    assert stop["file"] == str(path)
    assert stop["counts"] == {eeg_name: 3000, mk_name: 12, late_name: 6}
    assert stop["gaps"] == 0
    assert stop["lost"] == []
    assert stop["error"] is None
    raw = load_strict(path, synchronize_clocks=False, dejitter_timestamps=False)
    assert set(raw) == {eeg_name, mk_name, late_name}
    np.testing.assert_array_equal(raw[eeg_name]["time_series"], data)
    np.testing.assert_allclose(raw[eeg_name]["time_stamps"], ts, rtol=0, atol=1e-9)
    assert [row[0] for row in raw[mk_name]["time_series"]] == markers
    np.testing.assert_array_equal(raw[mk_name]["time_stamps"], m_ts)
    np.testing.assert_array_equal(
        raw[late_name]["time_series"], [[i, -i] for i in range(0, 3000, 500)]
    )
    for s in raw.values():
        assert len(s["clock_times"]) >= 2
        assert int(s["footer"]["info"]["sample_count"][0]) == len(s["time_stamps"])
        assert s["info"]["hostname"] == [socket.gethostname()]
    assert raw[eeg_name]["info"]["source_id"] == [f"{lsl_name}_src"]
    synced = load_strict(path)  # default load: clock sync + dejitter, still no warnings
    assert synced[eeg_name]["info"]["effective_srate"] == pytest.approx(500.0, rel=1e-6)


def test_start_refusals_name_the_problem(recorder, tmp_path: Path, lsl_name: str) -> None:
    _, port = recorder
    existing = tmp_path / "old.xdf"
    existing.write_bytes(b"precious")
    (tmp_path / "plain").write_text("a file")
    with client(port) as c:
        with pytest.raises(CommandFailed, match=r"cannot write .*plain/x\.xdf.*not a folder"):
            c.send("START", file="plain/x.xdf")
        assert c.send("STATUS")["recording"] is False
        with pytest.raises(CommandFailed, match=r"already exists.*overwrite"):
            c.send("START", file="old.xdf")
        assert existing.read_bytes() == b"precious"
        with pytest.raises(CommandFailed, match=r'needs "subject"'):
            c.send("START", file="{subject}.xdf")
        with pytest.raises(CommandFailed, match=r"must end with \.xdf"):
            c.send("START", file="notes.txt")
        with pytest.raises(CommandFailed, match=r"streams"):
            c.send("START", file="a.xdf", streams=[1, 2])
        assert not (tmp_path / "a.xdf").exists()
        assert c.send("STATUS")["recording"] is False

        first = c.send("START", file="old.xdf", overwrite=True, streams=[lsl_name])["file"]
        with pytest.raises(CommandFailed, match=rf"already recording to {first}"):
            c.send("START", file="second.xdf")
        assert not (tmp_path / "second.xdf").exists()
        res = c.send("STOP")
        assert res["stopped"] is True
        assert res["file"] == first
        assert c.send("STOP")["stopped"] is False  # idempotent, not an error
        assert c.send("UP") is True
    assert existing.read_bytes().startswith(b"XDF:")
    assert load_strict(existing) == {}  # overwritten: a valid XDF file without streams


def test_kill_9_loses_at_most_one_flush_interval(
    module_process, tmp_path: Path, lsl_name: str
) -> None:
    proc, port = module_process(RECORDER, "--data-dir", str(tmp_path), "--flush-ms", "200")
    out = eeg_outlet(lsl_name, n_ch=4, srate=1000.0)
    with client(port) as c:
        path = Path(c.send("START", file="crash.xdf", streams=[lsl_name])["file"])
        wait_for(lambda: subscribed(c, out, lsl_name), "subscribe")
    pushed = 0
    t_next = time.monotonic()
    # 2.55 s at 1 kHz in 10-sample chunks, stamped like a real source; the odd length keeps the
    # kill away from a multiple of any whole-second write cadence a regression might bring
    while pushed < 2550:
        out.push_chunk(counter_block(pushed, 10, 4))
        pushed += 10
        t_next += 0.01
        time.sleep(max(0.0, t_next - time.monotonic()))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    streams = load_strict(path)  # no footer, but complete chunks and >= 1 clock offset
    s = streams[lsl_name]
    got = s["time_series"][:, 0].astype(int)
    assert "footer" not in s
    np.testing.assert_array_equal(got, np.arange(len(got)))  # a prefix, in order, no gaps
    lost = pushed - len(got)
    assert 0 <= lost <= 200 + 50, f"lost {lost} samples (one 200 ms flush interval = 200)"


def test_vanished_stream_is_noted_and_the_file_stays_valid(
    recorder, tmp_path: Path, lsl_name: str
) -> None:
    _, port = recorder
    keep = eeg_outlet(f"{lsl_name}_keep", n_ch=2, srate=100.0)
    # no source_id: not recoverable; kept in a list so that dropping it destroys the outlet
    gone_box = [eeg_outlet(f"{lsl_name}_gone", n_ch=2, srate=100.0)]
    with client(port) as c:
        names = {f"{lsl_name}_keep", f"{lsl_name}_gone"}
        wait_for(lambda: names <= {x["name"] for x in c.send("LIST")}, "LIST")
        path = Path(
            c.send("START", file="vanish.xdf", streams=[f"{lsl_name}_keep", f"{lsl_name}_gone"])[
                "file"
            ]
        )
        wait_for(
            lambda: (
                subscribed(c, keep, f"{lsl_name}_keep")
                and subscribed(c, gone_box[0], f"{lsl_name}_gone")
            ),
            "subscribe",
        )
        gone_box[0].push_chunk(counter_block(0, 300, 2))
        keep.push_chunk(counter_block(0, 300, 2))
        wait_for(lambda: recorded(c, f"{lsl_name}_gone") == 300, "gone samples")
        gone_box.clear()  # the outlet vanishes mid-recording
        st = wait_for(lambda: (s := c.send("STATUS"))["lost"] and s, "lost flag")
        assert st["lost"] == [f"{lsl_name}_gone"]
        assert st["recording"] is True
        keep.push_chunk(counter_block(300, 200, 2))
        wait_for(lambda: recorded(c, f"{lsl_name}_keep") == 500, "keep samples")
        stop = c.send("STOP")
    assert stop["counts"] == {f"{lsl_name}_keep": 500, f"{lsl_name}_gone": 300}
    note = next(s["note"] for s in stop["streams"] if s["name"] == f"{lsl_name}_gone")
    assert "vanished" in note
    raw = load_strict(path, dejitter_timestamps=False)
    np.testing.assert_array_equal(raw[f"{lsl_name}_gone"]["time_series"], counter_block(0, 300, 2))
    np.testing.assert_array_equal(raw[f"{lsl_name}_keep"]["time_series"], counter_block(0, 500, 2))


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))


def test_write_failure_stops_cleanly_keeps_data_and_reports(tmp_path: Path, lsl_name: str) -> None:
    """A file-size limit makes writes fail like a full disk would."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", RECORDER, "--port", str(port), "--data-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_limit_file_size,
    )
    try:
        wait_until_up(port, proc)
        out = eeg_outlet(lsl_name, n_ch=16, srate=1000.0)
        with client(port) as c:
            path = Path(c.send("START", file="full.xdf", streams=[lsl_name])["file"])
            wait_for(lambda: subscribed(c, out, lsl_name), "subscribe")
            pushed = 0
            while c.send("STATUS")["recording"]:  # 400 kB hold ~6000 samples of 16 ch
                out.push_chunk(counter_block(pushed, 100, 16))
                pushed += 100
                time.sleep(0.01)
                assert pushed < 100_000, "the write error never surfaced"
            st = c.send("STATUS")
            assert "failed" in st["error"]
            assert "full.xdf" in st["error"]
            rep = c.send("STOP")
            assert rep["stopped"] is True
            assert rep["error"] == st["error"]
            kept = rep["counts"][lsl_name]
            assert kept > 0
            assert c.send("UP") is True
            assert c.send("STATUS")["recording"] is False
        assert path.stat().st_size <= 400_000
        s = load_strict(path, dejitter_timestamps=False)[lsl_name]
        assert len(s["time_stamps"]) == kept
        np.testing.assert_array_equal(s["time_series"], counter_block(0, kept, 16))
    finally:
        stop_process_group(proc)
        if proc.stdout:
            proc.stdout.close()


def _rcs(sock: socket.socket, line: str) -> bytes:
    sock.sendall(line.encode() + b"\n")
    return sock.recv(2)


def test_labrecorder_remote_control(module_process, tmp_path: Path, lsl_name: str) -> None:
    rcs_port = free_port()
    _, port = module_process(RECORDER, "--rcs-port", str(rcs_port), "--data-dir", str(tmp_path))
    out = eeg_outlet(lsl_name, n_ch=1, srate=100.0)
    with client(port) as c, socket.create_connection(("127.0.0.1", rcs_port), timeout=10) as s:
        wait_for(lambda: lsl_name in {x["name"] for x in c.send("LIST")}, "LIST")
        assert _rcs(s, "update") == b"OK"
        assert _rcs(s, "select all") == b"OK"
        line = f"filename {{root:{tmp_path}}} {{template:exp_%p_%s.xdf}} {{participant:P9}}"
        assert _rcs(s, line) == b"OK"
        assert _rcs(s, "bogus command") == b"OK"  # LabRecorder answers OK to anything
        assert _rcs(s, "start") == b"OK"
        st = c.send("STATUS")
        assert st["recording"] is True
        assert st["file"] == str(tmp_path / "exp_P9_S001.xdf")
        wait_for(lambda: subscribed(c, out, lsl_name), "subscribe")
        assert _rcs(s, "start") == b"OK"  # a second start must not touch the file being written
        assert not (tmp_path / "exp_P9_S001_old1.xdf").exists()
        assert "already recording" in c.send("STATUS")["rcs_last_error"]
        out.push_chunk(counter_block(0, 50, 1))
        wait_for(lambda: recorded(c, lsl_name) == 50, "samples")
        assert _rcs(s, "stop") == b"OK"
        assert c.send("STATUS")["recording"] is False
        # start again with the same name: the first file is moved aside, never clobbered
        assert _rcs(s, "start") == b"OK"
        assert _rcs(s, "stop") == b"OK"
    assert (tmp_path / "exp_P9_S001_old1.xdf").exists()
    raw = load_strict(tmp_path / "exp_P9_S001_old1.xdf", only=[lsl_name], dejitter_timestamps=False)
    np.testing.assert_array_equal(raw[lsl_name]["time_series"], counter_block(0, 50, 1))


def test_sigterm_finishes_the_file_with_footers(
    module_process, tmp_path: Path, lsl_name: str
) -> None:
    proc, port = module_process(RECORDER, "--data-dir", str(tmp_path))
    out = eeg_outlet(lsl_name, n_ch=3, srate=200.0)
    with client(port) as c:
        path = Path(c.send("START", file="term.xdf", streams=[lsl_name])["file"])
        wait_for(lambda: subscribed(c, out, lsl_name), "subscribe")
        out.push_chunk(counter_block(0, 400, 3))
        wait_for(lambda: recorded(c, lsl_name) == 400, "samples")
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(20)
    s = load_strict(path, dejitter_timestamps=False)[lsl_name]
    assert s["footer"]["info"]["sample_count"] == ["400"]
    np.testing.assert_array_equal(s["time_series"], counter_block(0, 400, 3))


def test_measured_clock_offsets_for_streams_of_other_hosts(
    module_process, tmp_path: Path, lsl_name: str
) -> None:
    """--probe-local-offsets takes the path used for streams from other machines: time_correction
    in its own thread, an offset every --offset-s, one more at stop."""
    _, port = module_process(
        RECORDER, "--data-dir", str(tmp_path), "--probe-local-offsets", "--offset-s", "0.3"
    )
    out = eeg_outlet(lsl_name, n_ch=1, srate=100.0)
    with client(port) as c:
        path = Path(c.send("START", file="probe.xdf", streams=[lsl_name])["file"])
        wait_for(lambda: subscribed(c, out, lsl_name), "subscribe")
        out.push_chunk(counter_block(0, 100, 1))

        def offsets() -> int:
            streams = c.send("STATUS")["streams"]
            return streams[0]["clock_offsets"] if streams else 0

        wait_for(lambda: offsets() >= 2, "two measured offsets")
        stop = c.send("STOP")
    s = load_strict(path, dejitter_timestamps=False)[lsl_name]
    assert len(s["clock_values"]) == stop["streams"][0]["clock_offsets"] >= 3
    assert all(v != 0.0 and abs(v) < 0.01 for v in s["clock_values"])  # measured, same machine
    assert s["footer"]["info"]["sample_count"] == ["100"]


def test_pull_buffers_stay_cache_sized_and_cover_slow_streams() -> None:
    from services.recorder.stream_sizing import PULL_BUFFER_BYTES, pull_capacity

    fast = pylsl.StreamInfo("cap_fast", "EEG", 64, 1_000_000.0, "float32", "cap_fast")
    assert pull_capacity(fast, 0.1) == PULL_BUFFER_BYTES // (64 * 4)
    wide = pylsl.StreamInfo("cap_wide", "EEG", 64, 1_000_000.0, "double64", "cap_wide")
    assert pull_capacity(wide, 0.1) == PULL_BUFFER_BYTES // (64 * 8)
    slow = pylsl.StreamInfo("cap_slow", "EEG", 8, 500.0, "float32", "cap_slow")
    assert pull_capacity(slow, 0.1) == 100  # two pull intervals at the nominal rate


RESERVE_PROBE = r"""
import os, sys
from pathlib import Path
os.environ["LSLAPICFG"] = sys.argv[1]
from shared_utils.streams.lsl import setup_lsl
import pylsl

def hwm_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

setup_lsl(int(sys.argv[3]))  # what run_module does for --inlet-reserve-ms
name = sys.argv[2]
out = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EEG", 64, 200_000.0, "float32", name))
info = pylsl.resolve_byprop("name", name, timeout=5)[0]
before = hwm_mb()
inlet = pylsl.StreamInlet(info, max_buflen=1)
inlet.open_stream(timeout=5)
print(round(hwm_mb() - before, 1))
"""


def _inlet_growth_mb(cfg: Path | str, name: str, reserve_ms: int) -> float:
    r = subprocess.run(
        [sys.executable, "-c", RESERVE_PROBE, str(cfg), name, str(reserve_ms)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return float(r.stdout.split()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_inlet_reserve_is_bounded_unless_the_config_tunes_itself(
    tmp_path: Path, lsl_name: str
) -> None:
    # liblsl's default reserve is 5 s of samples: ~290 MB for 64 ch x 200 kHz; tuned to 200 ms
    cfg = Path(os.environ.get("LSLAPICFG", str(ROOT / "config" / "lsl_loopback.cfg")))
    grew_mb = _inlet_growth_mb(cfg, lsl_name, 200)
    assert grew_mb < 100, f"opening the inlet grew the peak RSS by {grew_mb} MB"
    # A config with its own [tuning] wins: 50 ms there, so asking for 3 s (~150 MB) changes nothing
    own = tmp_path / "own.cfg"
    own.write_text(f"{cfg.read_text()}\n[tuning]\nInletBufferReserveMs = 50\n")
    grew_mb = _inlet_growth_mb(own, f"{lsl_name}_own", 3000)
    assert grew_mb < 100, f"the config's own [tuning] was overridden: grew {grew_mb} MB"
