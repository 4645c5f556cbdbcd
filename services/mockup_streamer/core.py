"""Mockup streamer commands: start/stop synthetic or replayed LSL streams, by stream name.

The methods are the module's command functions (their signatures are the public interface);
they validate meaning and the documented ranges (``RANGES``, docs/data-layer.md), while the
server base has already checked argument names and types. Each START and REPLAY is a task in the
server's table when the streamer is given the server's ``tasks``: STATUS lists it and
``STOP|{"task": id}`` stops exactly that stream (or replay).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.mockup_streamer.paced import SyntheticStream, make_synthetic
from services.mockup_streamer.replay import ReplayStream, make_replay, start_all
from services.mockup_streamer.shm_stream import check_transport, make_shm_synthetic
from services.mockup_streamer.synth import STATES, StateSchedule
from shared_utils.checks import Range, check_ranges, check_text, short, unknown_message
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger
from shared_utils.paths import data_dir as default_data_dir
from shared_utils.paths import resolve_in

if TYPE_CHECKING:
    from shared_utils.protocol.tasks import TaskManager

log = get_logger("mockup_streamer")

MAX_CHANNELS = 1024
MAX_SRATE = 100_000.0
MAX_CHUNK_VALUES = 2**24  # chunk x channels: one pushed chunk holds at most 64 MB of float32
#: The documented range of every numeric argument (docs/data-layer.md).
RANGES = {
    "channels": Range(1, MAX_CHANNELS),
    "srate": Range(0, MAX_SRATE, "Hz", open_lo=True),
    "chunk": Range(1, 100_000, "samples"),
    "period_s": Range(0, 3600, "s", open_lo=True),
    "min_period_s": Range(0, 3600, "s", open_lo=True),
    "max_period_s": Range(0, 3600, "s", open_lo=True),
    "seed": Range(0, 2**63 - 1),
    "alpha_freq": Range(0, 1000, "Hz", open_lo=True),
    "alpha_high_uv": Range(0, 1e6, "uV"),
    "alpha_low_uv": Range(0, 1e6, "uV"),
    "noise_uv": Range(0, 1e6, "uV"),
    "line_freq": Range(0, 1000, "Hz", open_lo=True),
    "line_uv": Range(0, 1e6, "uV"),
    "delay_s": Range(0, 60, "s"),
}
MAX_NAME = 200  # characters in a stream name, a channel name or a prefix


class MockupStreamer:
    """Owns every running stream; several may run at once as long as their names differ."""

    def __init__(
        self,
        tasks: TaskManager | None = None,
        data_dir: str | Path | None = None,
        allow_absolute: bool = False,
    ) -> None:
        """``tasks``: the server's task table; ``data_dir``: where REPLAY finds files."""
        self._lock = threading.Lock()
        self.streams: dict[str, SyntheticStream | ReplayStream] = {}
        self._tasks = tasks
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.allow_absolute = allow_absolute

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
        if prefix:  # used with xdf only, but a bad value is refused either way
            check_text("prefix", prefix, MAX_NAME)
        if xdf is not None:
            return self.replay(xdf=xdf, loop=loop, prefix=prefix, delay_s=delay_s)
        check_ranges(RANGES, **{k: v for k, v in locals().items() if k in RANGES})
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
        layout = {"channels": channels, "srate": srate, "chunk": chunk, "states": list(STATES)}
        return {
            **self._task(f"START {stream}", [stream], [s]),
            "stream": stream,
            "marker_stream": f"{stream}_markers" if markers else None,
            **layout,
            "line_noise": line_uv > 0,
            **{"transport": transport, "dtype": dtype, **(s.ring_info() if shm else {})},
        }

    def replay(
        self, xdf: str, loop: bool = False, prefix: str = "", delay_s: float = 0.0
    ) -> dict[str, Any]:
        """Replay every stream of an XDF file at its original timing (names get `prefix`)."""
        check_ranges(RANGES, delay_s=delay_s)
        if prefix:
            check_text("prefix", prefix, MAX_NAME)
        path = resolve_in(
            self.data_dir,
            xdf,
            what="xdf",
            suffixes=(".xdf", ".xdfz"),
            allow_absolute=self.allow_absolute,
            must_exist=True,
        )
        try:
            streams = make_replay(str(path), prefix, loop)
        except (OSError, ValueError) as exc:
            raise CommandError(f"xdf: cannot replay {str(path)!r}: {exc}") from exc
        for r in streams:
            check_text("stream name", r.name, MAX_NAME)
        with self._lock:
            self._claim([r.name for r in streams])
            start_all(streams, delay_s)
            for r in streams:
                self.streams[r.name] = r
        log.info("replaying", xdf=str(path), streams=[r.name for r in streams], loop=loop)
        return {
            **self._task(f"REPLAY {path.name}", [r.name for r in streams], streams),
            "xdf": str(path),
            "streams": {
                r.name: {"samples": len(r.offsets), "srate": r.spec.srate} for r in streams
            },
            "duration_s": round(streams[0].span, 4),
            "loop": loop,
        }

    def _task(self, name: str, names: list[str], streams: list[Any]) -> dict[str, Any]:
        """Register started ``streams`` as one task; ``{"task": id}`` for the reply."""
        if self._tasks is None:
            return {}
        task = self._tasks.start_job(
            name,
            lambda: self._stop_streams(names, streams),
            lambda: not any(s.running for s in streams),
        )
        return {"task": task.id}

    def _stop_streams(self, names: list[str], streams: list[Any]) -> None:
        """Stop these streams (their task was stopped); names reused since are left alone."""
        with self._lock:
            for n, s in zip(names, streams, strict=True):
                if self.streams.get(n) is s:
                    del self.streams[n]
        for s in streams:
            s.stop()
        log.info("stopped", streams=names)

    def stop(self, stream: str | None = None) -> dict[str, Any]:
        """Stop one stream by name, or all of them."""
        with self._lock:
            if stream is not None and stream not in self.streams:
                raise CommandError(
                    f"stream {short(stream)} is not running; running: {', '.join(sorted(self.streams)) or 'none'}"
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
    check_text("stream", stream, MAX_NAME)
    if channel_names is not None:
        if not channel_names or not all(isinstance(c, str) and c for c in channel_names):
            raise CommandError("channel_names: give a non-empty list of non-empty strings")
        if len(channel_names) > MAX_CHANNELS:
            raise CommandError(f"channel_names: {len(channel_names)} names, at most {MAX_CHANNELS}")
        for c in channel_names:
            check_text("channel_names", c, MAX_NAME)
        channels = len(channel_names)
    if not 1 <= channels <= MAX_CHANNELS:
        raise CommandError(f"channels must be 1..{MAX_CHANNELS}, got {channels}")
    if not 0 < srate <= MAX_SRATE:
        raise CommandError(f"srate must be > 0 and <= {MAX_SRATE:g} Hz, got {srate}")
    if not 1 <= chunk <= max(1.0, srate * 10):
        raise CommandError(
            f"chunk must be 1..{max(1, int(srate * 10))} samples (10 s), got {chunk}"
        )
    if chunk * channels > MAX_CHUNK_VALUES:
        raise CommandError(
            f"chunk: {chunk} samples x {channels} channels is over {MAX_CHUNK_VALUES} values; "
            "use a smaller chunk"
        )
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
