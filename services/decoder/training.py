"""Calibration: read a recording, cut labelled epochs after markers, fit and cross-validate.

A marker opens a segment that lasts until the next marker (any label) or the end of the
recording; the segment is labelled with the marker string. Several windows are cut from each
segment (sliding by ``epoch_step_s``, starting ``tmin_s`` after the marker so that the transition
and the filters' settling are left out), because a 4 s state gives only one epoch otherwise.
Features come from the whole recording filtered causally from its first sample, exactly as the
live loop would see it.
"""

from __future__ import annotations

import math
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


#: Cross-validation keeps whole segments together, so each class needs this many segments.
MIN_SEGMENTS = 2


def calibration_needs(
    rec: Recording,
    counts: dict[str, int],
    segments: dict[str, int],
    window_s: float,
    tmin_s: float,
    step_s: float,
    min_epochs: int,
) -> str:
    """Why a calibration is too short, with what was found and what is needed.

    The rule (see :func:`make_epochs`): a segment gives ``floor((length - tmin_s - window_s) /
    step_s) + 1`` windows; each class needs at least ``MIN_SEGMENTS`` segments with a window and
    ``min_epochs`` windows in all. With the classes taking turns in segments of the median
    length, that fixes how long the recording must run after its first marker.
    """
    times = np.sort(rec.marker_times)
    t_end = float(rec.times[-1]) + 1.0 / rec.srate
    have_s = t_end - float(times[0]) if len(times) else 0.0
    lengths = np.diff(times)
    seg_s = float(np.median(lengths)) if len(lengths) else have_s
    found = ", ".join(
        f"{c}: {_plural(segments.get(c, 0), 'segment')} / {_plural(n, 'window')}"
        for c, n in counts.items()
    )
    present = sorted(set(rec.marker_labels))
    k = max(2, len(counts) if len(counts) >= 2 else len(present))
    first = tmin_s + window_s
    rule = (
        f"FIT needs at least two classes, each with {MIN_SEGMENTS} or more marked segments at "
        f"least tmin_s + window_s = {first:g} s long and {min_epochs} or more windows in all "
        f"(a segment of L s gives floor((L - {first:g}) / {step_s:g}) + 1 windows)"
    )
    situation = (
        f"found {found or 'no windows'} (marker labels: {present}; {len(times)} markers, "
        f"{have_s:.1f} s of signal from the first marker, segments about {seg_s:.1f} s long)"
    )
    per_seg = math.floor((seg_s - first) / step_s) + 1 if seg_s >= first else 0
    if per_seg <= 0:
        return (
            f"{rule}; {situation}: the segments are shorter than {first:g} s, so lower tmin_s "
            "or window_s, or make the states last longer"
        )
    need_segs = max(MIN_SEGMENTS, math.ceil(min_epochs / per_seg))
    last_windows = max(1, min_epochs - (need_segs - 1) * per_seg)
    need_s = ((need_segs - 1) * k + k - 1) * seg_s + first + (last_windows - 1) * step_s
    return (
        f"{rule}; {situation}. With {k} classes taking turns every {seg_s:.1f} s that is at "
        f"least {need_s:.1f} s of recording after the first marker: record "
        f"{max(0.0, need_s - have_s):.1f} s longer, or lower tmin_s / window_s"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


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
    segments = {
        c: len({g for g, lab in zip(groups, labels, strict=True) if lab == c}) for c in counts
    }
    enough = (
        len(set(labels)) >= 2
        and all(n >= min_epochs_per_class for n in counts.values())
        and min(segments.values()) >= MIN_SEGMENTS
    )
    if not enough:
        raise TrainingError(
            calibration_needs(
                rec, counts, segments, n_window / rec.srate, tmin_s, epoch_step_s,
                min_epochs_per_class,
            )
        )  # fmt: skip
    n_folds = min(folds, min(segments.values()))
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
