"""Issue 12 for the recorder, each test failing before its fix: names that try to leave the data
folder, sources that vanish (closed connection, frozen process), stable ``counts`` keys when a
source restarts, and a real full disk (a tmpfs in the recorder's own mount namespace)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, free_port, stop_process_group
from test_recorder import (
    RECORDER,
    client,
    counter_block,
    eeg_outlet,
    load_strict,
    recorded,
    wait_for,
)

from shared_utils.errors import CommandFailed

# A source in its own process: 2 channels at 100 Hz, channel 0 counts samples.
SOURCE = r"""
import sys, time
import pylsl
name, source_id = sys.argv[1], sys.argv[2]
out = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EEG", 2, 100.0, "float32", source_id))
print("READY", flush=True)
k, t0 = 0, time.monotonic()
while True:
    while k < int((time.monotonic() - t0) * 100):
        out.push_sample([k, -k])
        k += 1
    time.sleep(0.01)
"""


class Sources:
    """LSL sources as child processes (killed with their group at teardown)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, source_id: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", SOURCE, name, source_id],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        return proc

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)  # a stopped process must run to die of TERM
            stop_process_group(p)
            if p.stdout:
                p.stdout.close()


@pytest.fixture
def sources() -> Iterator[Sources]:
    s = Sources()
    yield s
    s.close()


@pytest.fixture
def recorder(module_process, tmp_path: Path) -> int:
    return module_process(RECORDER, "--data-dir", str(tmp_path / "data"))[1]


# -- item 3: every name stays inside the data folder ------------------------------------------------
def test_start_names_cannot_leave_the_data_folder(recorder: int, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with client(recorder) as c:
        for kwargs, message in [
            ({"file": "../../x.xdf"}, "leads outside the data folder"),
            ({"file": "sub/../../x.xdf"}, "leads outside the data folder"),
            ({"file": str(tmp_path / "x.xdf")}, "absolute paths outside the data folder"),
            ({"file": "/etc/x.xdf"}, "absolute paths outside the data folder"),
            ({"file": "sub-{subject}.xdf", "subject": "../../x"}, 'may not contain "/"'),
            ({"file": "{a}/{b}.xdf", "a": "..", "b": "x"}, 'may not contain "/"'),
            ({"file": "{a}.xdf", "a": "x\\..\\y"}, 'may not contain "/"'),
            ({"file": "{a}.xdf", "a": ["x"]}, "must be a string or a number"),
            ({"file": "x" * 2000 + ".xdf"}, "too long"),
            ({"file": "x" * 300 + ".xdf"}, "too long"),  # one component over NAME_MAX
        ]:
            with pytest.raises(CommandFailed, match=message):
                c.send("START", streams=["none"], **kwargs)
        assert c.send("STATUS")["recording"] is False
        # a resolved path sent back (a reply's "file") is inside the folder: accepted
        res = c.send("START", file=str(data / "sub-01" / "a.xdf"), streams=["none"])
        assert res["file"] == str(data / "sub-01" / "a.xdf")
        c.send("STOP")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing written outside


def test_absolute_paths_need_the_flag_and_rcs_roots_stay_inside(
    module_process, tmp_path: Path
) -> None:
    rcs_port = free_port()
    _, port = module_process(
        RECORDER, "--data-dir", str(tmp_path / "data"), "--rcs-port", str(rcs_port)
    )
    import socket

    with socket.create_connection(("127.0.0.1", rcs_port), timeout=10) as s, client(port) as c:
        for line in ("filename {root:../..} {template:x.xdf}", "start"):
            s.sendall(line.encode() + b"\n")
            assert s.recv(2) == b"OK"
        assert "leads outside the data folder" in c.send("STATUS")["rcs_last_error"]
        assert c.send("STATUS")["recording"] is False
    _, port = module_process(
        RECORDER, "--data-dir", str(tmp_path / "data"), "--allow-absolute-paths"
    )
    with client(port) as c:
        res = c.send("START", file=str(tmp_path / "abs" / "x.xdf"), streams=["none"])
        assert res["file"] == str(tmp_path / "abs" / "x.xdf")
        c.send("STOP")
    assert (tmp_path / "abs" / "x.xdf").is_file()


def test_a_template_cannot_ask_for_a_giant_name() -> None:
    """Format widths are expanded before the length check: ``{date:.<50000000}`` twice made the
    recorder allocate 100 MB for one START. Useful widths still work."""
    from services.recorder.paths import expand_template
    from shared_utils.errors import CommandError

    assert expand_template("rec_{run:03d}.xdf", {"run": 4}) == "rec_004.xdf"
    for bomb in ("{date:.<50000000}.xdf", "{run:>999}.xdf", "{run:{width}}.xdf"):
        with pytest.raises(CommandError, match="up to 64"):
            expand_template(bomb, {"run": 1, "width": 10**8})


def test_labrecorder_remote_control_runs_nothing_from_a_web_page(
    module_process, tmp_path: Path
) -> None:
    """The RCS port has no token: a browser's POST whose body says ``start`` must not record,
    an endless line must not grow the recorder, and binding beyond loopback needs --rcs-allow."""
    import socket

    data, rcs_port = tmp_path / "data", free_port()
    _, port = module_process(RECORDER, "--data-dir", str(data), "--rcs-port", str(rcs_port))
    post = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n\r\n"
        b"filename {template:pwned.xdf}\nstart\n"
    )
    with socket.create_connection(("127.0.0.1", rcs_port), timeout=10) as s:
        s.sendall(post)
        assert s.recv(64) == b""  # closed without an OK: nothing ran
    with socket.create_connection(("127.0.0.1", rcs_port), timeout=10) as s:
        try:
            for _ in range(40):  # 80 KiB without a newline
                s.sendall(b"x" * 2048)
            assert s.recv(64) == b""
        except ConnectionResetError:
            pass  # closed while we were still sending: also refused
    with client(port) as c:
        status = c.send("STATUS")
        assert status["recording"] is False
        assert status["rcs_last_error"] is None
    assert not list(data.rglob("*.xdf"))
    with socket.create_connection(("127.0.0.1", rcs_port), timeout=10) as s:  # still serving
        s.sendall(b"update\n")
        assert s.recv(2) == b"OK"
    proc = subprocess.run(
        [sys.executable, "-m", "services.recorder", "--port", "0", "--rcs-port", "0",
         "--rcs-host", "0.0.0.0", "--data-dir", str(data)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "--rcs-allow" in proc.stderr


# -- items 9 and 10: a source that vanishes, a source that restarts ----------------------------------
def test_a_killed_source_is_lost_at_once_and_the_rest_keeps_recording(
    recorder: int, sources: Sources, lsl_name: str
) -> None:
    """The source has a source_id, so liblsl would keep reconnecting to it forever; killed, it
    is reported lost at once and the other stream keeps recording."""
    name, keep_name = lsl_name, f"{lsl_name}_keep"
    src = sources.start(name, f"{name}-pid1")
    keep = eeg_outlet(keep_name, n_ch=1, srate=100.0)
    with client(recorder) as c:
        c.send("START", file="killed.xdf", streams=[name, keep_name])
        wait_for(lambda: c.send("STATUS")["counts"].get(name, 0) >= 50, "samples of the source")
        wait_for(lambda: keep.have_consumers(), "keep subscribed")
        os.killpg(src.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        st = wait_for(lambda: (s := c.send("STATUS"))["lost"] and s, "lost flag", timeout=10)
        lost_after = time.monotonic() - t_kill
        print(f"killed source reported lost after {lost_after:.3f} s")
        assert st["lost"] == [name]
        assert st["recording"] is True
        assert "vanished" in next(s["note"] for s in st["streams"] if s["name"] == name)
        keep.push_chunk(counter_block(0, 100, 1))
        wait_for(lambda: c.send("STATUS")["counts"][keep_name] == 100, "keep samples")
        stop = c.send("STOP")
    assert stop["lost"] == [name]
    assert stop["counts"][keep_name] == 100
    assert lost_after < 2.0
    raw = load_strict(Path(stop["file"]), dejitter_timestamps=False)
    got = raw[name]["time_series"][:, 0].astype(int)
    np.testing.assert_array_equal(got, np.arange(got[0], got[0] + len(got)))  # no holes
    assert len(got) == stop["counts"][name]


def test_a_restarted_source_is_a_new_stream_and_the_first_keeps_its_key(
    recorder: int, lsl_name: str
) -> None:
    """A source that comes back as a new outlet (a restarted program) is recorded as a second
    XDF stream with the same name; ``counts`` keeps ``name`` for the first and gives the second
    ``name#id``, so a macro waiting on ``counts.name`` never loses its key."""
    box = [eeg_outlet(lsl_name, n_ch=2, srate=100.0)]  # no source_id: not recoverable
    with client(recorder) as c:
        c.send("START", file="restart.xdf", streams=[lsl_name])
        wait_for(lambda: box[0].have_consumers(), "subscribe")
        box[0].push_chunk(counter_block(0, 30, 2))
        wait_for(lambda: c.send("STATUS")["counts"].get(lsl_name) == 30, "first samples")
        box.clear()  # the program ends ...
        wait_for(lambda: c.send("STATUS")["lost"] == [lsl_name], "lost flag")
        second = eeg_outlet(lsl_name, n_ch=2, srate=100.0)  # ... and starts again
        keys_seen: list[set[str]] = []

        def recorded_again() -> bool:
            counts = c.send("STATUS")["counts"]
            keys_seen.append(set(counts))
            return len(counts) == 2

        wait_for(recorded_again, "the restarted source in counts")
        wait_for(lambda: second.have_consumers(), "second subscribed")
        second.push_chunk(counter_block(100, 20, 2))
        key2 = next(k for k in c.send("STATUS")["counts"] if k != lsl_name)
        wait_for(lambda: c.send("STATUS")["counts"][key2] == 20, "second samples")
        stop = c.send("STOP")
    assert all(lsl_name in keys for keys in keys_seen), keys_seen
    assert key2.startswith(f"{lsl_name}#")
    assert stop["counts"] == {lsl_name: 30, key2: 20}
    assert stop["lost"] == [lsl_name]
    assert [s["key"] for s in stop["streams"]] == [lsl_name, key2]
    import pyxdf

    loaded, _ = pyxdf.load_xdf(stop["file"], synchronize_clocks=False, dejitter_timestamps=False)
    firsts = sorted(int(s["time_series"][0, 0]) for s in loaded if s["info"]["name"][0] == lsl_name)
    assert firsts == [0, 100]


def test_a_frozen_source_is_lost_within_seconds_and_comes_back(
    recorder: int, sources: Sources, lsl_name: str
) -> None:
    """SIGSTOP: the connection stays open but nothing arrives and LSL queries go unanswered.
    The recorder reports the stream lost once the resolver forgets it (3 s), and recorded
    again in the same XDF stream when the process resumes."""
    src = sources.start(lsl_name, f"{lsl_name}-frozen")
    with client(recorder) as c:
        c.send("START", file="frozen.xdf", streams=[lsl_name])
        wait_for(lambda: c.send("STATUS")["counts"].get(lsl_name, 0) >= 50, "samples")
        os.killpg(src.pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        wait_for(lambda: c.send("STATUS")["lost"] == [lsl_name], "lost flag", timeout=15)
        lost_after = time.monotonic() - t_stop
        print(f"frozen source reported lost after {lost_after:.3f} s")
        frozen_count = c.send("STATUS")["counts"][lsl_name]
        os.killpg(src.pid, signal.SIGCONT)
        st = wait_for(
            lambda: (
                (s := c.send("STATUS"))["lost"] == [] and s["counts"][lsl_name] > frozen_count and s
            ),
            "back",
        )
        stop = c.send("STOP")
    assert 1.0 < lost_after < 6.0
    assert list(st["counts"]) == [lsl_name]  # the same stream, the same key
    s = stop["streams"][0]
    assert s["losses"] == 1
    assert "back" in s["note"]
    assert s["lost"] is False
    raw = load_strict(Path(stop["file"]), dejitter_timestamps=False)[lsl_name]
    got = raw["time_series"][:, 0].astype(int)
    np.testing.assert_array_equal(got, np.arange(got[0], got[0] + len(got)))  # nothing skipped


# -- item 11: a real full disk -----------------------------------------------------------------------
# Runs in a new mount namespace (unshare -m): mounts a small tmpfs on the data folder, then
# becomes the recorder. The mount lives and dies with the recorder's namespace.
TMPFS_EXEC = r"""
import os, subprocess, sys
folder, size = sys.argv[1], sys.argv[2]
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder], check=True)
os.execv(sys.argv[3], sys.argv[3:])
"""


def _copy(path: Path, to: Path) -> Path:
    """A copy outside the namespace (pyxdf resolves /proc/PID/root/... back to this one's /)."""
    return Path(shutil.copy(path, to / path.name))


def _fill(folder: Path) -> Path:
    """Write until the file system is full; the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    return filler


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)
def test_full_disk_ends_the_recording_at_once_and_a_failed_start_leaves_no_file(
    module_process, tmp_path: Path, lsl_name: str
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    unshare = ("unshare", "--mount", "--propagation", "private")
    proc, port = module_process(
        RECORDER,
        "--data-dir",
        str(disk),
        wrap=(*unshare, sys.executable, "-c", TMPFS_EXEC, str(disk), "512k"),
    )
    seen = Path(f"/proc/{proc.pid}/root{disk}")  # the tmpfs, as the recorder sees it
    out = eeg_outlet(lsl_name, n_ch=16, srate=1000.0)
    with client(port) as c:
        c.send("START", file="full.xdf", streams=[lsl_name])
        wait_for(lambda: out.have_consumers(), "subscribe")
        pushed, states = 0, []
        while True:  # 512 kB hold ~7500 samples of 16 ch
            out.push_chunk(counter_block(pushed, 100, 16))
            pushed += 100
            st = c.send("STATUS")
            states.append((st["recording"], st.get("error")))
            if st.get("error") or not st["recording"]:
                break
            time.sleep(0.005)
            assert pushed < 100_000, "the write error never surfaced"
        for _ in range(20):  # and while the readers drain
            st = c.send("STATUS")
            states.append((st["recording"], st.get("error")))
        assert not [s for s in states if s[0] and s[1]], "recording: true after an error"
        assert "No space left" in st["error"]
        rep = c.send("STOP")
        kept = rep["counts"][lsl_name]
        assert kept > 0
        assert rep["error"] == st["error"]
        s = load_strict(_copy(seen / "full.xdf", tmp_path), dejitter_timestamps=False)[lsl_name]
        np.testing.assert_array_equal(s["time_series"], counter_block(0, kept, 16))

        filler = _fill(seen)
        with pytest.raises(CommandFailed, match="No space left"):
            c.send("START", file="next.xdf", streams=[lsl_name])
        assert not (seen / "next.xdf").exists()  # no empty file to block a retry
        assert c.send("STATUS")["recording"] is False
        filler.unlink()
        res = c.send("START", file="next.xdf", streams=[lsl_name])
        assert res["file"] == str(disk / "next.xdf")
        wait_for(lambda: recorded(c, lsl_name) is not None, "the stream in the new file")
        c.send("STOP")
        assert lsl_name in load_strict(_copy(seen / "next.xdf", tmp_path))
    assert list(disk.iterdir()) == []  # the tmpfs is only in the recorder's namespace
