"""The decoder's two LSL endpoints: the input stream it decodes and the output it publishes.

The input may also be a same-host shared-memory ring (docs/shm-transport.md), read through
:class:`~shared_utils.streams.shm.inlet.RingInlet`, which the live loop pulls exactly like an LSL
inlet.

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
from shared_utils.checks import unknown_message
from shared_utils.errors import CommandError
from shared_utils.streams.lsl import (
    StreamNotFoundError,
    channel_labels,
    describe_channels,
    resolve,
)
from shared_utils.streams.shm import ShmError
from shared_utils.streams.shm.inlet import TRANSPORTS, RingInlet, open_ring_inlet, ring_inlet_for

NUMERIC_FORMATS = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_int32: "int32",
    pylsl.cf_int16: "int16",
}


@dataclass
class LiveInput:
    """An open inlet, its sample format and where the model's channels sit (None: in order)."""

    inlet: pylsl.StreamInlet | RingInlet
    fmt_name: str
    index: list[int] | None
    transport: str = "lsl"


def open_input(
    name: str,
    model: DecoderModel,
    window_s: float | None,
    timeout_s: float,
    transport: str = "auto",
) -> LiveInput:
    """Resolve ``name``, check it against ``model`` and open an inlet sized to the window.

    ``transport``: "auto" reads the same-host shared-memory ring behind the stream when there is
    one (at the ring's full rate), "lsl" never does, "shm" opens the ring of that name without LSL.
    """
    inlet, full = _open(name, model, window_s, timeout_s, transport)
    fmt = full.channel_format()
    fmt_name = NUMERIC_FORMATS.get(fmt)
    try:
        if fmt_name is None:
            raise CommandError(f"input {name!r} is not a numeric stream (format code {fmt})")
        srate = full.nominal_srate()
        if abs(srate - model.srate) > 1e-6 * model.srate:
            raise CommandError(
                f"model was fitted at {model.srate:g} Hz but input {name!r} runs at "
                f"{srate:g} Hz; FIT on a recording at the input's rate"
            )
        labels = channel_labels(full)
        missing = [c for c in model.channels if c not in labels]
        if missing:
            raise CommandError(
                f"input {name!r} lacks the model's channels {missing}; it has {labels} "
                f"(model channels: {model.channels})"
            )
    except CommandError:
        inlet.close_stream()
        raise
    index = [labels.index(c) for c in model.channels]
    return LiveInput(
        inlet,
        fmt_name,
        None if index == list(range(len(labels))) else index,
        getattr(inlet, "transport", "lsl"),
    )


def _open(
    name: str, model: DecoderModel, window_s: float | None, timeout_s: float, transport: str
) -> tuple[pylsl.StreamInlet | RingInlet, pylsl.StreamInfo]:
    """(inlet, full info): an LSL inlet, or the ring behind the stream (or named ``name``)."""
    if transport not in TRANSPORTS:
        raise CommandError(unknown_message("transport", transport, TRANSPORTS))
    if transport == "shm":
        try:
            ring = open_ring_inlet(name, timeout_s)
        except ShmError as e:
            raise CommandError(f"input {name!r}: {e}") from e
        return ring, ring.info()
    try:
        info = resolve(name, timeout_s=timeout_s)
    except StreamNotFoundError as e:
        raise CommandError(str(e)) from e
    # The inlet is sized to the window (liblsl reserves memory for max_buflen seconds);
    # only the full info it fetches carries the channel labels (and the ring, if any).
    buflen = max(2, int(np.ceil(4 * (window_s or model.features.window_s))))
    inlet = pylsl.StreamInlet(info, max_buflen=buflen, recover=True)
    try:
        full = inlet.info(timeout=5.0)
        ring = ring_inlet_for(full, transport)
        if ring is not None:
            inlet.close_stream()
            return ring, ring.info()
        inlet.open_stream(timeout=5.0)
    except Exception as e:  # e.g. the source vanished between resolve and open
        raise CommandError(f"cannot open input {name!r}: {e}") from e
    return inlet, full


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
    describe_channels(
        info, labels, unit=lambda lab: "probability" if lab.startswith("p_") else "on/off"
    )
    meta = info.desc().append_child("decoder")
    meta.append_child_value("mode", mode)
    meta.append_child_value("positive_class", positive)
    meta.append_child_value("classes", ",".join(model.classes))
    return pylsl.StreamOutlet(info, chunk_size=1)
