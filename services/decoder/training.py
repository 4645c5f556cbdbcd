"""Calibration: read a recording, cut labelled epochs after markers, fit and cross-validate.

A marker opens a segment that lasts until the next marker (any label) or the end of the
recording; the segment is labelled with the marker string. Several windows are cut from each
segment (sliding by ``epoch_step_s``, starting ``tmin_s`` after the marker so that the transition
and the filters' settling are left out), because a 4 s state gives only one epoch otherwise.
Features come from the whole recording filtered causally from its first sample, exactly as the
live loop would see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from services.decoder.classifier import cross_validate, fit_lda
from services.decoder.features import FeatureSettings, design_bank, filter_offline, window_log_power
from services.decoder.model_io import DecoderModel
from shared_utils.checks import unknown_message
from shared_utils.streams.lsl import default_channel_labels
from shared_utils.streams.xdf_reader import XdfReadError, find_stream, read_xdf


class TrainingError(ValueError):
    """Input that cannot produce a model; the message says what is wrong and what to do."""


@dataclass
class Recording:
    """One continuous signal stream and one marker stream, as numpy arrays."""

    data: np.ndarray  # (samples, channels)
    times: np.ndarray  # (samples,) seconds
    srate: float
    channel_labels: list[str]
    marker_times: np.ndarray  # (markers,)
    marker_labels: list[str]


def read_recording(path: str, signal: str, markers: str) -> Recording:
    """The two named streams of an XDF file, clocks synchronised (they are compared).

    Channels without labels are ``ch1..chN``, as live streams without labels are, so a model
    fitted on such a file runs on such a stream.
    """
    try:
        streams = read_xdf(path)
    except XdfReadError as e:
        raise TrainingError(str(e)) from e
    try:
        sig = find_stream(streams, signal, "signal")
        mrk = find_stream(streams, markers, "markers")
    except XdfReadError as e:
        raise TrainingError(f"{path}: {e}") from e
    data = np.asarray(sig.time_series)
    if not sig.numeric or data.ndim != 2 or data.shape[0] == 0 or data.dtype.kind not in "fiu":
        raise TrainingError(f"signal stream {signal!r} holds no numeric samples")
    if sig.srate <= 0:
        raise TrainingError(f"signal stream {signal!r} has no nominal sampling rate")
    labels = mrk.strings()
    if not labels:
        raise TrainingError(f"marker stream {markers!r} in {path} holds no markers")
    # Duplicate labels cannot pick channels: number them all, as for a stream without labels.
    unique = len(set(sig.labels)) == len(sig.labels)
    return Recording(
        data=data.astype(np.float64),
        times=sig.time_stamps,
        srate=sig.srate,
        channel_labels=sig.labels if unique else default_channel_labels(len(sig.labels)),
        marker_times=mrk.time_stamps,
        marker_labels=labels,
    )


def make_epochs(
    rec: Recording,
    n_window: int,
    tmin_s: float,
    epoch_step_s: float,
    classes: list[str] | None,
) -> tuple[np.ndarray, list[str], list[int]]:
    """Window end indices (exclusive), labels and segment ids for every epoch that fits."""
    order = np.argsort(rec.marker_times, kind="stable")
    m_times = rec.marker_times[order]
    m_labels = [rec.marker_labels[i] for i in order]
    t_end = rec.times[-1] + 1.0 / rec.srate
    step = max(1, round(epoch_step_s * rec.srate))
    ends: list[int] = []
    labels: list[str] = []
    groups: list[int] = []
    for i, (t0, lab) in enumerate(zip(m_times, m_labels, strict=True)):
        if classes is not None and lab not in classes:
            continue
        t1 = m_times[i + 1] if i + 1 < len(m_times) else t_end
        first = int(np.searchsorted(rec.times, t0 + tmin_s)) + n_window
        last = int(np.searchsorted(rec.times, t1))  # window must end before the next marker
        for e in range(first, last + 1, step):
            ends.append(e)
            labels.append(lab)
            groups.append(i)
    return np.asarray(ends, dtype=int), labels, groups


def fit_recording(
    rec: Recording,
    settings: FeatureSettings,
    channels: list[str] | None = None,
    classes: list[str] | None = None,
    tmin_s: float = 0.5,
    epoch_step_s: float = 0.25,
    folds: int = 5,
    shrinkage: float | None = None,
    min_epochs_per_class: int = 5,
) -> tuple[DecoderModel, dict[str, Any]]:
    """Fit a model on ``rec`` and return it with a report (cross-validated accuracy etc.)."""
    if channels:
        unknown = [c for c in channels if c not in rec.channel_labels]
        if unknown:
            raise TrainingError(unknown_message("channel", unknown[0], rec.channel_labels))
        idx = [rec.channel_labels.index(c) for c in channels]
    else:
        idx = list(range(len(rec.channel_labels)))
    use = [rec.channel_labels[i] for i in idx]
    try:
        sos = design_bank(settings.bands, rec.srate, settings.order)
    except ValueError as e:
        raise TrainingError(str(e)) from e
    n_window = settings.n_window(rec.srate)
    ends, labels, groups = make_epochs(rec, n_window, tmin_s, epoch_step_s, classes)
    counts = {c: labels.count(c) for c in sorted(set(labels) | set(classes or []))}
    present = sorted(set(rec.marker_labels))
    if len(set(labels)) < 2:
        raise TrainingError(
            f"need epochs of at least two classes, got {counts} (marker labels present: {present}); "
            "record longer, or lower window_s / tmin_s"
        )
    short = {c: n for c, n in counts.items() if n < min_epochs_per_class}
    if short:
        raise TrainingError(
            f"too few epochs: {counts}, need >= {min_epochs_per_class} per class; "
            "record longer, or lower window_s / epoch_step_s"
        )
    seg_per_class = min(
        len({g for g, lab in zip(groups, labels, strict=True) if lab == c}) for c in counts
    )
    n_folds = min(folds, seg_per_class)
    if n_folds < 2:
        raise TrainingError(
            "cross-validation needs at least 2 marked segments per class; record longer"
        )
    feats = window_log_power(filter_offline(sos, rec.data[:, idx]), ends, n_window)
    cv_acc, fold_accs = cross_validate(feats, labels, groups, n_folds, shrinkage)
    lda = fit_lda(feats, labels, shrinkage)
    report = {
        "cv_accuracy": round(cv_acc, 4),
        "fold_accuracies": [round(a, 4) for a in fold_accs],
        "folds": n_folds,
        "classes": lda.classes,
        "n_epochs": len(labels),
        "epochs_per_class": counts,
        "n_segments": len(set(groups)),
        "channels": use,
        "srate": rec.srate,
        "window_s": settings.window_s,
        "bands": settings.bands,
        "shrinkage": round(lda.shrinkage, 4),
    }
    model = DecoderModel(
        srate=rec.srate,
        channels=use,
        source_channels=list(rec.channel_labels),
        features=settings,
        lda=lda,
        sos=sos,
        training=dict(report),
    )
    return model, report
