"""Decoder core without sockets: features, classifier, cross-validation, model file, controller."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.decoder import model_io
from services.decoder.classifier import (
    cross_validate,
    fit_lda,
    grouped_folds,
    ledoit_wolf_shrinkage,
)
from services.decoder.controller import ControlParams, HysteresisController
from services.decoder.features import (
    FeatureSettings,
    OnlineBandPower,
    design_bank,
    filter_offline,
    window_log_power,
)
from services.decoder.online import DecodePipeline, choose_positive, output_labels
from services.decoder.training import Recording, TrainingError, fit_recording, read_recording

SRATE = 500.0
SETTINGS = FeatureSettings([[4.0, 8.0], [8.0, 13.0], [13.0, 30.0]], 2, 1.0)


def synth_eeg(
    seed: int, dur_s: float = 60.0, srate: float = SRATE, n_ch: int = 8, period_s: float = 4.0
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Mockup-streamer-like EEG: noise + 50 Hz + 10 Hz alpha whose amplitude follows high/low.

    Returns (data float32 (n, ch), state name per sample, [(first sample, new state), ...]).
    """
    rng = np.random.default_rng(seed)
    n = int(dur_s * srate)
    t = np.arange(n) / srate
    seg = (t // period_s).astype(int)
    first = "high" if seed % 2 else "low"  # different recordings start in different states
    other = "low" if first == "high" else "high"
    state = np.where(seg % 2 == 0, first, other)
    amp = np.where(state == "high", 20.0, 2.5)[:, None] * rng.uniform(0.6, 1.0, n_ch)
    drift = np.cumsum(rng.standard_normal((n, n_ch)), axis=0) * 0.05
    data = (
        rng.standard_normal((n, n_ch)) * 5.0
        + drift
        + 8.0 * np.sin(2 * np.pi * 50.0 * t[:, None] + rng.uniform(0, 2 * np.pi, n_ch))
        + amp * np.sin(2 * np.pi * rng.uniform(9.5, 10.5) * t[:, None] + rng.uniform(0, 6, n_ch))
    )
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    return data.astype(np.float32), state, [(int(s), str(state[s])) for s in starts]


def as_recording(
    data: np.ndarray, switches: list[tuple[int, str]], t0: float = 1000.0
) -> Recording:
    """Wrap synthetic data as a Recording with markers at the first sample of each state."""
    times = t0 + np.arange(len(data)) / SRATE
    return Recording(
        data=data.astype(np.float64),
        times=times,
        srate=SRATE,
        channel_labels=[f"ch{i + 1}" for i in range(data.shape[1])],
        marker_times=np.array([times[s] for s, _ in switches]),
        marker_labels=[lab for _, lab in switches],
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[model_io.DecoderModel, dict]:
    data, _, switches = synth_eeg(seed=1)
    return fit_recording(as_recording(data, switches), SETTINGS)


# -- features -------------------------------------------------------------------------------
def test_design_bank_rejects_bands_above_nyquist() -> None:
    with pytest.raises(ValueError, match="Nyquist"):
        design_bank([[8, 300]], srate=500.0)
    assert design_bank([[8, 13]], srate=500.0, order=2).shape == (1, 2, 6)


@pytest.mark.parametrize("pattern", [[1], [1, 7, 30], [64, 3, 1], [700]])
def test_online_features_equal_offline_features(pattern: list[int]) -> None:
    """Whatever the chunking (per-sample path, sosfilt path, chunks larger than the window)."""
    data, _, _ = synth_eeg(seed=3, dur_s=6.0)
    sos = design_bank(SETTINGS.bands, SRATE, 2)
    n_window = 250
    offline = filter_offline(sos, data)
    online = OnlineBandPower(sos, data.shape[1], n_window)
    pos, i, checked = 0, 0, 0
    while pos < len(data):
        k = min(pattern[i % len(pattern)], len(data) - pos)
        online.push(data[pos : pos + k])
        pos, i = pos + k, i + 1
        if online.ready:
            expected = window_log_power(offline, np.array([pos]), n_window)[0]
            np.testing.assert_allclose(online.features(), expected, rtol=0, atol=1e-8)
            checked += 1
    assert checked > 0
    assert not OnlineBandPower(sos, 8, n_window).ready


def test_alpha_band_power_tracks_the_state() -> None:
    data, state, _ = synth_eeg(seed=5, dur_s=16.0)
    sos = design_bank(SETTINGS.bands, SRATE, 2)
    ends = np.array([3500, 5500])  # inside a "high"/"low" segment (windows 3..3.5 s after start)
    f = window_log_power(filter_offline(sos, data), ends, 250).reshape(2, 3, 8)
    high, low = (0, 1) if state[3000] == "high" else (1, 0)
    assert np.all(f[high, 1] - f[low, 1] > 2.0)  # alpha band, every channel


# -- classifier and cross-validation --------------------------------------------------------
def test_ledoit_wolf_shrinks_more_with_fewer_samples() -> None:
    rng = np.random.default_rng(0)
    mix = rng.normal(0, 1, (20, 20))  # a covariance far from a multiple of the identity
    few, many = rng.standard_normal((8, 20)) @ mix, rng.standard_normal((5000, 20)) @ mix
    assert 0.0 <= ledoit_wolf_shrinkage(many) < ledoit_wolf_shrinkage(few) <= 1.0


def test_lda_separates_classes_and_gives_probabilities() -> None:
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(0, 1, (100, 6)), rng.normal(0.8, 1, (100, 6))]
    y = ["a"] * 100 + ["b"] * 100
    model = fit_lda(x, y)
    proba = model.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert model.classes == ["a", "b"]
    assert np.mean(np.array(model.predict(x)) == np.array(y)) > 0.85


def test_folds_keep_segments_whole_and_classes_balanced() -> None:
    labels = [lab for g in range(10) for lab in ["x" if g % 2 else "y"] * 7]
    groups = [g for g in range(10) for _ in range(7)]
    folds = grouped_folds(labels, groups, 5)
    assert sorted(np.concatenate(folds).tolist()) == list(range(70))
    for test in folds:
        assert {labels[i] for i in test} == {"x", "y"}
    for g in range(10):
        assert sum(any(groups[i] == g for i in test) for test in folds) == 1


def test_grouped_cv_is_not_fooled_by_segment_offsets() -> None:
    """Features carry a per-segment offset but no class information: grouped CV must stay near
    chance, while CV that splits segments (each epoch its own group) is fooled by the offsets."""
    grouped, split = [], []
    groups = [g for g in range(20) for _ in range(10)]
    labels = ["x" if g % 2 else "y" for g in groups]
    for seed in range(10):
        rng = np.random.default_rng(seed)
        offsets = rng.normal(0, 3, (20, 4))
        feats = np.array([offsets[g] + rng.normal(0, 0.1, 4) for g in groups])
        grouped.append(cross_validate(feats, labels, groups, 5)[0])
        split.append(cross_validate(feats, labels, list(range(200)), 5)[0])
    assert np.mean(grouped) < 0.65
    assert np.mean(split) > np.mean(grouped) + 0.1


# -- training on recordings -----------------------------------------------------------------
def test_fit_reports_cv_accuracy_classes_and_epochs(fitted: tuple) -> None:
    _, report = fitted
    assert report["classes"] == ["high", "low"]
    assert report["cv_accuracy"] >= 0.9
    assert report["n_epochs"] == sum(report["epochs_per_class"].values()) >= 100
    assert report["folds"] == 5


def test_model_decodes_a_new_recording(fitted: tuple) -> None:
    """Fit on one recording, decode a second one (other seed, other start state) with the live
    pipeline at 10 predictions/s: >= 90% where the window lies within one state."""
    model, _ = fitted
    data, state, _ = synth_eeg(seed=2, dur_s=48.0)
    pipe = DecodePipeline(
        model, None, 500, 50, choose_positive(model, None), "proba", HysteresisController()
    )
    correct, total, correct_all, total_all = 0, 0, 0, 0
    for pos in range(0, len(data), 25):
        out = pipe.process(data[pos : pos + 25], pos / SRATE)
        if out is None:
            continue
        end = pos + 25
        guess = "high" if out[0] >= 0.5 else "low"
        total_all += 1
        correct_all += guess == state[end - 250]  # label: state at the window's centre
        if state[end - 500] == state[end - 1]:
            total += 1
            correct += guess == state[end - 1]
    assert total > 300
    assert correct / total >= 0.9
    assert correct_all / total_all >= 0.8


def test_fit_refuses_too_few_epochs_and_single_class() -> None:
    data, _, switches = synth_eeg(seed=1, dur_s=9.0)
    with pytest.raises(TrainingError, match="too few epochs|segments"):
        fit_recording(as_recording(data, switches), SETTINGS)
    with pytest.raises(TrainingError, match="two classes"):
        fit_recording(as_recording(data, switches[:1]), SETTINGS)
    with pytest.raises(TrainingError, match="unknown channel 'Cz'"):
        fit_recording(as_recording(data, switches), SETTINGS, channels=["Cz"])


def test_read_xdf_lists_streams_when_one_is_missing(tmp_path: Path) -> None:
    data, _, switches = synth_eeg(seed=4, dur_s=2.0)
    path = tmp_path / "rec.xdf"
    write_xdf(path, data, switches, "eeg_x")
    rec = read_recording(str(path), "eeg_x", "eeg_x_markers")
    assert rec.data.shape == data.shape
    assert rec.srate == SRATE
    assert rec.channel_labels == [f"C{i}" for i in range(8)]
    assert rec.marker_labels == [lab for _, lab in switches]
    with pytest.raises(
        TrainingError, match=r"unknown signal stream 'nope'.*valid: eeg_x, eeg_x_markers"
    ):
        read_recording(str(path), "nope", "eeg_x_markers")


def write_xdf(
    path: Path,
    data: np.ndarray,
    switches: list[tuple[int, str]],
    name: str,
    t0: float = 50.0,
    labelled: bool = True,
) -> None:
    """Write signal + marker streams with the project's native XDF writer (channels labelled
    C0..C7 unless ``labelled`` is false)."""
    from shared_utils.streams.xdf_writer import XdfWriter

    times = t0 + np.arange(len(data)) / SRATE
    header = {
        "name": name,
        "type": "EEG",
        "channel_count": data.shape[1],
        "nominal_srate": SRATE,
        "channel_format": "float32",
    }
    if labelled:
        header["channel_labels"] = [f"C{i}" for i in range(data.shape[1])]
    with XdfWriter(str(path)) as w:
        w.add_stream(1, header)
        w.add_stream(
            2,
            {
                "name": f"{name}_markers",
                "type": "Markers",
                "channel_count": 1,
                "nominal_srate": 0.0,
                "channel_format": "string",
            },
        )
        for sid in (1, 2):
            w.write_clock_offset(sid, collection_time=t0, offset_value=0.0)
        for i in range(0, len(data), 500):
            w.write_samples(1, times[i : i + 500], data[i : i + 500])
        w.write_samples(2, [times[s] for s, _ in switches], [[lab] for _, lab in switches])


# -- model file -----------------------------------------------------------------------------
def test_model_file_round_trip_is_exact_json(fitted: tuple, tmp_path: Path) -> None:
    model, _ = fitted
    path = model_io.save(model, tmp_path / "m.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "closedloop-decoder-model"
    assert doc["version"] == 1
    assert doc["channels"] == model.channels
    assert doc["srate"] == SRATE
    again = model_io.load(path)
    x = np.random.default_rng(0).normal(0, 1, (5, len(model.lda.mean))) + model.lda.mean
    np.testing.assert_array_equal(again.lda.predict_proba(x), model.lda.predict_proba(x))
    np.testing.assert_array_equal(again.sos, model.sos)


def test_model_file_rejects_other_versions_and_bad_shapes(fitted: tuple, tmp_path: Path) -> None:
    model, _ = fitted
    doc = model_io.to_dict(model)
    with pytest.raises(model_io.ModelFileError, match="version 99"):
        model_io.from_dict({**doc, "version": 99})
    bad = json.loads(json.dumps(doc))
    bad["classifier"]["weights"] = bad["classifier"]["weights"][:1]
    with pytest.raises(model_io.ModelFileError, match="weights"):
        model_io.from_dict(bad)
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(model_io.ModelFileError, match="JSON"):
        model_io.load(tmp_path / "junk.json")


# -- controller and output layout -----------------------------------------------------------
def test_hysteresis_switches_only_across_both_thresholds() -> None:
    c = HysteresisController(ControlParams(on_threshold=0.6, off_threshold=0.4))
    seq = [0.5, 0.65, 0.5, 0.45, 0.41, 0.35, 0.55, 0.59, 0.6]
    states = [c.update(v, i * 0.1)[0] for i, v in enumerate(seq)]
    assert states == [False, True, True, True, True, False, False, False, True]
    assert c.switches == 3


def test_smoothing_and_dwell_delay_switching() -> None:
    c = HysteresisController(ControlParams(0.6, 0.4, smoothing_s=0.5))
    times = np.arange(0, 3, 0.1)
    states = [c.update(1.0 if t >= 1.0 else 0.0, t)[0] for t in times]
    first_on = times[states.index(True)]
    assert 1.3 < first_on < 1.8  # 1 - exp(-dt/0.5) crosses 0.6 ~0.46 s after the step
    d = HysteresisController(ControlParams(0.6, 0.4, min_dwell_s=1.0))
    d.update(0.0, 0.0)
    assert d.update(0.9, 0.5) == (False, False)
    assert d.update(0.9, 1.0) == (True, True)
    assert d.update(0.1, 1.5) == (True, False)


def test_set_rejects_crossed_thresholds_and_keeps_old_ones() -> None:
    c = HysteresisController()
    with pytest.raises(ValueError, match="below on_threshold"):
        c.set(off_threshold=0.7)
    assert c.params.off_threshold == 0.4
    assert c.set(on_threshold=0.8, off_threshold=0.7).on_threshold == 0.8


def test_output_layout_puts_the_positive_class_first(fitted: tuple) -> None:
    model, _ = fitted
    assert choose_positive(model, None) == "high"
    assert output_labels(model, "high", "proba") == ["p_high", "p_low"]
    assert output_labels(model, "low", "control") == ["control", "p_low", "p_high"]
    with pytest.raises(ValueError, match=r"unknown positive_class 'medium'.*valid: high, low"):
        choose_positive(model, "medium")
    data, state, _ = synth_eeg(seed=7, dur_s=12.0)
    changes: list[bool] = []
    pipe = DecodePipeline(
        model, None, 500, 50, "low", "control", HysteresisController(), changes.append
    )
    outs = [(pos, pipe.process(data[pos : pos + 50], pos / SRATE)) for pos in range(0, 6000, 50)]
    outs = [(p + 50, o.copy()) for p, o in outs if o is not None]
    for end, o in outs:
        assert o[0] in (0.0, 1.0)
        assert abs(o[1] + o[2] - 1.0) < 1e-5
        if state[end - 500] == state[end - 1] == "low":
            assert o[1] > 0.5
    assert state[0] == "high"  # high 0-4 s, low 4-8 s, high 8-12 s
    assert changes == [True, False]  # on during "low", off again once "high" returns
    on = [end / SRATE for end, o in outs if o[0] == 1.0]
    assert 4.0 < min(on) < 5.5
    assert 8.0 < max(on) < 9.5
    assert pipe.predictions == len(outs)


def test_notify_config_is_validated() -> None:
    from services.decoder.notify import NotifyConfig

    cfg = NotifyConfig.parse({"port": "8105", "on": "SOFT_CODE", "on_kwargs": {"code": 1}})
    assert (cfg.host, cfg.port, cfg.on, cfg.off) == ("127.0.0.1", 8105, "SOFT_CODE", None)
    with pytest.raises(ValueError, match="'on' and/or 'off'"):
        NotifyConfig.parse({"port": 8105})
    with pytest.raises(ValueError, match="unknown field"):
        NotifyConfig.parse({"port": 8105, "on": "X", "cmd": "Y"})
    with pytest.raises(ValueError, match="port"):
        NotifyConfig.parse({"port": 70000, "on": "X"})


def test_pipeline_picks_model_channels_from_a_wider_reordered_input(fitted: tuple) -> None:
    """An input with extra channels in another order decodes exactly like the training layout."""
    model, _ = fitted
    data, _, _ = synth_eeg(seed=8, dur_s=3.0)
    wide = np.concatenate([data[:, ::-1], np.zeros((len(data), 2), np.float32)], axis=1)
    index = [7 - i for i in range(8)]  # model channel i sits in input column 7 - i
    plain = DecodePipeline(model, None, 500, 100, "high", "proba", HysteresisController())
    mapped = DecodePipeline(model, index, 500, 100, "high", "proba", HysteresisController())
    outs = []
    for pos in range(0, len(data), 100):
        a = plain.process(data[pos : pos + 100], pos)
        b = mapped.process(wide[pos : pos + 100], pos)
        assert (a is None) == (b is None)
        if a is not None:
            outs.append((a, b))
    assert len(outs) == 11
    for a, b in outs:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("on", "off"), [(5.0, 0.4), (0.6, -0.1)])
def test_thresholds_outside_probability_range_are_refused(on: float, off: float) -> None:
    """A threshold the probability can never cross would silently disable the controller."""
    with pytest.raises(ValueError, match="0 <= off_threshold < on_threshold <= 1"):
        ControlParams(on_threshold=on, off_threshold=off).validated()
