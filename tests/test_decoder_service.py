"""Decoder as a real module process: FIT on an XDF file, live decoding over LSL, bad input.

Everything is real: the module runs in its own process, training files are written with the
project's XDF writer and read with pyxdf, the input is a pylsl outlet in this process and the
predictions are read back through a pylsl inlet. Data is pushed faster than real time with
explicit timestamps, so a 48 s recording takes a few seconds; accuracy is judged per prediction
from its timestamp (the newest input sample it used).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pylsl
import pytest
from helpers import open_inlet
from test_decoder_core import SETTINGS, SRATE, as_recording, synth_eeg, write_xdf

from services.decoder import model_io
from services.decoder.training import fit_recording
from shared_utils.client import ModuleClient
from shared_utils.errors import CommandFailed

T0 = 2000.0  # stream time of the first pushed sample


def make_outlet(
    name: str, srate: float = SRATE, labels: list[str] | None = None
) -> pylsl.StreamOutlet:
    """An 8-channel float32 EEG outlet, labelled C0..C7 like the training file."""
    info = pylsl.StreamInfo(name, "EEG", 8, srate, pylsl.cf_float32, f"src_{name}")
    chans = info.desc().append_child("channels")
    for lab in labels or [f"C{i}" for i in range(8)]:
        chans.append_child("channel").append_child_value("label", lab)
    return pylsl.StreamOutlet(info)


def open_output(name: str) -> pylsl.StreamInlet:
    """Subscribe to the decoder's output stream."""
    return open_inlet(name)


def push_and_collect(
    outlet: pylsl.StreamOutlet, inlet: pylsl.StreamInlet, data: np.ndarray, chunk: int = 25
) -> tuple[np.ndarray, np.ndarray]:
    """Push ``data`` in chunks (stamped T0 + k/srate) while reading predictions back."""
    rows: list[list[float]] = []
    stamps: list[float] = []
    pushed = threading.Event()

    def reader() -> None:
        """Read until the output has been quiet for 1 s after the last push."""
        quiet_since = time.monotonic()
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            x, ts = inlet.pull_chunk(timeout=0.1)
            if ts:
                rows.extend(x)
                stamps.extend(ts)
                quiet_since = time.monotonic()
            elif pushed.is_set() and time.monotonic() - quiet_since > 1.0:
                return

    t = threading.Thread(target=reader)
    t.start()
    for pos in range(0, len(data), chunk):
        block = data[pos : pos + chunk]
        outlet.push_chunk(block, T0 + (pos + len(block) - 1) / SRATE)
        time.sleep(0.002)
    pushed.set()
    t.join()
    return np.asarray(rows), np.asarray(stamps)


def fit_file(tmp_path: Path, seed: int = 1, dur_s: float = 60.0, name: str = "eeg_train") -> Path:
    data, _, switches = synth_eeg(seed=seed, dur_s=dur_s)
    path = tmp_path / f"train_{seed}_{int(dur_s)}.xdf"
    write_xdf(path, data, switches, name)
    return path


def test_fit_save_load_and_decode_a_new_recording_live(
    module_process, lsl_name: str, tmp_path: Path
) -> None:
    _, port = module_process("services.decoder", "--data-dir", str(tmp_path))
    xdf = fit_file(tmp_path)
    with ModuleClient("127.0.0.1", port, timeout=20, protocol="json") as c:
        fit = c.send("FIT", xdf=str(xdf), signal="eeg_train", markers="eeg_train_markers")
        assert fit["classes"] == ["high", "low"]
        assert fit["cv_accuracy"] >= 0.9
        assert fit["n_epochs"] >= 100
        saved = c.send("SAVE", file=str(tmp_path / "model.json"))
        assert Path(saved["file"]).is_file()
        assert saved["version"] == 1
        loaded = c.send("LOAD", file=saved["file"])
        assert loaded["channels"] == [f"C{i}" for i in range(8)]
        assert loaded["srate"] == SRATE

        outlet = make_outlet(lsl_name)
        run = c.send("START", input=lsl_name, output=f"{lsl_name}_out", step_s=0.1)
        assert run["channels"] == ["p_high", "p_low"]
        assert run["positive_class"] == "high"
        inlet = open_output(f"{lsl_name}_out")
        assert inlet.info().channel_count() == 2
        data, state, _ = synth_eeg(seed=2, dur_s=48.0)  # new recording, starts in "low"
        rows, stamps = push_and_collect(outlet, inlet, data)
        status = c.send("STATUS")
        stopped = c.send("STOP")
        after = c.send("STATUS")

    assert len(rows) > 300
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-5)
    ends = np.round((stamps - T0) * SRATE).astype(int) + 1  # samples used by each prediction
    assert np.all(np.diff(ends) > 0)
    assert ends[0] >= 500
    clean = state[ends - 500] == state[ends - 1]
    guess = np.where(rows[:, 0] >= 0.5, "high", "low")
    accuracy = np.mean(guess[clean] == state[ends - 1][clean])
    assert accuracy >= 0.9, f"live accuracy on a new recording {accuracy:.3f}"

    assert status["running"] is True
    assert status["predictions"] == len(rows)
    assert status["model"]["source"] == saved["file"]
    assert status["latency_ms"]["n"] == len(rows)
    assert status["latency_ms"]["p50"] is not None
    assert status["compute_ms"]["p99"] < 50
    assert status["input_age_s"] >= 0
    assert after["running"] is False
    assert after["last_run"]["predictions"] == len(rows)
    assert stopped["stopped"] is True
    assert stopped["predictions"] == len(rows)


def test_bad_input_gets_clear_errors_and_the_module_keeps_running(
    module_process, lsl_name: str, tmp_path: Path
) -> None:
    _, port = module_process("services.decoder", "--data-dir", str(tmp_path))
    xdf = fit_file(tmp_path)
    short = fit_file(tmp_path, seed=3, dur_s=9.0)
    data, _, switches = synth_eeg(seed=1)
    model, _ = fit_recording(as_recording(data, switches), SETTINGS)  # channels ch1..ch8
    model_file = model_io.save(model, tmp_path / "m.json")

    def refused(c: ModuleClient, cmd: str, **kw: object) -> str:
        with pytest.raises(CommandFailed) as exc:
            c.send(cmd, **kw)
        return exc.value.error

    with ModuleClient("127.0.0.1", port, timeout=20, protocol="json") as c:
        assert "FIT or LOAD" in refused(c, "START", input=lsl_name)
        assert "FIT or LOAD" in refused(c, "SAVE", file=str(tmp_path / "x.json"))
        err = refused(c, "FIT", xdf=str(xdf), signal="eeg", markers="eeg_train_markers")
        assert "unknown signal stream 'eeg'" in err
        assert "valid: eeg_train, eeg_train_markers" in err
        err = refused(c, "FIT", xdf=str(xdf), signal="eeg_train", markers="triggers")
        assert "markers stream 'triggers'" in err
        assert "not found" in refused(c, "FIT", xdf=str(tmp_path / "none.xdf"))
        assert "[low_hz, high_hz]" in refused(c, "FIT", xdf=str(xdf), bands=[5, 9])
        assert "Nyquist" in refused(c, "FIT", xdf=str(xdf), signal="eeg_train", bands=[[8, 400]])
        err = refused(c, "FIT", xdf=str(short), signal="eeg_train")
        assert "too few epochs" in err or "segments" in err
        assert "not found" in refused(c, "LOAD", file=str(tmp_path / "missing.json"))
        (tmp_path / "bad.json").write_text('{"format": "closedloop-decoder-model", "version": 7}')
        assert "version 7" in refused(c, "LOAD", file=str(tmp_path / "bad.json"))

        c.send("LOAD", file=str(model_file))
        fast = make_outlet(f"{lsl_name}_1k", srate=1000.0, labels=[f"ch{i + 1}" for i in range(8)])
        err = refused(c, "START", input=f"{lsl_name}_1k", resolve_timeout_s=5.0)
        assert "500 Hz" in err
        assert "1000 Hz" in err
        other = make_outlet(f"{lsl_name}_ch", labels=[f"X{i}" for i in range(8)])
        err = refused(c, "START", input=f"{lsl_name}_ch")
        assert "lacks the model's channels" in err
        assert "X0" in err
        err = refused(c, "START", input=f"{lsl_name}_absent", resolve_timeout_s=0.5)
        assert f"{lsl_name}_absent" in err
        assert "positive_class" in refused(
            c, "START", input=f"{lsl_name}_ch", positive_class="medium"
        )
        assert "mode" in refused(c, "START", input=f"{lsl_name}_ch", mode="bang")
        assert "off_threshold" in refused(c, "SET", off_threshold=0.9)
        assert c.send("UP") is True
        status = c.send("STATUS")
        assert status["running"] is False
        assert status["model"]["channels"][0] == "ch1"
        del fast, other


def test_a_model_fitted_without_channel_labels_decodes_a_live_stream_without_labels(
    module_process, lsl_name: str, tmp_path: Path
) -> None:
    """Channels without labels are ch1..chN in XDF files and on live streams alike, so a model
    fitted on an unlabelled recording accepts the same unlabelled stream live."""
    _, port = module_process("services.decoder", "--data-dir", str(tmp_path))
    data, _, switches = synth_eeg(seed=1)
    xdf = tmp_path / "unlabelled.xdf"
    write_xdf(xdf, data, switches, "eeg_bare", labelled=False)
    info = pylsl.StreamInfo(lsl_name, "EEG", 8, SRATE, pylsl.cf_float32, f"src_{lsl_name}")
    outlet = pylsl.StreamOutlet(info)  # no <channels> in its description
    with ModuleClient("127.0.0.1", port, timeout=20, protocol="json") as c:
        fit = c.send("FIT", xdf=str(xdf), signal="eeg_bare", markers="eeg_bare_markers")
        run = c.send("START", input=lsl_name, output=f"{lsl_name}_out", step_s=0.1)
        status = c.send("STATUS")
        c.send("STOP")
    assert run["input"] == lsl_name
    assert status["running"] is True
    assert fit["channels"] == [f"ch{i + 1}" for i in range(8)]
    del outlet


def test_control_mode_notifies_another_module_and_set_changes_thresholds(
    module_process, lsl_name: str, tmp_path: Path
) -> None:
    from shared_utils.server import DefaultServer

    received: list[int] = []

    def soft_code(code: int) -> dict:
        """Record the code (stands in for the Bpod module's SOFT_CODE)."""
        received.append(code)
        return {"code": code}

    target = DefaultServer(0, name="bpod_like", pcommand_map={"SOFT_CODE": soft_code})
    target.start_in_thread()
    _, port = module_process("services.decoder", "--data-dir", str(tmp_path))
    xdf = fit_file(tmp_path)
    notify = {
        "host": "127.0.0.1",
        "port": target.port,
        "on": "SOFT_CODE",
        "on_kwargs": {"code": 1},
        "off": "SOFT_CODE",
        "off_kwargs": {"code": 0},
    }
    try:
        with ModuleClient("127.0.0.1", port, timeout=20, protocol="json") as c:
            c.send("FIT", xdf=str(xdf), signal="eeg_train", markers="eeg_train_markers")
            outlet = make_outlet(lsl_name)
            assert c.send("SET", on_threshold=0.65)["on_threshold"] == 0.65
            run = c.send(
                "START",
                input=lsl_name,
                output=f"{lsl_name}_ctl",
                step_s=0.1,
                mode="control",
                positive_class="low",
                notify=notify,
            )
            assert run["channels"] == ["control", "p_low", "p_high"]
            assert run["controller"]["on_threshold"] == 0.65  # SET before START carries over
            inlet = open_output(f"{lsl_name}_ctl")
            data, state, _ = synth_eeg(seed=2, dur_s=16.0)  # low, high, low, high
            rows, stamps = push_and_collect(outlet, inlet, data)
            deadline = time.monotonic() + 10
            while len(received) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            status = c.send("STATUS")
            new = c.send("SET", on_threshold=0.9, off_threshold=0.2, smoothing_s=0.3)
            after = c.send("STATUS")["controller"]
            c.send("STOP")
    finally:
        target.request_stop()

    assert set(np.unique(rows[:, 0])) == {0.0, 1.0}
    ends = np.round((stamps - T0) * SRATE).astype(int) + 1
    clean = state[ends - 500] == state[ends - 1]
    on = rows[:, 0] == 1.0
    assert np.mean(on[clean] == (state[ends - 1][clean] == "low")) >= 0.9
    switches = int(np.sum(np.diff(rows[:, 0]) != 0))
    assert received[:3] == [1, 0, 1]
    assert len(received) == switches + 1
    assert status["notify"]["sent"] == len(received)
    assert status["notify"]["failed"] == 0
    assert new == {
        "on_threshold": 0.9,
        "off_threshold": 0.2,
        "smoothing_s": 0.3,
        "min_dwell_s": 0.0,
    }
    assert after["on_threshold"] == 0.9
    assert after["off_threshold"] == 0.2


def record_xdf(path: Path, infos: dict[str, pylsl.StreamInfo], seconds: float) -> None:
    """Record the given streams into an XDF file with the project's writer (a mini recorder)."""
    from shared_utils.streams.xdf_writer import XdfWriter

    inlets = {}
    for name, info in infos.items():
        inlet = pylsl.StreamInlet(info, max_buflen=30)
        inlet.open_stream(timeout=5.0)
        inlets[name] = inlet
    with XdfWriter(str(path)) as w:
        for sid, inlet in enumerate(inlets.values(), start=1):
            w.add_stream(sid, inlet.info(timeout=5.0))
            w.write_clock_offset(sid, pylsl.local_clock(), 0.0)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for sid, inlet in enumerate(inlets.values(), start=1):
                x, ts = inlet.pull_chunk(timeout=0.0)
                if ts:
                    w.write_samples(sid, ts, x)
            time.sleep(0.02)
    for inlet in inlets.values():
        inlet.close_stream()


def test_fit_on_a_recording_of_the_mockup_streamer_then_decode_it_live(
    module_process, lsl_name: str, tmp_path: Path
) -> None:
    """The whole chain with the real mockup streamer (2 s states): record -> FIT -> live decode,
    scored against the live marker stream."""
    _, mock_port = module_process("services.mockup_streamer")
    _, dec_port = module_process("services.decoder", "--data-dir", str(tmp_path))
    with ModuleClient("127.0.0.1", mock_port, timeout=10, protocol="json") as mock:
        mock.send("START", stream=lsl_name, period_s=2.0, seed=11)
        infos = {}
        for name in (lsl_name, f"{lsl_name}_markers"):
            found = pylsl.resolve_byprop("name", name, minimum=1, timeout=5.0)
            assert found, f"mockup stream {name} not visible"
            infos[name] = found[0]
        xdf = tmp_path / "mock.xdf"
        record_xdf(xdf, infos, seconds=13.0)

        markers = pylsl.StreamInlet(infos[f"{lsl_name}_markers"], max_buflen=60)
        markers.open_stream(timeout=5.0)
        with ModuleClient("127.0.0.1", dec_port, timeout=20, protocol="json") as c:
            fit = c.send("FIT", xdf=str(xdf), signal=lsl_name, tmin_s=0.25)
            assert fit["classes"] == ["high", "low"]
            assert fit["cv_accuracy"] >= 0.9
            c.send("START", input=lsl_name, output=f"{lsl_name}_dec", step_s=0.1)
            out = open_output(f"{lsl_name}_dec")
            rows, stamps, m_labels, m_times = [], [], [], []
            end = time.monotonic() + 9.0
            while time.monotonic() < end:
                x, ts = out.pull_chunk(timeout=0.1)
                rows.extend(x)
                stamps.extend(ts)
                m, mts = markers.pull_chunk(timeout=0.0)
                m_labels.extend(v[0] for v in m)
                m_times.extend(mts)
            c.send("STOP")
        mock.send("STOP")

    assert len(m_times) >= 3
    assert len(rows) > 50
    rows_a, stamps_a, m_times_a = np.asarray(rows), np.asarray(stamps), np.asarray(m_times)
    # Score predictions made after the first live marker whose 1 s window lies in one state.
    seg = np.searchsorted(m_times_a, stamps_a, side="right") - 1
    seg_start = np.searchsorted(m_times_a, stamps_a - 1.0, side="right") - 1
    usable = (seg >= 0) & (seg == seg_start)
    truth = np.array([m_labels[i] for i in seg[usable]])
    guess = np.where(rows_a[usable, 0] >= 0.5, "high", "low")
    assert usable.sum() > 20
    assert np.mean(guess == truth) >= 0.9
