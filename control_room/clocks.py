"""Clock offsets between this PC and each module's host, measured over the command connection.

Why not trust the hosts' clocks: LSL stamps samples with each host's own monotonic clock, and the
recorder maps them with LSL's time correction. This monitor measures the same quantity from the
control room's side, for every host that runs a module of ours, whether or not it has a stream:
each round sends ``STATUS`` a few times; the reply carries the module's ``lsl_clock``, read just
before it was sent. With ``t0``/``t1`` the control room's LSL clock around the exchange, the
offset is ``(t0 + t1) / 2 - lsl_clock`` (the value to add to that host's timestamps, LSL's sign),
known to within half the round trip; the probe with the shortest round trip wins, as in NTP.

A host whose offset moves by more than ``drift_limit_ms`` from its reference (the first
measurement, or the one after :meth:`ClockMonitor.mark`, which a session start calls) is reported:
a warning in the log, a ``clock`` event on the PUB socket, and ``warning`` in its entry.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from shared_utils.errors import ModuleError

DRIFT_LIMIT_MS = 1.0


class ClockMonitor:
    """Measures and keeps the offset of every host running one of our modules."""

    def __init__(
        self,
        handles: dict[str, Any],
        publish: Callable[..., None],
        warn: Callable[[str], None],
        interval_s: float = 5.0,
        probes: int = 8,
        drift_limit_ms: float = DRIFT_LIMIT_MS,
    ) -> None:
        self._handles = handles
        self._publish = publish
        self._warn = warn
        self.interval_s = interval_s
        self.probes = probes
        self.drift_limit_ms = drift_limit_ms
        self.hostname = socket.gethostname()
        self._hosts: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ClockMonitor:
        self._thread = threading.Thread(target=self._run, name="clock-monitor", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3.0)

    def mark(self) -> None:
        """Measure drift from the next measurement on (a session starts now)."""
        with self._lock:
            for entry in self._hosts.values():
                entry["reference_ms"] = None
                entry["drift_ms"] = 0.0
                entry["max_drift_ms"] = 0.0
                entry.pop("warning", None)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{host: {offset_ms, uncertainty_ms, rtt_ms, drift_ms, measured_at, modules, ...}}``
        (what STATUS shows under ``clocks`` and a session's ``session.json`` records)."""
        with self._lock:
            return {h: dict(e) for h, e in self._hosts.items()}

    def measure_now(self) -> dict[str, dict[str, Any]]:
        """One round over every host, now (also what the background thread does)."""
        by_host: dict[str, list[Any]] = {}
        for h in list(self._handles.values()):
            # only modules that list STATUS: a module in another language may not have it, and
            # would log each probe as a bad request
            listed = {c.upper() for c in h.commands}
            if h.state == "ready" and h.protocol == "json" and "STATUS" in listed:
                by_host.setdefault(h.host, []).append(h)
        for handles in by_host.values():
            for h in handles:  # the first module on that host that answers with its clock
                if self._measure(h, [x.name for x in handles]):
                    break
        return self.snapshot()

    # -- internals -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.measure_now()
            except Exception as exc:  # a measuring bug must not end the monitor
                self._warn(f"clock measurement failed: {exc!r}")
            self._stop.wait(self.interval_s)

    def _measure(self, h: Any, modules: list[str]) -> bool:
        import pylsl

        best: tuple[float, float] | None = None  # (rtt, offset)
        hostname = h.host
        try:
            with h.client(2.0) as c:
                for _ in range(self.probes):
                    t0 = pylsl.local_clock()
                    st = c.call("STATUS", {})
                    t1 = pylsl.local_clock()
                    remote = st.get("lsl_clock") if isinstance(st, dict) else None
                    if not isinstance(remote, int | float):
                        return False  # not one of ours (or no LSL there): nothing to measure
                    hostname = str(st.get("hostname") or h.host)
                    if best is None or t1 - t0 < best[0]:
                        best = (t1 - t0, (t0 + t1) / 2 - remote)
        except (ModuleError, OSError, ValueError):
            return False
        assert best is not None
        self._record(hostname, h.host, modules, best[1] * 1000, best[0] * 1000)
        return True

    def _record(
        self, hostname: str, address: str, modules: list[str], offset_ms: float, rtt_ms: float
    ) -> None:
        with self._lock:
            e = self._hosts.setdefault(hostname, {"reference_ms": None, "drift_ms": 0.0})
            if e["reference_ms"] is None:
                e["reference_ms"] = round(offset_ms, 4)
            drift = offset_ms - e["reference_ms"]
            e.update(
                address=address,
                modules=sorted(set(e.get("modules", [])) | set(modules)),
                same_host=hostname == self.hostname,
                offset_ms=round(offset_ms, 4),
                uncertainty_ms=round(rtt_ms / 2, 4),
                rtt_ms=round(rtt_ms, 4),
                drift_ms=round(drift, 4),
                max_drift_ms=round(max(abs(drift), e.get("max_drift_ms", 0.0)), 4),
                measured_at=time.time(),
                samples=e.get("samples", 0) + 1,
            )
            crossed = abs(drift) > self.drift_limit_ms and "warning" not in e
            if crossed:
                e["warning"] = (
                    f"clock of {hostname} ({address}) drifted {drift:+.3f} ms since the reference "
                    f"(limit {self.drift_limit_ms} ms); check NTP/chrony on both PCs"
                )
            elif abs(drift) <= self.drift_limit_ms:
                e.pop("warning", None)
            warning = e.get("warning") if crossed else None
        if warning:
            self._warn(warning)
            self._publish(
                "clock", host=hostname, address=address, drift_ms=round(drift, 4), warning=warning
            )
