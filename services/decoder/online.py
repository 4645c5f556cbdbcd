"""The live decoding loop: LSL inlet -> features -> classifier -> controller -> LSL outlet.

Why its own blocking pull instead of a polling watcher: closed-loop latency is dominated by how
soon the loop notices a sample. ``pull_chunk(min_samples=1, timeout=...)`` wakes up as soon as
liblsl has one, writes into a preallocated buffer (``dest_obj``, no allocation), and the whole
pipeline after it costs tens of microseconds. A sleep-and-poll loop adds its sleep to every sample.

Output contract (also in docs/decoder.md): mode "proba" sends the probability of the positive class
on channel 0, then the other classes' probabilities in sorted class order; mode "control" sends
the controller's on/off value (1.0/0.0) on channel 0, the positive-class probability on channel 1,
then the other classes. Each output sample is stamped with the LSL timestamp (in this machine's
clock) of the newest input sample it used, so ``local_clock() - timestamp`` at any receiver is the
end-to-end latency from the source's push.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from services.decoder.controller import HysteresisController
from services.decoder.features import OnlineBandPower
from services.decoder.model_io import DecoderModel
from shared_utils.checks import unknown_message

MODES = ("proba", "control")


class LatencyStats:
    """Fixed-size ring of recent latencies; percentiles on demand (the loop never allocates)."""

    def __init__(self, size: int = 20000) -> None:
        self._buf = np.zeros(size)
        self.count = 0

    def add(self, value_s: float) -> None:
        """Record one latency in seconds."""
        self._buf[self.count % self._buf.size] = value_s
        self.count += 1

    def summary_ms(self) -> dict[str, float | int | None]:
        """n, p50, p95, p99 and max over the retained values, in milliseconds."""
        n = min(self.count, self._buf.size)
        if n == 0:
            return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
        v = self._buf[:n] * 1e3
        p50, p95, p99 = np.percentile(v, [50, 95, 99])
        return {
            "n": self.count,
            "p50": round(float(p50), 4),
            "p95": round(float(p95), 4),
            "p99": round(float(p99), 4),
            "max": round(float(v.max()), 4),
        }


def output_labels(model: DecoderModel, positive: str, mode: str) -> list[str]:
    """Channel labels of the output stream, in channel order."""
    probs = [f"p_{positive}"] + [f"p_{c}" for c in model.classes if c != positive]
    return (["control"] if mode == "control" else []) + probs


def choose_positive(model: DecoderModel, positive_class: str | None) -> str:
    """The class reported on the first probability channel ("high" if present, else the last)."""
    if positive_class is None:
        return "high" if "high" in model.classes else model.classes[-1]
    if positive_class not in model.classes:
        raise ValueError(unknown_message("positive_class", positive_class, model.classes))
    return positive_class


class DecodePipeline:
    """Socket-free core of the loop: samples in, an output vector out every ``step`` samples."""

    def __init__(
        self,
        model: DecoderModel,
        channel_index: list[int] | None,
        n_window: int,
        step: int,
        positive: str,
        mode: str,
        controller: HysteresisController,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(unknown_message("mode", mode, MODES))
        self.model = model
        self.index = channel_index  # None: input channels already in model order
        self.step = max(1, step)
        self.mode = mode
        self.controller = controller
        self.on_change = on_change
        self.bp = OnlineBandPower(model.sos, len(model.channels), n_window)
        pos = model.classes.index(positive)
        order = [pos] + [i for i in range(len(model.classes)) if i != pos]
        # Standardisation folded into the weights and rows put in output order, so a prediction
        # is one matrix-vector product and a softmax (same numbers as LdaModel.predict_proba).
        lda = model.lda
        w = lda.weights / lda.scale
        self._w = np.ascontiguousarray(w[order])
        self._b = (lda.intercepts - w @ lda.mean)[order]
        self._n_out = len(model.classes) + (1 if mode == "control" else 0)
        self._since = 0
        self.predictions = 0
        self.last: np.ndarray | None = None

    def process(self, chunk: np.ndarray, t: float) -> np.ndarray | None:
        """Feed samples (k, input channels) whose newest one has time ``t``; maybe predict."""
        self.bp.push(chunk if self.index is None else chunk[:, self.index])
        self._since += chunk.shape[0]
        if self._since < self.step or not self.bp.ready:
            return None
        self._since = 0
        s = self._w @ self.bp.features() + self._b
        e = np.exp(s - s.max())
        proba = e / e.sum()
        state, changed = self.controller.update(float(proba[0]), t)
        out = np.empty(self._n_out, dtype=np.float32)
        if self.mode == "control":
            out[0] = 1.0 if state else 0.0
            out[1:] = proba
        else:
            out[:] = proba
        if changed and self.on_change is not None:
            self.on_change(state)
        self.predictions += 1
        self.last = out
        return out


_DTYPES = {"float32": np.float32, "double64": np.float64, "int32": np.int32, "int16": np.int16}


class LiveLoop:
    """Owns the inlet, outlet and decoding thread for one START..STOP run."""

    def __init__(
        self, inlet: Any, outlet: Any, pipeline: DecodePipeline, fmt: str, log: Any
    ) -> None:
        import pylsl  # only the live path needs liblsl

        self._pylsl = pylsl
        self.inlet, self.outlet, self.pipeline, self.log = inlet, outlet, pipeline, log
        self.n_channels = inlet.channel_count
        self._max = 4096
        self._buf = np.zeros((self._max, self.n_channels), dtype=_DTYPES[fmt])
        self.latency = LatencyStats()
        self.compute = LatencyStats()
        self.samples = 0
        self.error: str | None = None
        self.offset = 0.0  # input clock -> our clock; 0 until the first estimate is in
        self.last_arrival: float | None = None  # local_clock() when the newest pull returned
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decoder-loop", daemon=True)
        self._clock = threading.Thread(target=self._sync_clock, name="decoder-clock", daemon=True)

    def start(self) -> None:
        """Start decoding (and the clock-offset warm-up, which blocks for ~0.6 s off the loop)."""
        self._clock.start()
        self._thread.start()

    def _sync_clock(self) -> None:
        while not self._stop.is_set():
            try:
                self.offset = self.inlet.time_correction(timeout=2.0)
            except Exception as e:  # a missing estimate only costs timestamp accuracy
                self.log.warning("time_correction failed", error=str(e))
            self._stop.wait(5.0)

    def _run(self) -> None:
        pull, clock = self.inlet.pull_chunk, self._pylsl.local_clock
        buf, process, push = self._buf, self.pipeline.process, self.outlet.push_sample
        try:
            while not self._stop.is_set():
                _, ts = pull(timeout=0.1, max_samples=self._max, dest_obj=buf, min_samples=1)
                n = len(ts)
                if n == 0:
                    continue
                t0 = clock()
                self.last_arrival = t0
                t = ts[-1] + self.offset
                out = process(buf[:n], t)
                self.samples += n
                if out is not None:
                    push(out.tolist(), t)  # a list converts ~3x faster than an array
                    now = clock()
                    self.latency.add(now - t)
                    self.compute.add(now - t0)
        except Exception as e:  # reported in STATUS, never kills the server
            self.error = f"{type(e).__name__}: {e}"
            self.log.exception("decoder loop failed")

    def clock(self) -> float:
        """The LSL clock (seconds), the time base of ``last_arrival`` and of the output stamps."""
        return self._pylsl.local_clock()

    @property
    def running(self) -> bool:
        """True while the decoding thread is alive."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and release the LSL objects."""
        self._stop.set()
        self._thread.join(timeout)
        self._clock.join(0.1)
        try:
            self.inlet.close_stream()
        except Exception:  # already closed or lost: nothing left to release
            pass
