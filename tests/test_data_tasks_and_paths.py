"""Issue 18 for the data modules, each test failing before its fix: background work (mockup
streams and replays, recordings, exports, live decoding, watched streams) is in the server's task
table and ``STOP|{"task": id}`` stops exactly that; the decoder finds the recorder's file under the
same name in the one data folder and writes only .json models, never over a file unless told; a
short calibration is refused with what was found and how long it must be."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import helpers
import numpy as np
import pylsl
import pytest
from test_decoder_core import SETTINGS, as_recording, synth_eeg, write_xdf
from test_decoder_service import make_outlet
from test_mockup_streamer import write_xdf as write_replay_xdf

from services.decoder import model_io
from services.decoder.training import TrainingError, fit_recording
from shared_utils.client import ModuleClient
from shared_utils.errors import CommandFailed

wait_for = partial(helpers.wait_for, every=0.05)


def client(port: int) -> ModuleClient:
    return ModuleClient("127.0.0.1", port, timeout=20, protocol="json")


def task_names(c: ModuleClient) -> dict[int, str]:
    return {t["id"]: t["name"] for t in c.send("STATUS")["tasks"]}


# -- background work has a task id ------------------------------------------------------------------
def test_mockup_streams_and_replays_are_tasks_stopped_one_by_one(
    module_process, tmp_path: Path, lsl_name: str
) -> None:
    _, port = module_process("services.mockup_streamer", "--data-dir", str(tmp_path))
    a, b = f"{lsl_name}_a", f"{lsl_name}_b"
    write_replay_xdf(tmp_path / "rec.xdf", f"{lsl_name}_eeg", f"{lsl_name}_mk")
    with client(port) as c:
        ta = c.send("START", stream=a, channels=1, srate=100.0, markers=False)["task"]
        tb = c.send("START", stream=b, channels=1, srate=100.0)["task"]
        replay = c.send("REPLAY", xdf="rec.xdf", loop=True, prefix="r_")
        tr = replay["task"]
        assert task_names(c) == {ta: f"START {a}", tb: f"START {b}", tr: "REPLAY rec.xdf"}
        assert c.send("STOP", task=ta) == {"id": ta, "name": f"START {a}", "outcome": "stopped"}
        assert set(c.send("STATUS")["streams"]) == {b, f"r_{lsl_name}_eeg", f"r_{lsl_name}_mk"}
        c.send("STOP", task=tr)
        assert set(c.send("STATUS")["streams"]) == {b}
        assert task_names(c) == {tb: f"START {b}"}
        assert not pylsl.resolve_byprop("name", a, timeout=0.5)  # its outlet is gone
        # a named STOP stops that stream only; a bare STOP stops everything
        tc = c.send("START", stream=a, channels=1, srate=100.0, markers=False)["task"]
        c.send("STOP", stream=a)
        wait_for(lambda: set(task_names(c)) == {tb}, "the stopped stream's task to end")
        assert tc != tb
        assert set(c.send("STOP")["stopped"]) == {b}
        assert c.send("STATUS")["tasks"] == []


def test_recordings_and_exports_are_tasks(module_process, tmp_path: Path, lsl_name: str) -> None:
    pytest.importorskip("mne_bids")
    from export_data import make_session

    make_session(tmp_path / "s")
    _, port = module_process("services.recorder", "--data-dir", str(tmp_path))
    out = pylsl.StreamOutlet(pylsl.StreamInfo(lsl_name, "EEG", 1, 100.0, "float32", ""))
    with client(port) as c:
        rec = c.send("START", file="t.xdf", streams=[lsl_name])
        assert task_names(c) == {rec["task"]: "RECORD t.xdf"}
        wait_for(out.have_consumers, "subscribed")
        out.push_chunk([[float(i)] for i in range(20)])
        wait_for(lambda: c.send("STATUS")["counts"].get(lsl_name) == 20, "samples")
        assert c.send("STOP", task=rec["task"])["outcome"] == "stopped"
        st = c.send("STATUS")
        assert st["recording"] is False
        assert st["last_recording"]["counts"] == {lsl_name: 20}
        exp = c.send("EXPORT", file="s", to="nwb")
        assert task_names(c)[exp["task"]] == "EXPORT s"
        assert c.send("STOP", task=exp["task"])["name"] == "EXPORT s"
        done = wait_for(
            lambda: (s := c.send("STATUS")["export"])["state"] != "running" and s, "export end"
        )
        assert done["state"] == "cancelled"
        assert c.send("STATUS")["tasks"] == []
    assert not Path(exp["outputs"]["nwb"]).exists()


def test_live_decoding_and_watching_are_tasks(
    module_process, tmp_path: Path, lsl_name: str
) -> None:
    data, _, switches = synth_eeg(seed=1, dur_s=30.0)
    rec = as_recording(data, switches)
    rec.channel_labels = [f"C{i}" for i in range(8)]
    model_io.save(fit_recording(rec, SETTINGS)[0], tmp_path / "m.json")
    outlet = make_outlet(lsl_name)
    _, dec = module_process("services.decoder", "--data-dir", str(tmp_path))
    _, watch = module_process("services.stream_watcher")
    with client(dec) as c:
        assert c.send("LOAD", file="m.json")["file"] == str(tmp_path / "m.json")
        run = c.send("START", input=lsl_name, output=f"{lsl_name}_out")
        assert task_names(c) == {run["task"]: f"DECODE {lsl_name}"}
        c.send("STOP", task=run["task"])
        st = c.send("STATUS")
        assert st["running"] is False
        assert st["last_run"]["run"]["task"] == run["task"]
        assert st["tasks"] == []
    with client(watch) as c:
        w = c.send("WATCH", stream=lsl_name)
        assert task_names(c) == {w["task"]: f"WATCH {lsl_name}"}
        c.send("STOP", task=w["task"])
        assert c.send("STATUS")["watching"] == {}
    del outlet


# -- one data folder, files in it ---------------------------------------------------------------------
def test_the_decoder_reads_and_writes_only_in_the_data_folder(
    module_process, tmp_path: Path, lsl_name: str
) -> None:
    """The recorder and the decoder share --data-dir: FIT finds what the recorder wrote under
    the name START was given; SAVE writes .json models there, never over a file by default."""
    data = tmp_path / "data"
    _, rec_port = module_process("services.recorder", "--data-dir", str(data))
    _, dec_port = module_process("services.decoder", "--data-dir", str(data))
    eeg = pylsl.StreamInfo(lsl_name, "EEG", 2, 100.0, "float32", "")
    eeg_out = pylsl.StreamOutlet(eeg)
    mk = pylsl.StreamOutlet(pylsl.StreamInfo(f"{lsl_name}_markers", "Markers", 1, 0, "string", ""))
    with client(rec_port) as r:
        file = r.send(
            "START",
            file="cal/{subject}.xdf",
            subject="07",
            streams=[lsl_name, mk.get_info().name()],
        )["file"]
        wait_for(lambda: eeg_out.have_consumers() and mk.have_consumers(), "subscribed")
        t0 = pylsl.local_clock()
        mk.push_sample(["high"], t0)
        eeg_out.push_chunk(np.zeros((300, 2), dtype=np.float32), t0 + 2.99)
        mk.push_sample(["low"], t0 + 1.5)
        wait_for(lambda: r.send("STATUS")["counts"].get(lsl_name) == 300, "samples")
        r.send("STOP")
    assert file == str(data / "cal" / "07.xdf")
    with client(dec_port) as c:
        for name in ("cal/07.xdf", file):  # the relative name, or the recorder's reply
            with pytest.raises(CommandFailed) as err:
                c.send("FIT", xdf=name, signal=lsl_name)
            assert "FIT needs at least two classes" in err.value.error  # found and read
        for bad, message in [
            ("../elsewhere.xdf", "leads outside the data folder"),
            ("/etc/passwd", "absolute paths outside the data folder"),
            ("cal/../../x.xdf", "leads outside the data folder"),
            ("rec.txt", "must end with .xdf"),
            ("cal/70.xdf", "not found.*did you mean.*07.xdf"),
        ]:
            with pytest.raises(CommandFailed, match=message):
                c.send("FIT", xdf=bad)
        write_xdf(data / "train.xdf", *_train_data())
        fit = c.send("FIT", xdf="train.xdf", signal="eeg_train")
        assert fit["xdf"] == str(data / "train.xdf")
        for bad, message in [
            ("model.txt", "must end with .json"),
            ("../model.json", "leads outside the data folder"),
            (str(tmp_path / "model.json"), "absolute paths outside"),
            ("cal/07.xdf", "must end with .json"),
        ]:
            with pytest.raises(CommandFailed, match=message):
                c.send("SAVE", file=bad)
        saved = c.send("SAVE", file="models/m.json")
        assert saved["file"] == str(data / "models" / "m.json")
        assert saved["overwrote"] is False
        before = (data / "models" / "m.json").read_bytes()
        with pytest.raises(CommandFailed, match="already exists.*overwrite"):
            c.send("SAVE", file="models/m.json")
        assert c.send("SAVE", file="models/m.json", overwrite=True)["overwrote"] is True
        assert (data / "models" / "m.json").read_bytes() == before
        for bad in ("../m.json", "/etc/hostname", "models/../../m.json"):
            with pytest.raises(CommandFailed, match="outside"):
                c.send("LOAD", file=bad)
        assert c.send("LOAD", file="models/m.json")["file"] == saved["file"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def _train_data() -> tuple[np.ndarray, list[tuple[int, str]], str]:
    data, _, switches = synth_eeg(seed=1, dur_s=20.0)
    return data, switches, "eeg_train"


# -- how long a calibration must be -------------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "longer"), [(10.0, 3.5), (13.4, 0.1)])
def test_a_short_calibration_says_how_long_it_must_be(seconds: float, longer: float) -> None:
    """4 s states (the mockup's default), window 1 s after 0.5 s, step 0.25 s: each class needs
    2 segments of >= 1.5 s, so the 4th state must have run 1.5 s: 13.5 s after the first
    marker. 10 s (what the experiment macro once gave) is refused with the numbers."""
    data, _, switches = synth_eeg(seed=1, dur_s=seconds)
    with pytest.raises(TrainingError) as err:
        fit_recording(as_recording(data, switches), SETTINGS)
    msg = str(err.value)
    assert "at least 13.5 s of recording after the first marker" in msg
    assert f"record {longer:.1f} s longer" in msg
    assert "tmin_s + window_s = 1.5 s" in msg
    assert "low: 1 segment / 11 windows" in msg
    data, _, switches = synth_eeg(seed=1, dur_s=13.6)
    _, report = fit_recording(as_recording(data, switches), SETTINGS)  # just long enough
    assert report["folds"] == 2
