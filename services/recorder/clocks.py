"""Clock offsets per recorded stream and per host, for STATUS, and the drift warning.

The recorder writes every offset it measures into the file (XDF ClockOffset chunks; pyxdf uses
them to map each stream onto the recorder's clock). This keeps the last one per stream in view
while recording, grouped by the host that publishes the stream, and warns when a host's offset
moves by more than :data:`DRIFT_LIMIT_MS` from the first value of the recording: LSL's correction
follows a drifting clock, but a jump that size means a clock was stepped (NTP, a VM pause) or a
host is overloaded, and the user should know while the session runs, not when analysing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DRIFT_LIMIT_MS = 1.0


@dataclass
class OffsetTrack:
    """Offsets of one stream during one recording (seconds, LSL's sign: add to its timestamps)."""

    first: float | None = None
    last: float | None = None
    max_drift: float = 0.0
    warned: bool = False

    def add(self, offset: float) -> float | None:
        """Record one offset; returns the drift (ms) the first time it exceeds the limit."""
        if self.first is None:
            self.first = offset
        self.last = offset
        drift = offset - self.first
        if abs(drift) > abs(self.max_drift):
            self.max_drift = drift
        if abs(drift) * 1000 > DRIFT_LIMIT_MS and not self.warned:
            self.warned = True
            return drift * 1000
        return None

    def summary(self) -> dict[str, Any]:
        ms = None if self.last is None else round(self.last * 1000, 4)
        drift = None if self.first is None else round((self.last - self.first) * 1000, 4)  # type: ignore[operator]
        return {
            "clock_offset_ms": ms,
            "clock_drift_ms": drift,
            "clock_max_drift_ms": round(self.max_drift * 1000, 4),
        }


def by_host(streams: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{host: {"offset_ms", "drift_ms", "streams"}}`` from the per-stream summaries: the
    latest offset of that host's streams and the largest drift any of them saw."""
    hosts: dict[str, dict[str, Any]] = {}
    for s in streams:
        if s.get("clock_offset_ms") is None:
            continue
        h = hosts.setdefault(
            s.get("hostname") or "?", {"offset_ms": None, "drift_ms": 0.0, "streams": []}
        )
        h["offset_ms"] = s["clock_offset_ms"]
        h["streams"].append(s["name"])
        if abs(s.get("clock_max_drift_ms") or 0.0) > abs(h["drift_ms"]):
            h["drift_ms"] = s["clock_max_drift_ms"]
    for h in hosts.values():
        if abs(h["drift_ms"]) > DRIFT_LIMIT_MS:
            h["warning"] = f"clock offset drifted {h['drift_ms']:+.3f} ms during the recording"
    return hosts
