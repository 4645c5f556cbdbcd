"""The decoder's two LSL endpoints: the input stream it decodes and the output it publishes.

START refuses an input the model cannot use before any decoding starts: a stream that is not
numeric, one at another sampling rate, or one without the model's channels (matched by label;
unlabelled channels are ``ch1..chN`` here as in training files, see
:func:`shared_utils.streams.lsl.channel_labels`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pylsl

from services.decoder.model_io import DecoderModel
from shared_utils.errors import CommandError
from shared_utils.streams.lsl import StreamNotFoundError, channel_labels, resolve

NUMERIC_FORMATS = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_int32: "int32",
    pylsl.cf_int16: "int16",
}


@dataclass
class LiveInput:
    """An open inlet, its sample format and where the model's channels sit (None: in order)."""

    inlet: pylsl.StreamInlet
    fmt_name: str
    index: list[int] | None


def open_input(
    name: str, model: DecoderModel, window_s: float | None, timeout_s: float
) -> LiveInput:
    """Resolve ``name``, check it against ``model`` and open an inlet sized to the window."""
    try:
        info = resolve(name, timeout_s=timeout_s)
    except StreamNotFoundError as e:
        raise CommandError(str(e)) from e
    fmt = info.channel_format()
    fmt_name = NUMERIC_FORMATS.get(fmt)
    if fmt_name is None:
        raise CommandError(f"input {name!r} is not a numeric stream (format code {fmt})")
    srate = info.nominal_srate()
    if abs(srate - model.srate) > 1e-6 * model.srate:
        raise CommandError(
            f"model was fitted at {model.srate:g} Hz but input {name!r} runs at "
            f"{srate:g} Hz; FIT on a recording at the input's rate"
        )
    # The inlet is sized to the window (liblsl reserves memory for max_buflen seconds);
    # only the full info it fetches carries the channel labels.
    buflen = max(2, int(np.ceil(4 * (window_s or model.features.window_s))))
    inlet = pylsl.StreamInlet(info, max_buflen=buflen, recover=True)
    try:
        inlet.open_stream(timeout=5.0)
        labels = channel_labels(inlet.info(timeout=5.0))
    except Exception as e:  # e.g. the source vanished between resolve and open
        raise CommandError(f"cannot open input {name!r}: {e}") from e
    missing = [c for c in model.channels if c not in labels]
    if missing:
        inlet.close_stream()
        raise CommandError(
            f"input {name!r} lacks the model's channels {missing}; it has {labels} "
            f"(model channels: {model.channels})"
        )
    index = [labels.index(c) for c in model.channels]
    return LiveInput(inlet, fmt_name, None if index == list(range(len(labels))) else index)


def make_outlet(
    name: str, labels: list[str], model: DecoderModel, positive: str, mode: str
) -> pylsl.StreamOutlet:
    """The output stream: one channel per output label, decoder settings in its description."""
    info = pylsl.StreamInfo(
        name,
        "Control",
        len(labels),
        pylsl.IRREGULAR_RATE,
        pylsl.cf_float32,
        f"decoder:{name}:{os.getpid()}",
    )
    chans = info.desc().append_child("channels")
    for lab in labels:
        ch = chans.append_child("channel")
        ch.append_child_value("label", lab)
        ch.append_child_value("unit", "probability" if lab.startswith("p_") else "on/off")
    meta = info.desc().append_child("decoder")
    meta.append_child_value("mode", mode)
    meta.append_child_value("positive_class", positive)
    meta.append_child_value("classes", ",".join(model.classes))
    return pylsl.StreamOutlet(info, chunk_size=1)
