"""Tell another module over the protocol when the control value changes, off the decoding thread.

Why a queue and a thread: a module that is slow, restarting or gone must never delay a prediction.
The loop only does ``put_nowait``; a worker owns the ``ModuleClient`` connection, reconnects on the
next change after a failure, and counts what was sent, failed or dropped (a full queue) for STATUS.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from shared_utils.checks import unknown_message
from shared_utils.logging import get_logger

log = get_logger("decoder.notify")


@dataclass
class NotifyConfig:
    """Where to send what: ``on``/``off`` are command names, the kwargs go with them."""

    host: str
    port: int
    on: str | None = None
    off: str | None = None
    on_kwargs: dict[str, Any] = field(default_factory=dict)
    off_kwargs: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 2.0

    @classmethod
    def parse(cls, d: dict[str, Any]) -> NotifyConfig:
        """Validate a user-supplied dict; raises ValueError naming the bad field."""
        allowed = ["host", "port", "on", "off", "on_kwargs", "off_kwargs", "timeout_s"]
        unknown = [k for k in d if k not in allowed]
        if unknown:
            raise ValueError(f"notify: {unknown_message('field', unknown[0], allowed)}")
        port = d.get("port")
        if isinstance(port, str) and port.strip().isdigit():  # e.g. from a config substitution
            port = int(port)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"notify.port must be an integer port number, got {port!r}")
        if not d.get("on") and not d.get("off"):
            raise ValueError("notify needs a command name in 'on' and/or 'off'")
        for k in ("host", "on", "off"):
            v = d.get(k)
            if v is not None and (not isinstance(v, str) or len(v) > 256):
                raise ValueError(f"notify.{k} must be a string (at most 256 characters)")
        for k in ("on_kwargs", "off_kwargs"):
            if not isinstance(d.get(k, {}), dict):
                raise ValueError(f"notify.{k} must be an object")
        timeout = d.get("timeout_s", 2.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ValueError(f"notify.timeout_s must be a number of seconds, got {timeout!r}")
        if not 0 < timeout <= 60:
            raise ValueError(f"notify.timeout_s: use 0 < timeout_s <= 60 s, got {timeout}")
        return cls(
            host=str(d.get("host", "127.0.0.1")),
            port=port,
            on=d.get("on") or None,
            off=d.get("off") or None,
            on_kwargs=dict(d.get("on_kwargs", {})),
            off_kwargs=dict(d.get("off_kwargs", {})),
            timeout_s=float(timeout),
        )


class Notifier:
    """Background sender of on/off commands; ``__call__(state)`` never blocks."""

    def __init__(self, cfg: NotifyConfig, maxsize: int = 64) -> None:
        self.cfg = cfg
        self._q: queue.Queue[bool | None] = queue.Queue(maxsize)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="decoder-notify", daemon=True)
        self._thread.start()

    def __call__(self, state: bool) -> None:
        try:
            self._q.put_nowait(state)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        from shared_utils.protocol.client import ModuleClient

        client = ModuleClient(self.cfg.host, self.cfg.port, timeout=self.cfg.timeout_s)
        while True:
            state = self._q.get()
            if state is None:
                break
            cmd = self.cfg.on if state else self.cfg.off
            if not cmd:
                continue
            kwargs = self.cfg.on_kwargs if state else self.cfg.off_kwargs
            try:
                client.send(cmd, **kwargs)
                self.sent += 1
            except Exception as e:  # the target's problem must not become ours
                self.failed += 1
                self.last_error = f"{cmd}: {e}"
                log.warning("notify failed", cmd=cmd, error=str(e))
                client.close()
        client.close()

    def close(self, timeout: float = 1.0) -> None:
        """Let queued messages go out (up to ``timeout``), then end the worker."""
        try:
            self._q.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """Counters for STATUS."""
        return {
            "target": f"{self.cfg.host}:{self.cfg.port}",
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }
