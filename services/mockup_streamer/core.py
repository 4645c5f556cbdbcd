"""Mockup streamer commands: start/stop synthetic or replayed LSL streams, by stream name.

The methods are the module's command functions (their signatures are the public interface);
they validate meaning, while the server base has already checked argument names and types.
"""

from __future__ import annotations

import threading
from typing import Any

from services.mockup_streamer.paced import SyntheticStream, make_synthetic
from services.mockup_streamer.replay import ReplayStream, make_replay, start_all
from services.mockup_streamer.shm_stream import check_transport, make_shm_synthetic
from services.mockup_streamer.synth import STATES, StateSchedule
from shared_utils.checks import unknown_message
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger

log = get_logger("mockup_streamer")

MAX_CHANNELS = 1024
MAX_SRATE = 100_000.0


class MockupStreamer:
    """Owns every running stream; several may run at once as long as their names differ."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.streams: dict[str, SyntheticStream | ReplayStream] = {}

    def _claim(self, names: list[str]) -> None:
        """Refuse names that are already being streamed (caller holds the lock)."""
        self._reap()
        taken = [n for n in names if n in self.streams]
        if taken:
            raise CommandError(
                f"stream {', '.join(taken)} is already running; STOP it first "
                f"(running: {', '.join(sorted(self.streams))})"
            )

    def _reap(self) -> None:
        """Forget replays that finished on their own."""
        for n in [n for n, s in self.streams.items() if not s.running]:
            self.streams.pop(n).stop()

    def start(
        self,
        stream: str = "mock_eeg",
        channels: int = 8,
        srate: float = 500.0,
        chunk: int = 10,
        channel_names: list | None = None,
        period_s: float = 4.0,
        random_durations: bool = False,
        min_period_s: float = 2.0,
        max_period_s: float = 6.0,
        first_state: str = "high",
        seed: int | None = None,
        markers: bool = True,
        alpha_freq: float = 10.0,
        alpha_high_uv: float = 20.0,
        alpha_low_uv: float = 2.5,
        noise_uv: float = 5.0,
        line_freq: float = 50.0,
        line_uv: float = 8.0,
        xdf: str | None = None,
        loop: bool = False,
        prefix: str = "",
        delay_s: float = 0.0,
        transport: str = "lsl",
        dtype: str = "float32",
        capacity_s: float = 1.0,
        lsl: str = "auto",
    ) -> dict[str, Any]:
        """Start a synthetic EEG stream (alpha high/low states + "<stream>_markers"), or replay `xdf`."""
        if xdf is not None:
            return self.replay(xdf=xdf, loop=loop, prefix=prefix, delay_s=delay_s)
        channels = _check_layout(stream, channels, srate, chunk, channel_names)
        check_transport(transport, dtype, capacity_s, lsl)
        sched = _schedule(
            srate, period_s, random_durations, min_period_s, max_period_s, first_state, seed
        )
        _check_frequencies(srate, alpha_freq, line_freq)
        if line_freq >= srate / 2:  # would alias: leave mains noise out at such low rates
            line_uv = 0.0
        with self._lock:
            names = [stream] + ([f"{stream}_markers"] if markers else [])
            self._claim(names)
            shm = (
                {"dtype": dtype, "capacity_s": capacity_s, "lsl": lsl} if transport == "shm" else {}
            )
            s = (make_shm_synthetic if shm else make_synthetic)(
                stream,
                channels,
                srate,
                chunk,
                channel_names,
                sched,
                markers,
                seed,
                alpha_freq=alpha_freq,
                alpha_high_uv=alpha_high_uv,
                alpha_low_uv=alpha_low_uv,
                noise_uv=noise_uv,
                line_freq=line_freq,
                line_uv=line_uv,
                **shm,
            )
            s.start()
            self.streams[stream] = s
        log.info("streaming", stream=stream, channels=channels, srate=srate, chunk=chunk)
        return {
            "stream": stream,
            "marker_stream": f"{stream}_markers" if markers else None,
            "channels": channels,
            "srate": srate,
            "chunk": chunk,
            "states": list(STATES),
            "line_noise": line_uv > 0,
            "transport": transport,
            "dtype": dtype,
            **(s.ring_info() if shm else {}),
        }

    def replay(
        self, xdf: str, loop: bool = False, prefix: str = "", delay_s: float = 0.0
    ) -> dict[str, Any]:
        """Replay every stream of an XDF file at its original timing (names get `prefix`)."""
        if not 0 <= delay_s <= 60:
            raise CommandError(f"delay_s must be 0..60 s, got {delay_s}")
        try:
            streams = make_replay(xdf, prefix, loop)
        except (OSError, ValueError) as exc:
            raise CommandError(f"xdf: cannot replay {xdf!r}: {exc}") from exc
        with self._lock:
            self._claim([r.name for r in streams])
            start_all(streams, delay_s)
            for r in streams:
                self.streams[r.name] = r
        log.info("replaying", xdf=xdf, streams=[r.name for r in streams], loop=loop)
        return {
            "xdf": xdf,
            "streams": {
                r.name: {"samples": len(r.offsets), "srate": r.spec.srate} for r in streams
            },
            "duration_s": round(streams[0].span, 4),
            "loop": loop,
        }

    def stop(self, stream: str | None = None) -> dict[str, Any]:
        """Stop one stream by name, or all of them."""
        with self._lock:
            if stream is not None and stream not in self.streams:
                raise CommandError(
                    f"stream {stream!r} is not running; running: {', '.join(sorted(self.streams)) or 'none'}"
                )
            names = [stream] if stream is not None else list(self.streams)
            stopped = {}
            for n in names:
                s = self.streams.pop(n)
                s.stop()
                stopped[n] = s.status()
        if stopped:
            log.info("stopped", streams=list(stopped))
        return {"stopped": stopped}

    def status(self) -> dict[str, Any]:
        """Per stream: samples pushed, rate achieved, current state (synthetic) or progress (replay)."""
        with self._lock:
            return {"streams": {n: s.status() for n, s in self.streams.items()}}

    def close(self) -> None:
        """Stop everything (module shutdown)."""
        self.stop()


def _check_layout(
    stream: str, channels: int, srate: float, chunk: int, channel_names: list | None
) -> int:
    """Stream name, channels, rate and chunk size; returns the channel count to use."""
    if not stream.strip():
        raise CommandError("stream: give a non-empty stream name")
    if channel_names is not None:
        if not channel_names or not all(isinstance(c, str) and c for c in channel_names):
            raise CommandError("channel_names: give a non-empty list of non-empty strings")
        channels = len(channel_names)
    if not 1 <= channels <= MAX_CHANNELS:
        raise CommandError(f"channels must be 1..{MAX_CHANNELS}, got {channels}")
    if not 0 < srate <= MAX_SRATE:
        raise CommandError(f"srate must be > 0 and <= {MAX_SRATE:g} Hz, got {srate}")
    if not 1 <= chunk <= srate * 10:
        raise CommandError(f"chunk must be 1..{int(srate * 10)} samples, got {chunk}")
    return channels


def _schedule(
    srate: float,
    period_s: float,
    random_durations: bool,
    min_period_s: float,
    max_period_s: float,
    first_state: str,
    seed: int | None,
) -> StateSchedule:
    """The high/low alpha schedule, once its durations and first state are valid."""
    if period_s * srate < 1 or min_period_s <= 0 or max_period_s < min_period_s:
        raise CommandError(
            "state durations: need period_s >= one sample and 0 < min_period_s <= max_period_s"
        )
    if first_state not in STATES:
        raise CommandError(unknown_message("first_state", first_state, STATES))
    return StateSchedule(
        srate,
        period_s=period_s,
        random_durations=random_durations,
        min_period_s=min_period_s,
        max_period_s=max_period_s,
        first=first_state,
        seed=seed,
    )


def _check_frequencies(srate: float, alpha_freq: float, line_freq: float) -> None:
    if not 0 < alpha_freq < srate / 2:
        raise CommandError(
            f"alpha_freq must be between 0 and srate/2 ({srate / 2:g}), got {alpha_freq}"
        )
    if line_freq <= 0:
        raise CommandError(f"line_freq must be > 0, got {line_freq}")
