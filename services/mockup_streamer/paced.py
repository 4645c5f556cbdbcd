"""Paced LSL outlets: synthetic EEG plus its state markers, on a drift-free schedule.

Why schedule against a fixed start time: sleeping "one chunk period" per loop accumulates every
oversleep, so the rate drifts low. Here sample ``k`` is due at ``t0 + k / srate`` on the LSL clock
(``local_clock`` is monotonic); each wake-up pushes every whole chunk that is due, so the count
tracks ``srate x elapsed`` to within one chunk however late a wake-up is, and each sample's
timestamp is exactly its due time.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pylsl

from services.mockup_streamer.synth import StateSchedule, SyntheticEEG
from shared_utils.logging import get_logger
from shared_utils.streams.lsl import default_channel_labels, describe_channels

log = get_logger("mockup_streamer")


def eeg_info(name: str, channels: list[str], srate: float, source_id: str) -> pylsl.StreamInfo:
    """Stream info with channel labels, types and units in the description."""
    info = pylsl.StreamInfo(name, "EEG", len(channels), srate, pylsl.cf_float32, source_id)
    describe_channels(info, channels, kind="EEG", unit="microvolts")
    info.desc().append_child_value("manufacturer", "closedloop-mesh mockup_streamer")
    return info


def marker_info(name: str, source_id: str) -> pylsl.StreamInfo:
    """One-channel irregular string stream carrying "high"/"low" at each state switch."""
    return pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, source_id)


class SyntheticStream:
    """One synthetic EEG outlet (+ marker outlet) pushed from its own thread until stopped.

    ``outlet``: anything with pylsl's ``push_chunk(data, timestamp)`` to push into instead of a
    new LSL outlet (a shared-memory ring: shm_stream.py).
    """

    min_wake_s = 0.0  # shortest sleep between wake-ups (a ring-backed stream batches its chunks)

    def __init__(
        self,
        name: str,
        channel_names: list[str],
        srate: float,
        chunk: int,
        synth: SyntheticEEG,
        markers: bool = True,
        outlet: Any = None,
    ) -> None:
        self.name = name
        self.srate = srate
        self.chunk = chunk
        self.synth = synth
        self.schedule: StateSchedule = synth.schedule
        self.outlet = outlet or pylsl.StreamOutlet(
            eeg_info(name, channel_names, srate, f"mockup-{name}-{os.getpid()}"), chunk_size=chunk
        )
        self.marker_outlet = (
            pylsl.StreamOutlet(
                marker_info(f"{name}_markers", f"mockup-{name}-markers-{os.getpid()}")
            )
            if markers
            else None
        )
        self.sent = 0
        self.markers_sent = 0
        self.t0: float | None = None
        self.stopped_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mock-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _push_due(self, now: float) -> None:
        assert self.t0 is not None
        due = int((now - self.t0) * self.srate)
        while due - self.sent >= self.chunk:
            k0, n = self.sent, self.chunk
            if self.marker_outlet is not None:
                for k, state in self.schedule.switches(k0, k0 + n):
                    self.marker_outlet.push_sample([state], self.t0 + k / self.srate)
                    self.markers_sent += 1
            data = self.synth.generate(k0, n)
            self.outlet.push_chunk(data, self.t0 + (k0 + n - 1) / self.srate)
            self.sent += n

    def _run(self) -> None:
        self.t0 = pylsl.local_clock()
        try:
            while not self._stop.is_set():
                self._push_due(pylsl.local_clock())
                next_due = self.t0 + (self.sent + self.chunk) / self.srate
                self._stop.wait(max(self.min_wake_s, next_due - pylsl.local_clock()))
        except Exception as exc:  # keep the module alive; STATUS shows the stream stopped
            log.error("streaming failed", stream=self.name, error=repr(exc))
        self.stopped_at = pylsl.local_clock()

    def stop(self) -> None:
        """Stop pushing and drop the outlets (consumers see the stream vanish)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self.outlet = None  # type: ignore[assignment]
        self.marker_outlet = None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        """Samples pushed, achieved rate and the current state."""
        now = pylsl.local_clock()
        end = self.stopped_at or now
        elapsed = 0.0 if self.t0 is None else end - self.t0
        k = max(0, self.sent - 1)
        return {
            "kind": "synthetic",
            "running": self.running,
            "srate": self.srate,
            "chunk": self.chunk,
            "channels": self.synth.n_channels,
            "samples": self.sent,
            "elapsed_s": round(elapsed, 4),
            "rate_achieved": round(self.sent / elapsed, 4) if elapsed > 0 else None,
            # Count lags the ideal by < one chunk at any moment; a growing deficit would be drift.
            "expected_samples": round(elapsed * self.srate, 1),
            "state": self.schedule.state_at(k),
            "next_switch_in_s": round((self.schedule.next_switch(k) - k) / self.srate, 4),
            "markers": self.markers_sent,
            "marker_stream": f"{self.name}_markers" if self.marker_outlet is not None else None,
        }


def make_synthetic(
    name: str,
    channels: int,
    srate: float,
    chunk: int,
    channel_names: list[str] | None,
    schedule: StateSchedule,
    markers: bool,
    seed: int | None,
    **signal: Any,
) -> SyntheticStream:
    """Build (not start) a synthetic stream; ``signal`` goes to :class:`SyntheticEEG`."""
    labels = list(channel_names) if channel_names else default_channel_labels(channels)
    synth = SyntheticEEG(len(labels), srate, schedule, seed=seed, **signal)
    return SyntheticStream(name, labels, srate, chunk, synth, markers)
