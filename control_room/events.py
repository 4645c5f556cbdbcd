"""Where the control room tells the world what it does: ZeroMQ PUB, LSL markers, listeners.

Why two channels: the LSL marker stream puts every command on the same clock as the data, so the
XDF file alone says what was done when; the ZeroMQ PUB socket lets dashboards and scripts follow
status changes, commands and replies live without polling the control room.

PUB messages are two frames: topic (``status``, ``command``, ``reply``, ``callback``, ``macro``,
``control_room``) and a JSON object with at least ``topic`` and ``time`` (Unix seconds).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

Listener = Callable[[str, dict[str, Any]], None]


class EventBus:
    """Thread-safe publisher: a ZeroMQ PUB socket plus in-process listeners."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9021) -> None:
        import zmq

        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 200)
        self._sock.setsockopt(zmq.SNDHWM, 10_000)
        try:
            if port == 0:
                self.port = self._sock.bind_to_random_port(f"tcp://{host}")
            else:
                self._sock.bind(f"tcp://{host}:{port}")
                self.port = port
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise OSError(f"cannot bind ZeroMQ PUB on {host}:{port}: {exc}") from exc
        self.address = f"tcp://{host}:{self.port}"
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self.published = 0

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(topic, data)`` for every event (keep it quick: it runs on the caller's thread)."""
        self._listeners.append(fn)

    def publish(self, topic: str, **data: Any) -> None:
        msg = {"topic": topic, "time": time.time(), **data}
        body = json.dumps(msg, default=str).encode()
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.send_multipart([topic.encode(), body])
                    self.published += 1
                except Exception:
                    pass
        for fn in list(self._listeners):
            try:
                fn(topic, msg)
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None  # type: ignore[assignment]


class CommandMarkers:
    """An irregular string LSL stream with one JSON sample per command sent.

    Sample: ``{"module": ..., "cmd": ..., "kwargs": ..., "source": ...}``; the timestamp is the
    LSL clock when the command left, so it lines up with the recorded data.

    LSL delivers a sample only to inlets connected when it is pushed, and the first commands of
    a session (starting the recorder itself) go out before any recorder listens. Those markers are
    kept and pushed again, with their original timestamps, as soon as a consumer connects, so the
    recording holds the whole control history.
    """

    BACKLOG_MAX = 1000

    def __init__(self, name: str = "control_room_commands") -> None:
        import os

        import pylsl

        self.name = name
        info = pylsl.StreamInfo(
            name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, f"control_room-{os.getpid()}"
        )
        info.desc().append_child_value("producer", "control_room")
        self._outlet = pylsl.StreamOutlet(info)
        self._clock = pylsl.local_clock
        self._lock = threading.Lock()
        self._backlog: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self.pushed = 0
        self.replayed = 0
        self._watch = threading.Thread(target=self._flush_when_heard, name="markers", daemon=True)
        self._watch.start()

    def push(self, sample: dict[str, Any]) -> float:
        """Push one marker now; returns its LSL timestamp."""
        ts = self._clock()
        text = json.dumps(sample, default=str, separators=(",", ":"))
        with self._lock:
            if self._outlet is None:
                return ts
            self._flush_backlog_locked()
            if self._outlet.have_consumers() or len(self._backlog) >= self.BACKLOG_MAX:
                self._outlet.push_sample([text], ts)
            else:
                self._backlog.append((text, ts))  # nobody listens yet: sent when someone does
            self.pushed += 1
        return ts

    def _flush_backlog_locked(self) -> None:
        if self._backlog and self._outlet is not None and self._outlet.have_consumers():
            for text, ts in self._backlog:
                self._outlet.push_sample([text], ts)
            self.replayed += len(self._backlog)
            self._backlog.clear()

    def _flush_when_heard(self) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                self._flush_backlog_locked()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._outlet = None  # type: ignore[assignment]
