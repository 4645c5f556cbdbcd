"""Sessions across real modules (issue 14): mock EEG, recorder, Bpod emulator and PsychoPy
presenter, started and stopped by the control room. One session folder then holds the XDF (with
the experiment reference in its headers), the Bpod trials and state machines, the presenter's
last frame, the config as run, the session's log and a complete session.json; the export reads
that folder as it is."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyxdf
from conftest import free_port
from cr_helpers import cli, header

from control_room.config import load_config
from control_room.room import ControlRoom
from shared_utils.export.session import parse_wall
from shared_utils.platform.xvfb import display_or_xvfb

TODAY = _dt.date.today().isoformat()
SM = {"name": "reward_task", "states": [
    {"name": "Wait", "timer": 0.05, "transitions": {"Tup": "Reward"}},
    {"name": "Reward", "timer": 0.05, "transitions": {"Tup": "exit"}, "actions": {"Valve1": 1}},
]}  # fmt: skip
MESH = """
[modules.mockup_streamer]
module = "services.mockup_streamer"

[modules.recorder]
module = "services.recorder"

[modules.bpod]
module = "services.bpod"
args = ["--emulator", "--stream-name", "{bpod_stream}"]

[modules.presenter]
module = "services.presenter"
args = ["--size", "320x240", "--marker-stream", "{presenter_stream}"]
display = true
ready_timeout_s = 60
env = {{ LP_NUM_THREADS = "1" }}

[session]
project = "closedloop"

[macros.session_demo]
default_json = {{ subject = "mouse02" }}
[[macros.session_demo.steps]]
session_start = {{ subject = "$subject", procedures = ["Behavior training/tasks"] }}
[[macros.session_demo.steps]]
send = "control_room"
cmd = "SESSION_STATUS"
expect = {{ running = true }}
[[macros.session_demo.steps]]
session_stop = true
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlRoom, Path]]:
    """One control room with the real modules, shared by the tests here (PsychoPy is slow to
    start); each test uses its own subject."""
    tmp = tmp_path_factory.mktemp("sessions")
    tag = uuid.uuid4().hex[:8]
    display, xvfb = display_or_xvfb()
    cfg = tmp / "mesh.toml"
    extra = f'data_dir = "{tmp / "data"}"'
    body = MESH.format(bpod_stream=f"bpod_{tag}", presenter_stream=f"presenter_{tag}")
    cfg.write_text(header(tmp, f"markers_{tag}", port=free_port(), extra=extra) + body)
    room = ControlRoom(load_config(cfg))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DISPLAY", display)
            room.up()
        yield room, tmp / "data"
    finally:
        room.down()
        if xvfb is not None:
            xvfb.stop()


def _run_some_of_everything(room: ControlRoom, tag: str) -> None:
    """Mock EEG, three Bpod trials, a presenter text: what a short session records."""
    room.send("mockup_streamer", "START", {"stream": f"eeg_{tag}", "channels": 4, "srate": 100})
    room.send("presenter", "OPEN")
    room.send("presenter", "SHOW_TEXT", {"text": "session"})
    room.send("bpod", "LOAD", {"state_machine": SM})
    room.send("bpod", "RUN", {"trials": 3, "wait": True}, timeout=20)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        counts = room.send("recorder", "STATUS").get("counts", {})
        if counts.get(f"eeg_{tag}", 0) > 50:
            break
        time.sleep(0.2)
    room.send("mockup_streamer", "STOP")


def test_session_folder_holds_everything(mesh: tuple[ControlRoom, Path]) -> None:
    room, data = mesh
    started = room.sessions.start("mouse01", procedures=["Behavior training/tasks"])
    ref = f"{TODAY}_1_mouse01"
    assert started["exp_ref"] == ref
    assert started["status"] == "running"
    assert started["main_sync"] == "recorder"
    folder = data / "mouse01" / TODAY / "001"
    assert started["folder"] == str(folder)
    _run_some_of_everything(room, "a")
    ended = room.sessions.stop()
    assert ended["status"] == "ended", ended
    assert not ended["problems"]

    meta = json.loads((folder / "session.json").read_text())
    assert meta["exp_ref"] == ref
    assert meta["subject"] == "mouse01"
    assert meta["project"] == "closedloop"
    assert meta["procedures"] == ["Behavior training/tasks"]
    assert meta["main_sync"] == "recorder"
    assert meta["status"] == "ended"
    for key in ("start", "end"):
        assert parse_wall(meta[key]["wall"]) is not None, meta[key]
        assert isinstance(meta[key]["lsl"], float)
    assert meta["end"]["lsl"] - meta["start"]["lsl"] > 1.0
    here = socket.gethostname()  # every module runs here: one host, its offset measured twice
    for key in ("start", "end"):
        clock = meta["clocks"][key][here]
        assert clock["same_host"] is True, clock
        assert abs(clock["offset_ms"]) < 50, clock
        assert clock["uncertainty_ms"] >= 0, clock
    assert meta["clocks"]["end"][here]["samples"] > meta["clocks"]["start"][here]["samples"]
    assert (
        meta["config"]["sha256"]
        == hashlib.sha256((folder / "config.toml").read_bytes()).hexdigest()
    )
    assert set(meta["modules"]) == {"mockup_streamer", "recorder", "bpod", "presenter"}
    for name, m in meta["modules"].items():
        assert m["module"] == name, m
        assert all(m[k] for k in ("version", "host", "revision", "cleaned_up")), m
        assert (m["kind"], m["status"]) == ("module", "stopped"), m
    assert meta["modules"]["recorder"]["main_sync"] is True

    # Bpod: the session's trials and the hash of the state machine that ran them
    bpod = meta["modules"]["bpod"]
    trials = [json.loads(x) for x in (folder / bpod["files"][0]).read_text().splitlines()]
    assert [t["trial"] for t in trials] == [1, 2, 3]
    machines = json.loads((folder / "bpod" / "state_machines.json").read_text())
    (sm,) = bpod["steps"]["EXPEND"]["state_machines"]
    assert sm["name"] == "reward_task"
    text = json.dumps(machines[0]["definition"], sort_keys=True, separators=(",", ":"))
    assert sm["sha256"] == hashlib.sha256(text.encode()).hexdigest()

    # the presenter's last frame and statistics
    assert "presenter/last_frame.png" in meta["modules"]["presenter"]["files"]
    assert (folder / "presenter" / "last_frame.png").stat().st_size > 100

    # the XDF: every header names the session
    streams, head = pyxdf.load_xdf(str(folder / f"{ref}.xdf"))
    assert head["info"]["exp_ref"] == [ref]
    names = {s["info"]["name"][0]: s for s in streams}
    assert "eeg_a" in names
    assert len(names["eeg_a"]["time_series"]) > 50
    for s in streams:
        assert s["info"]["desc"][0]["session"][0]["exp_ref"] == [ref], s["info"]["name"]

    # the session's share of the central log, and the events on the LSL marker stream
    records = [json.loads(x) for x in (folder / "session_log.jsonl").read_text().splitlines()]
    assert {"recorder", "bpod", "control_room"} <= {r.get("module") for r in records}
    assert any(r.get("event") == "session step" for r in records)


def test_numbering_and_repeated_start(mesh: tuple[ControlRoom, Path]) -> None:
    """N counts the subject's sessions of the day; a repeated start changes nothing."""
    room, data = mesh
    first = room.sessions.start("mouse03")
    again = room.sessions.start("mouse03")
    assert again["repeat"] is True
    assert again["exp_ref"] == first["exp_ref"]
    with pytest.raises(RuntimeError, match=f"session {first['exp_ref']} is running; stop it"):
        room.sessions.start("rat01")
    room.sessions.stop()
    assert room.sessions.stop()["repeat"] is True
    second = room.sessions.start("mouse03")
    assert second["exp_ref"] == f"{TODAY}_2_mouse03"
    room.sessions.stop()
    other = room.sessions.start("rat01")
    assert other["exp_ref"] == f"{TODAY}_1_rat01"
    room.sessions.stop()
    xdfs = sorted(p.name for p in (data / "mouse03" / TODAY).glob("*/*.xdf"))
    assert xdfs == [f"{TODAY}_1_mouse03.xdf", f"{TODAY}_2_mouse03.xdf"]


def test_cli_and_macro(mesh: tuple[ControlRoom, Path]) -> None:
    """``control-room session start|status|stop`` and a macro's session steps."""
    room, data = mesh
    port = room.server.port
    res = cli("session", "start", "--subject", "mouse04", "--project", "p1", port=port)
    assert res.returncode == 0, res.stderr
    assert f"session {TODAY}_1_mouse04: running" in res.stdout
    assert str(data / "mouse04" / TODAY / "001") in res.stdout
    res = cli("session", "status", "--json", port=port)
    assert json.loads(res.stdout)["exp_ref"] == f"{TODAY}_1_mouse04"
    res = cli("session", "stop", port=port)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ended" in res.stdout
    res = cli("session", "stop", port=port)  # nothing running: the last session, said so
    assert "already so" in res.stdout

    report = room.run_macro("session_demo")
    assert report.ok
    meta = json.loads((data / "mouse02" / TODAY / "001" / "session.json").read_text())
    assert meta["status"] == "ended"
    assert meta["procedures"] == ["Behavior training/tasks"]


def test_export_reads_the_session_folder(mesh: tuple[ControlRoom, Path]) -> None:
    from shared_utils.export import export_session

    room, data = mesh
    room.sessions.start("mouse05")
    _run_some_of_everything(room, "b")
    room.sessions.stop()
    folder = data / "mouse05" / TODAY / "001"
    res = export_session(folder, "nwb")
    nwb = [Path(f) for f in res.files if str(f).endswith(".nwb")]
    assert nwb
    assert nwb[0].is_file()
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(nwb[0]), "r") as io:
        f = io.read()
        assert f.session_id == f"{TODAY}_1_mouse05"
        assert f.subject.subject_id == "mouse05"
        assert len(f.trials) == 3
