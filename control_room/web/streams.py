"""The LSL streams on the machine, with their nominal and measured rates.

Discovery is a ``ContinuousResolver`` (it answers at once from what it heard, instead of
waiting a second per look as ``resolve_streams`` does). Measured rates come from a small probe
per numeric stream, a ``StreamWatcher`` holding 3 s, which runs only while a page is open (see
:class:`~control_room.web.monitor.Monitor`). Streams above ``PROBE_MAX_VALUES`` values a second
(a 384-channel probe at 30 kHz) are not probed: their rate would cost the control room more than
it is worth; their row says so.

The control room's own marker stream is never probed: its first consumer releases the markers
held back for the recorder (control_room/events.py), and a probe must not take that role.
"""

from __future__ import annotations

import threading
from typing import Any

PROBE_MAX_VALUES = 2_000_000  # channels x rate above which a stream is listed but not measured
FORGET_AFTER_S = 3.0


class StreamTable:
    """Visible streams, plus a rate probe for each numeric one, for as long as it is open."""

    def __init__(self, skip: set[str]) -> None:
        self.skip = skip  # stream names never probed (the control room's markers)
        self._resolver: Any = None
        self._probes: dict[str, Any] = {}  # uid -> StreamWatcher (or None: could not open)
        self._opening: set[str] = set()
        self._gen = 0  # bumped by close_probes: a probe still opening then closes itself
        self._lock = threading.Lock()
        self.infos: dict[str, Any] = {}  # uid -> StreamInfo, as of the last poll

    def resolve(self) -> dict[str, Any]:
        """The streams visible now, by uid (answers at once from what the resolver heard)."""
        import pylsl

        with self._lock:
            if self._resolver is None:
                self._resolver = pylsl.ContinuousResolver(forget_after=FORGET_AFTER_S)
            resolver = self._resolver
        self.infos = {i.uid(): i for i in resolver.results()}
        return self.infos

    def poll(self) -> list[dict[str, Any]]:
        """One row per visible stream: name, type, channels, nominal and measured rate, samples
        and seconds since the last one (``None`` where unmeasured)."""
        from shared_utils.stream_watcher import describe

        infos = self.resolve()
        rows = []
        with self._lock:
            for uid in [u for u in self._probes if u not in infos]:  # gone: close its probe
                p = self._probes.pop(uid)
                if p is not None:
                    p.close()
        for uid, info in infos.items():
            row = describe(info)
            row.update(measured_srate=None, samples=None, since_data_s=None, probe=None)
            why = self._why_not_probed(row)
            if why:
                row["probe"] = why
            else:
                self._measure(uid, info, row)
            rows.append(row)
        rows.sort(key=lambda r: (r["name"], r["uid"]))
        return rows

    def _why_not_probed(self, row: dict[str, Any]) -> str | None:
        if row["name"] in self.skip:
            return "ours"
        if row["format"] == "string":
            return "markers"
        if row["srate"] * row["channels"] > PROBE_MAX_VALUES:
            return "too large to measure"
        return None

    def _measure(self, uid: str, info: Any, row: dict[str, Any]) -> None:
        with self._lock:
            probe = self._probes.get(uid)
            known = uid in self._probes
        if not known:
            self._open(uid, info)
            return
        if probe is None:
            row["probe"] = "could not open"
            return
        st = probe.stats()
        row["measured_srate"] = st["effective_srate"]
        row["samples"] = st["samples"]
        row["since_data_s"] = st["since_data_s"]
        row["lost"] = st["lost"]

    def _open(self, uid: str, info: Any) -> None:
        """Open a probe in the background (opening an inlet can take a moment)."""
        with self._lock:
            if uid in self._opening:
                return
            self._opening.add(uid)
            gen = self._gen

        def run() -> None:
            from shared_utils.stream_watcher import StreamWatcher

            sw: Any = StreamWatcher(info.name(), buffer_size_s=3.0, background=True)
            try:
                sw.attach(info)
            except Exception:
                sw.close()
                sw = None
            with self._lock:
                self._opening.discard(uid)
                if gen != self._gen:  # the probes were closed meanwhile
                    if sw is not None:
                        sw.close()
                    return
                self._probes[uid] = sw

        threading.Thread(target=run, name="stream-probe", daemon=True).start()

    def close_probes(self) -> None:
        """Close every probe (no page is open); discovery goes on."""
        with self._lock:
            probes, self._probes = self._probes, {}
            self._gen += 1
        for p in probes.values():
            if p is not None:
                p.close()

    def close(self) -> None:
        """Close the probes and the resolver."""
        self.close_probes()
        with self._lock:
            self._resolver = None
