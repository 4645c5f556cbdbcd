"""The two ways in: the recorder's EXPORT command (over the wire, on a file it recorded) and
``control-room export`` (a real CLI process), plus the end-of-run hook of ``control-room run``."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import helpers
import numpy as np
import pylsl
import pytest
from export_data import make_session

from shared_utils.client import ModuleClient
from shared_utils.errors import CommandFailed

pytest.importorskip("mne_bids")
pytest.importorskip("pynwb")

ROOT = Path(__file__).resolve().parent.parent
wait_for = partial(helpers.wait_for, every=0.05)


def test_recorder_exports_what_it_recorded(module_process, tmp_path: Path, lsl_name: str) -> None:
    _, port = module_process("services.recorder", "--data-dir", str(tmp_path))
    info = pylsl.StreamInfo(f"{lsl_name}_eeg", "EEG", 4, 250.0, "float32", lsl_name)
    chans = info.desc().append_child("channels")
    for lab in ("C3", "Cz", "C4", "Pz"):
        ch = chans.append_child("channel")
        ch.append_child_value("label", lab)
        ch.append_child_value("unit", "microvolts")
    eeg = pylsl.StreamOutlet(info)
    mk = pylsl.StreamOutlet(pylsl.StreamInfo(f"{lsl_name}_mk", "Markers", 1, 0, "string", ""))
    with ModuleClient("127.0.0.1", port, timeout=10, protocol="json") as c:
        names = [f"{lsl_name}_eeg", f"{lsl_name}_mk"]
        wait_for(lambda: set(names) <= {s["name"] for s in c.send("LIST")}, "LIST")
        c.send("START", file="live.xdf", streams=names)
        wait_for(lambda: eeg.have_consumers() and mk.have_consumers(), "recorder subscribed")
        with pytest.raises(CommandFailed, match="still being recorded"):
            c.send("EXPORT", file="live.xdf")
        t0 = pylsl.local_clock()
        data = np.arange(500 * 4, dtype=np.float32).reshape(500, 4)
        eeg.push_chunk(data, t0 + 499 / 250.0)
        mk.push_sample(["go"], t0 + 1.0)
        wait_for(lambda: c.send("STATUS")["counts"].get(names[0]) == 500, "samples recorded")
        wait_for(lambda: c.send("STATUS")["counts"].get(names[1]) == 1, "marker recorded")
        c.send("STOP")
        for bad, msg in [
            ({"file": "../elsewhere.xdf"}, "outside the data folder"),
            ({"out": "/tmp"}, "outside the data folder"),
            ({"to": "edf"}, '"to" must be'),
        ]:
            with pytest.raises(CommandFailed, match=msg):
                c.send("EXPORT", **bad)
        reply = c.send("EXPORT", task="rest", subject="S1")  # the last recording
        assert reply["outputs"] == {
            "bids": str(tmp_path / "live_bids"),
            "nwb": str(tmp_path / "live_nwb"),
        }
        st = wait_for(
            lambda: (s := c.send("STATUS")["export"])["state"] != "running" and s,
            "export finished",
            timeout=60,
        )
        assert st["state"] == "done", st
        with pytest.raises(CommandFailed, match="already exists"):
            c.send("EXPORT", to="nwb")
    nwb = next((tmp_path / "live_nwb").glob("*.nwb"))
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(nwb), "r") as io:
        f = io.read()
        np.testing.assert_array_equal(f.acquisition[names[0]].data[:], data)
        assert list(f.events[names[1]]["annotation"][:]) == ["go"]
    assert (tmp_path / "live_bids" / "sub-S1" / "eeg" / "sub-S1_task-rest_eeg.vhdr").exists()


def test_recorder_without_the_export_libraries_says_what_to_install(
    module_process, tmp_path: Path
) -> None:
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text("import sys\nsys.modules['pynwb'] = None\n")
    make_session(tmp_path / "s")
    _, port = module_process(
        "services.recorder", "--data-dir", str(tmp_path), env={"PYTHONPATH": str(block)}
    )
    with ModuleClient("127.0.0.1", port, timeout=10, protocol="json") as c:
        with pytest.raises(CommandFailed, match=r"needs pynwb.*closedloop-mesh\[export\]"):
            c.send("EXPORT", file="s", to="nwb")
        assert c.send("UP") is True


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "control_room", "export", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_control_room_export_cli(tmp_path: Path) -> None:
    make_session(tmp_path / "s")
    proc = cli(str(tmp_path / "s"), "--to", "nwb", "--json", "--subject-info", '{"sex": "M"}')
    assert proc.returncode == 0, proc.stderr
    (res,) = json.loads(proc.stdout)["results"]
    assert res["format"] == "nwb"
    assert Path(res["files"][0]).exists()
    again = cli(str(tmp_path / "s"), "--to", "nwb")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    bad = cli(str(tmp_path / "s"), "--to", "nwb", "--overwrite", "--subject-info", "[1]")
    assert bad.returncode == 2
    assert "JSON object" in bad.stderr


def test_end_of_run_hook_exports_both_and_prints_where(tmp_path: Path) -> None:
    from control_room.export_cmd import export_after_run

    xdf, _ = make_session(tmp_path / "s")
    lines: list[str] = []
    out = export_after_run(str(xdf), echo=lines.append)
    assert Path(out["bids"]).is_dir()
    assert Path(out["nwb"]).suffix == ".nwb"
    assert any(str(out["nwb"]) in line for line in lines)
    again = export_after_run(str(xdf), echo=lines.append)  # outputs exist: said, not raised
    assert "already exists" in again["error"]
