"""FEEDBACK's LSL side: find the decoder's stream off the frame loop, then read it each frame.

No PsychoPy here. Resolving a stream can block for seconds (and liblsl's own resolve timeout
can overrun by several seconds), so it runs in a thread and the frame loop enforces our
deadline by polling :meth:`Resolver.poll`.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FeedbackSource:
    """An open inlet plus the mapping of one channel onto 0..1."""

    stream: str
    channel: int
    vmin: float
    vmax: float
    inlet: Any
    display: Any = None  # what draws the value (child side)
    value: float = 0.0
    raw: float | None = None
    samples: int = 0
    id: int = 0  # set by the child when the feedback starts (its task follows it)

    def update(self) -> bool:
        """Read everything waiting; keep the newest sample. True when the value changed."""
        chunk, _ = self.inlet.pull_chunk(timeout=0.0)
        if not chunk:
            return False
        self.raw = float(chunk[-1][self.channel])
        self.samples += len(chunk)
        scaled = (self.raw - self.vmin) / (self.vmax - self.vmin)
        self.value = min(max(scaled, 0.0), 1.0)
        return True

    def close(self) -> None:
        try:
            self.inlet.close_stream()
        except Exception:
            pass

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stream": self.stream,
            "channel": self.channel,
            "value": self.value,
            "raw": self.raw,
            "samples": self.samples,
        }


@dataclass
class _Pending:
    stream: str
    channel: int
    vmin: float
    vmax: float
    display: Any
    deadline: float
    timeout: float


@dataclass
class Resolver:
    """Resolves streams for pending FEEDBACK requests in background threads."""

    _pending: dict[Any, _Pending] = field(default_factory=dict)
    _done: queue.Queue[tuple[Any, Any, str | None]] = field(default_factory=queue.Queue)

    def start(
        self,
        key: Any,
        stream: str,
        channel: int,
        vmin: float,
        vmax: float,
        timeout: float,
        display: Any = None,
    ) -> None:
        """Begin resolving ``stream``; the answer comes from :meth:`poll` under ``key``."""
        if vmax == vmin:
            raise ValueError("vmax must differ from vmin")
        if channel < 0:
            raise ValueError(f"channel must be >= 0, got {channel}")
        self._pending[key] = _Pending(
            stream, channel, vmin, vmax, display, time.monotonic() + timeout, timeout
        )
        threading.Thread(
            target=self._resolve,
            args=(key, stream, channel, timeout),
            name="feedback-resolve",
            daemon=True,
        ).start()

    def _resolve(self, key: Any, stream: str, channel: int, timeout: float) -> None:
        import pylsl

        from shared_utils.streams.lsl import find_named

        try:
            found = find_named(stream, timeout)
            if not found:
                raise ValueError(f"no LSL stream named {stream!r} found within {timeout} s")
            n = found[0].channel_count()
            if channel >= n:
                raise ValueError(
                    f"stream {stream!r} has {n} channel(s); channel {channel} does not exist"
                )
            inlet = pylsl.StreamInlet(found[0], max_buflen=2)
            inlet.open_stream(timeout=timeout)
            self._done.put((key, inlet, None))
        except Exception as exc:
            self._done.put((key, None, str(exc)))

    def poll(self) -> list[tuple[Any, FeedbackSource | None, str | None]]:
        """Finished requests as ``(key, source, None)`` or ``(key, None, error)``."""
        out: list[tuple[Any, FeedbackSource | None, str | None]] = []
        now = time.monotonic()
        for key, p in list(self._pending.items()):
            if now > p.deadline:
                del self._pending[key]
                out.append(
                    (key, None, f"no LSL stream named {p.stream!r} found within {p.timeout} s")
                )
        while True:
            try:
                key, inlet, err = self._done.get_nowait()
            except queue.Empty:
                return out
            p = self._pending.pop(key, None)
            if p is None:  # already answered (timed out): drop the late result
                if inlet is not None:
                    inlet.close_stream()
            elif err is not None:
                out.append((key, None, err))
            else:
                out.append(
                    (
                        key,
                        FeedbackSource(p.stream, p.channel, p.vmin, p.vmax, inlet, p.display),
                        None,
                    )
                )
