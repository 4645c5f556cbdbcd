"""The decoder model and its file format: versioned JSON, no pickle.

Why JSON: a model file crosses machines, Python versions and possibly languages, and must never
execute code when loaded. Python's ``json`` writes floats with ``repr``, which round-trips float64
exactly, so a saved and reloaded model predicts bit-identically. ``docs/decoder.md`` documents
the fields.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.decoder.classifier import LdaModel
from services.decoder.features import FeatureSettings, design_bank

MODEL_FORMAT = "closedloop-decoder-model"
MODEL_VERSION = 1


class ModelFileError(ValueError):
    """The file is not a readable decoder model of a supported version."""


@dataclass
class DecoderModel:
    """Everything the live loop needs: which channels at which rate, how to featurise, weights."""

    srate: float
    channels: list[str]  # channels the model uses, in feature order
    source_channels: list[str]  # all channels of the training stream (index fallback)
    features: FeatureSettings
    lda: LdaModel
    sos: np.ndarray  # (bands, sections, 6), kept so other tools need not redesign the filters
    training: dict[str, Any] = field(default_factory=dict)  # provenance and CV results

    @property
    def classes(self) -> list[str]:
        """Class names in sorted order (the classifier's column order)."""
        return self.lda.classes

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly overview for replies and STATUS."""
        return {
            "classes": self.classes,
            "channels": self.channels,
            "srate": self.srate,
            "bands": self.features.bands,
            "window_s": self.features.window_s,
            "cv_accuracy": self.training.get("cv_accuracy"),
            "n_epochs": self.training.get("n_epochs"),
        }


def _arr(x: Any, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != len(shape) or any(
        s is not None and s != d for s, d in zip(shape, a.shape, strict=False)
    ):
        raise ModelFileError(f"field {name!r} has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise ModelFileError(f"field {name!r} contains non-finite values")
    return a


def to_dict(model: DecoderModel) -> dict[str, Any]:
    """Serialisable form of ``model`` (see docs/decoder.md)."""
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "srate": model.srate,
        "channels": model.channels,
        "source_channels": model.source_channels,
        "features": {
            "kind": "filterbank_log_bandpower",
            "bands": model.features.bands,
            "filter": "butterworth_bandpass_causal",
            "order": model.features.order,
            "window_s": model.features.window_s,
            "sos": model.sos.tolist(),
        },
        "classifier": {
            "kind": "shrinkage_lda",
            "classes": model.lda.classes,
            "mean": model.lda.mean.tolist(),
            "scale": model.lda.scale.tolist(),
            "weights": model.lda.weights.tolist(),
            "intercepts": model.lda.intercepts.tolist(),
            "shrinkage": model.lda.shrinkage,
        },
        "training": model.training,
    }


def from_dict(d: dict[str, Any]) -> DecoderModel:
    """Validate and rebuild a model; raises :class:`ModelFileError` with the reason."""
    if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"not a decoder model (expected format {MODEL_FORMAT!r})")
    if d.get("version") != MODEL_VERSION:
        raise ModelFileError(
            f"model file version {d.get('version')!r} is not supported (this decoder reads "
            f"version {MODEL_VERSION})"
        )
    try:
        f, c = d["features"], d["classifier"]
        srate = float(d["srate"])
        channels = [str(x) for x in d["channels"]]
        source_channels = [str(x) for x in d["source_channels"]]
        settings = FeatureSettings(
            bands=[[float(a), float(b)] for a, b in f["bands"]],
            order=int(f["order"]),
            window_s=float(f["window_s"]),
        )
        classes = [str(x) for x in c["classes"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"model file is missing or has a malformed field: {e}") from e
    n_b, n_ch, n_k = len(settings.bands), len(channels), len(classes)
    p = n_b * n_ch
    missing = [ch for ch in channels if ch not in source_channels]
    if missing or n_k < 2 or n_ch < 1:
        raise ModelFileError("model channels/classes are inconsistent")
    sos = _arr(f["sos"], "features.sos", (n_b, None, 6))
    expected = design_bank(settings.bands, srate, settings.order)
    if sos.shape != expected.shape:
        raise ModelFileError("features.sos does not match bands/order")
    lda = LdaModel(
        classes=classes,
        mean=_arr(c["mean"], "classifier.mean", (p,)),
        scale=_arr(c["scale"], "classifier.scale", (p,)),
        weights=_arr(c["weights"], "classifier.weights", (n_k, p)),
        intercepts=_arr(c["intercepts"], "classifier.intercepts", (n_k,)),
        shrinkage=float(c.get("shrinkage", 0.0)),
    )
    return DecoderModel(srate, channels, source_channels, settings, lda, sos, d.get("training", {}))


def save(model: DecoderModel, path: str | Path) -> Path:
    """Write the model atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(to_dict(model), fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | Path) -> DecoderModel:
    """Read and validate a model file."""
    path = Path(path).expanduser()
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"cannot read {path} as a JSON model file: {e}") from e
    return from_dict(d)
