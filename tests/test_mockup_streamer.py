"""Mockup streamer: signal ground truth (pure), then the real module over TCP and LSL."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import poll_until
from scipy.signal import welch

from services.mockup_streamer.synth import StateSchedule, SyntheticEEG
from shared_utils.client import ModuleClient
from shared_utils.errors import CommandFailed
from shared_utils.stream_watcher import StreamWatcher
from shared_utils.streams.xdf_writer import XdfWriter

MODULE = "services.mockup_streamer"


def log_alpha(x: np.ndarray, srate: float) -> np.ndarray:
    """Per-channel log mean power in 8-12 Hz."""
    f, p = welch(x, fs=srate, axis=0, nperseg=min(len(x), int(srate)))
    return np.log(p[(f >= 8) & (f <= 12)].mean(axis=0))


# --------------------------------------------------------------------------------- pure
def test_schedule_alternates_and_reports_switches():
    s = StateSchedule(srate=100.0, period_s=2.0)
    assert [s.state_at(k) for k in (0, 199, 200, 399, 400)] == [
        "high",
        "high",
        "low",
        "low",
        "high",
    ]
    assert s.switches(0, 601) == [(0, "high"), (200, "low"), (400, "high"), (600, "low")]
    assert s.switches(1, 200) == []
    assert s.next_switch(250) == 400


def test_random_schedule_is_seeded_and_bounded():
    a = StateSchedule(
        srate=100.0, random_durations=True, min_period_s=1.0, max_period_s=3.0, seed=7
    )
    b = StateSchedule(
        srate=100.0, random_durations=True, min_period_s=1.0, max_period_s=3.0, seed=7
    )
    sa, sb = a.switches(0, 10_000), b.switches(0, 10_000)
    assert sa == sb
    lengths = np.diff([k for k, _ in sa])
    assert lengths.min() >= 100
    assert lengths.max() <= 300
    assert len(set(lengths)) > 3
    assert [st for _, st in sa] == ["high", "low"] * (len(sa) // 2) + ["high"] * (len(sa) % 2)


def test_alpha_power_separates_states_on_every_channel():
    srate, n_ch = 250.0, 16
    synth = SyntheticEEG(n_ch, srate, StateSchedule(srate, period_s=2.0), seed=3)
    x = np.concatenate([synth.generate(k, 25) for k in range(0, 20 * 250, 25)])  # chunked
    high = [log_alpha(x[k + 25 : k + 475], srate) for k in range(0, len(x), 1000)]
    low = [log_alpha(x[k + 525 : k + 975], srate) for k in range(0, len(x), 1000)]
    worst_margin = np.min(high, axis=0) - np.max(low, axis=0)
    assert (worst_margin > 1.5).all(), f"states overlap on some channel: {worst_margin}"
    # Line noise is present at 50 Hz.
    f, p = welch(x[:, 0], fs=srate, nperseg=250)
    assert p[np.argmin(abs(f - 50))] > 10 * np.median(p)


def test_generation_is_phase_continuous_across_chunks():
    s1 = SyntheticEEG(2, 500.0, StateSchedule(500.0), seed=1, noise_uv=0, drift_uv=0)
    s2 = SyntheticEEG(2, 500.0, StateSchedule(500.0), seed=1, noise_uv=0, drift_uv=0)
    whole = s1.generate(0, 1000)
    parts = np.concatenate([s2.generate(k, 7) for k in range(0, 1001, 7)])[:1000]
    assert np.allclose(whole, parts, atol=1e-3)


# ------------------------------------------------------------------------------ module
@pytest.fixture
def streamer(module_process, tmp_path):
    _, port = module_process(MODULE, "--data-dir", str(tmp_path))
    with ModuleClient("127.0.0.1", port, timeout=10) as c:
        yield c


def test_stream_markers_and_states_match_the_contract(streamer, lsl_name):
    srate, period = 250.0, 0.6
    eeg = StreamWatcher(lsl_name, 20.0, background=True, timeout_s=10)
    mk = StreamWatcher(lsl_name + "_markers", background=True, timeout_s=10)
    res = streamer.send(
        "START", stream=lsl_name, channels=4, srate=srate, chunk=5, period_s=period,
        channel_names=["O1", "O2", "Pz", "Cz"],
    )  # fmt: skip
    assert res["marker_stream"] == lsl_name + "_markers"
    assert res["states"] == ["high", "low"]
    with eeg, mk:
        eeg.connect_to_stream()
        mk.connect_to_stream()
        assert eeg.stream.type() == "EEG"
        assert eeg.ch_names == ["O1", "O2", "Pz", "Cz"]
        assert eeg.buffer.dtype == np.float32
        assert mk.stream.type() == "Markers"
        assert mk.srate == 0.0
        assert mk.n_channels == 1
        assert poll_until(lambda: mk.total >= 5, 15)
        st = streamer.send("STATUS")["streams"][lsl_name]
        assert st["state"] in ("high", "low")
        assert st["markers"] >= 5
        data, ts = eeg.window(copy=True)
        labels, mts = mk.window(copy=True)
    labels = labels.ravel().tolist()
    assert set(labels) <= {"high", "low"}
    assert all(a != b for a, b in zip(labels, labels[1:], strict=False)), labels
    assert np.allclose(np.diff(mts), period, atol=1e-6)
    assert eeg.gaps == 0
    assert np.allclose(np.diff(ts), 1 / srate, atol=1e-7)
    # Each marker sits exactly on a sample timestamp (the first sample of the new state) ...
    for m in mts:
        if ts[0] <= m <= ts[-1]:
            assert np.min(np.abs(ts - m)) < 1e-6
    # ... and alpha power follows the announced state.
    powers = {"high": [], "low": []}
    for lab, m in zip(labels, mts, strict=False):
        sel = (ts >= m + 0.05) & (ts < m + period - 0.05)
        if sel.sum() > 100:
            powers[lab].append(log_alpha(data[sel], srate))
    assert powers["high"]
    assert powers["low"]
    assert (np.min(powers["high"], axis=0) > np.max(powers["low"], axis=0) + 1).all()


def test_pacing_tracks_rate_without_drift(streamer, lsl_name):
    srate, chunk = 1000.0, 20
    streamer.send("START", stream=lsl_name, channels=2, srate=srate, chunk=chunk, markers=False)
    with StreamWatcher(lsl_name, 10.0, background=True, timeout_s=10) as sw:
        sw.connect_to_stream()
        assert sw.wait_for_samples(500, 10)
        first = streamer.send("STATUS")["streams"][lsl_name]
        assert poll_until(lambda: sw.total >= 2500, 15)
        last = streamer.send("STATUS")["streams"][lsl_name]
        _, ts = sw.window(copy=True)
    for s in (first, last):
        # The count lags the ideal by less than one chunk plus scheduling slack (0.5 s: a loaded
        # 2-core CI machine), never more.
        assert -1 <= s["expected_samples"] - s["samples"] < chunk + 0.5 * srate, s
        assert s["samples"] % chunk == 0
    # No drift: the deficit does not grow between the two readings.
    assert (last["expected_samples"] - last["samples"]) - (
        first["expected_samples"] - first["samples"]
    ) < chunk + 0.5 * srate
    # Timestamps are the ideal schedule: exactly 1/srate apart.
    assert np.allclose(np.diff(ts), 1 / srate, atol=1e-7)
    assert sw.gaps == 0
    stopped = streamer.send("STOP", stream=lsl_name)["stopped"][lsl_name]
    assert stopped["running"] is False
    assert stopped["samples"] >= last["samples"]
    assert streamer.send("STATUS")["streams"] == {}


def test_several_streams_at_once_and_stop_one(streamer, lsl_name):
    a, b = lsl_name + "_a", lsl_name + "_b"
    streamer.send("START", stream=a, channels=1, srate=100.0)
    streamer.send("START", stream=b, channels=3, srate=200.0, random_durations=True, seed=4)
    assert set(streamer.send("STATUS")["streams"]) == {a, b}
    with pytest.raises(CommandFailed, match="already running"):
        streamer.send("START", stream=a)
    streamer.send("STOP", stream=a)
    assert set(streamer.send("STATUS")["streams"]) == {b}
    with pytest.raises(CommandFailed, match=f"not running.*{b}"):
        streamer.send("STOP", stream=a)
    assert b in streamer.send("STOP")["stopped"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"channels": 0}, "channels"),
        ({"srate": "fast"}, "srate"),
        ({"chunk": 0}, "chunk"),
        ({"channel_names": ["a", 3]}, "channel_names"),
        ({"alpha_freq": 300.0, "srate": 500.0}, "alpha_freq"),
        ({"line_freq": -1.0}, "line_freq"),
        ({"first_state": "medium"}, "first_state"),
        ({"chanels": 4}, "chanels"),
    ],
)
def test_bad_start_arguments_name_the_field(streamer, lsl_name, kwargs, field):
    with pytest.raises(CommandFailed) as ei:
        streamer.send("START", stream=lsl_name, **kwargs)
    assert field in ei.value.error
    assert streamer.send("STATUS")["streams"] == {}


def write_xdf(path, eeg_name: str, mk_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small XDF: 2-channel 100 Hz counter stream plus three markers."""
    ts = 1000.0 + np.arange(150) / 100.0
    data = np.stack([np.arange(150), -np.arange(150)], axis=1).astype(np.float32)
    mts = np.array([1000.2, 1000.7, 1001.3])
    with XdfWriter(path) as w:
        w.add_stream(
            1,
            {"name": eeg_name, "type": "EEG", "channel_count": 2, "nominal_srate": 100.0,
             "channel_format": "float32"},
        )  # fmt: skip
        w.add_stream(
            2,
            {"name": mk_name, "type": "Markers", "channel_count": 1, "nominal_srate": 0.0,
             "channel_format": "string"},
        )  # fmt: skip
        w.write_samples(1, ts, data)
        w.write_samples(2, mts, [["high"], ["low"], ["high"]])
    return ts, data, mts


def test_replay_xdf_at_original_timing(streamer, lsl_name, tmp_path):
    eeg_name, mk_name = lsl_name + "_eeg", lsl_name + "_mk"
    ts, data, mts = write_xdf(tmp_path / "rec.xdf", eeg_name, mk_name)
    with pytest.raises(CommandFailed, match="xdf"):
        streamer.send("REPLAY", xdf="missing.xdf")
    # A start delay lets the watchers connect before the first sample is due.
    res = streamer.send("START", xdf="rec.xdf", prefix="r_", delay_s=1.5)
    assert res["xdf"] == str(tmp_path / "rec.xdf")  # the resolved path
    assert set(res["streams"]) == {"r_" + eeg_name, "r_" + mk_name}
    eeg = StreamWatcher("r_" + eeg_name, 5.0, background=True, timeout_s=10)
    mk = StreamWatcher("r_" + mk_name, background=True, timeout_s=10)
    with eeg, mk:
        eeg.connect_to_stream()
        mk.connect_to_stream()
        assert eeg.total == 0, "connected too late for this test's premise"
        assert poll_until(
            lambda: all(s["done"] for s in streamer.send("STATUS")["streams"].values()), 10
        )
        assert poll_until(lambda: eeg.total >= len(data) and mk.total >= 3, 10)  # all arrived
        got, gts = eeg.window(copy=True)
        mlab, gmts = mk.window(copy=True)
    assert np.array_equal(got, data)
    shift = gts[0] - ts[0]  # replay clock minus file clock
    assert np.allclose(gts - shift, ts, atol=1e-6)
    assert mlab.ravel().tolist() == ["high", "low", "high"]
    assert np.allclose(gmts - shift, mts, atol=1e-6)
