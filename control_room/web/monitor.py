"""What the dashboard pushes besides the control room's own events, and the snapshot a page
starts from.

Two sources, both inside the control room (nothing re-reads a file, nothing opens a second path
to a module):

- the event bus (control_room/events.py) through an in-process listener: status changes,
  commands, replies, macro steps reach the pages the moment they are published. Measured against
  a ZeroMQ SUB socket on the same bus (bench/dashboard_bench.py), the listener hands an event over
  in microseconds instead of a socket round trip, cannot miss the first events after a page
  connects (ZeroMQ's slow joiner), and costs nothing while no page is open;
- a thread that works only while a page is open: module details every second (pid, uptime,
  health-check reply time), new records of the central log every 0.25 s (from the room's
  in-memory ring, batched so a chatty module cannot flood a page), the LSL stream table, the
  recorder's ``STATUS`` every second (through the control room's own ``send``, unmarked) with
  stall warnings, and Bpod trials as they finish (those it follows also with no page open, once
  a second, so a page opened mid-session lists every trial).

Sessions: the session manager publishes a bare ``session`` event at each step (its state, the
reference, the folder). A page needs more than that (status, main sync, start, each participant,
problems), so each such event goes out with the manager's own summary attached, read on the
publisher's thread at that moment; nothing polls for it.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from control_room.report.analysis import DEFAULT_CONTROL
from control_room.report.session import DEFAULT_NAMES
from control_room.web.hub import Hub
from control_room.web.streams import StreamTable
from control_room.web.trials import TrialFeed

TICK_S = 0.25
IDLE_S = 1.0  # with no page open: how often the Bpod's trials are read
LOG_BATCH = 300  # records per push at most; the rest are counted as skipped
STALL_AFTER_S = 2.0  # a regular stream whose recorded count stood still this long is stalled
FORWARDED = ("status", "command", "reply", "callback", "macro", "control_room")


LOG_KEYS = ("seq", "created", "module", "levelno", "level", "logger", "exc_text")


def slim(rec: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a log record: the event with its key-values as one text."""
    out = {k: rec.get(k) for k in LOG_KEYS if rec.get(k) is not None}
    kv = " ".join(f"{k}={v}" for k, v in (rec.get("kv") or {}).items() if k != "module")
    out["msg"] = f"{rec.get('event', '')}  {kv}" if kv else str(rec.get("event", ""))
    return out


class Monitor:
    def __init__(self, room: Any, hub: Hub) -> None:
        self.room = room
        self.hub = hub
        self.streams = StreamTable(skip={room.cfg.control.marker_stream})
        self.trials = TrialFeed()
        self.last_streams: list[dict[str, Any]] = []
        self.last_recording: dict[str, Any] | None = None
        self.decoder: dict[str, Any] = {
            "module": None,
            "stream": DEFAULT_NAMES["decoder"],
            "params": dict(DEFAULT_CONTROL),
        }
        self.macro: dict[str, Any] | None = None  # the running (or last) macro's progress
        self._counts: dict[str, tuple[int, float]] = {}  # stream -> (samples, when it changed)
        self._log_next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._active = threading.Event()  # at least one page is open
        self._streams_off = threading.Event()  # the mesh is stopping: no more LSL reading
        self._released = threading.Event()  # ... and every inlet is closed
        self._thread: threading.Thread | None = None

    # -- bus listener (runs on the publisher's thread: quick) ---------------------------------
    def on_event(self, topic: str, msg: dict[str, Any]) -> None:
        if topic == "macro":
            self._track_macro(msg)
        elif topic == "command":
            self._track_decoder(msg)
        if topic in FORWARDED:
            self.hub.broadcast(topic, msg)
        elif topic == "session" and self.hub.clients:  # no page open: no summary to copy
            self.hub.broadcast("session", {**msg, "session": self.session()})

    def _track_macro(self, msg: dict[str, Any]) -> None:
        with self._lock:
            if msg.get("state") == "started":
                name = msg.get("macro")
                total = len(self.room.cfg.macros[name].steps) if name in self.room.cfg.macros else 0
                self.macro = {"macro": name, "state": "running", "steps": [], "total": total}
            elif self.macro is not None and msg.get("macro") == self.macro["macro"]:
                if msg.get("state") == "step":
                    self.macro["steps"].append(msg.get("step"))
                else:
                    self.macro["state"] = msg.get("state")
                    self.macro["error"] = msg.get("error")

    def _track_decoder(self, msg: dict[str, Any]) -> None:
        """Thresholds as the report reads them: from the decoder's START and SET commands."""
        kw = msg.get("kwargs") or {}
        if msg.get("cmd") not in ("START", "SET") or not isinstance(kw, dict):
            return
        change = {
            k: v for k, v in kw.items() if k in DEFAULT_CONTROL and isinstance(v, int | float)
        }
        if not change and "output" not in kw:
            return
        with self._lock:
            d = self.decoder
            d["module"] = msg.get("module")
            if isinstance(kw.get("output"), str):
                d["stream"] = kw["output"]
            d["params"] = {**d["params"], **change}
            snap = dict(d)
        self.hub.broadcast("decoder", snap)

    # -- while pages are open -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-monitor", daemon=True)
        self._thread.start()

    def set_active(self, pages: int) -> None:
        """Pages open now (from the server's loop: returns at once)."""
        if pages > 0:
            self._active.set()
        else:
            self._active.clear()

    def stop(self) -> None:
        self._stop.set()
        self._active.set()  # wake it
        if self._thread is not None:
            self._thread.join(3.0)

    def release_streams(self, timeout: float = 2.0) -> bool:
        """Close every LSL inlet before the modules stop (the control room's shutdown calls it).

        An inlet whose outlet goes away makes liblsl print an error ("Stream transmission broke
        off") even when the outlet's module stopped cleanly; a user reading that at the end of a
        good run would look for a fault. The inlets belong to the monitor's thread, so this asks
        it and waits; pages keep receiving module states until the dashboard stops."""
        self._streams_off.set()
        self._active.set()  # wake an idle loop; pages closing later only send it back to idle
        if self._thread is None or not self._thread.is_alive():
            return True
        return self._released.wait(timeout)

    def _run(self) -> None:
        """Tick while a page is open. With none, only follow the Bpod's trials once a second (a
        page opened mid-session shows every trial) and close the other stream readers."""
        n = 0
        try:
            while not self._stop.is_set():
                if self._streams_off.is_set() and not self._released.is_set():
                    self.streams.close()
                    self.trials.close()
                    self._released.set()
                if not self._active.is_set():
                    n = 0
                    if not self._streams_off.is_set():
                        self.streams.close_probes()
                        self._push_trials()
                    self._active.wait(IDLE_S)
                    continue
                if n == 0:
                    self._log_next = self.room.get_logs(n=1)["next"]  # the snapshot has the rest
                self._tick(n)
                n += 1
                self._stop.wait(TICK_S)
        finally:
            self.streams.close()
            self.trials.close()

    def _tick(self, n: int) -> None:
        self._push_logs()
        reading = not self._streams_off.is_set()
        if n % 4 == 0:
            self.hub.broadcast("modules", self.modules())
            self._push_recording()
            if reading:
                self._push_trials()
        if reading and (n % 8 == 0 or n in (2, 4)):  # the resolver needs a moment to hear them
            self.last_streams = self.streams.poll()
            self.hub.broadcast("streams", self.last_streams)

    def _push_logs(self) -> None:
        res = self.room.get_logs(since=self._log_next, n=0)
        self._log_next = res["next"]
        recs = [slim(r) for r in res["records"]]
        if recs:
            skipped = max(0, len(recs) - LOG_BATCH)
            self.hub.broadcast("logs", {"records": recs[-LOG_BATCH:], "skipped": skipped})

    def _push_trials(self) -> None:
        try:
            change = self.trials.poll(self.streams.resolve())
        except Exception as exc:  # a stream that vanished mid-read: try again next tick
            self.room.log.debug("dashboard: bpod trials: %s", exc)
            self.trials.close()
            return
        if change is not None:
            self.hub.broadcast("bpod", change)

    def _push_recording(self) -> None:
        rec = self.recorder()
        if rec is None:
            return
        try:
            st = self.room.send(rec, "STATUS", {}, quiet=True, timeout=2.0)
        except Exception as exc:
            st = {"recording": False, "unavailable": str(exc)}
        if not isinstance(st, dict):
            return
        st["module"] = rec
        st["stalled"] = self._stalls(st)
        self.last_recording = st
        self.hub.broadcast("recording", st)

    def _stalls(self, st: dict[str, Any]) -> list[str]:
        """Regular streams the recording holds whose sample count stopped growing."""
        if not st.get("recording"):
            self._counts.clear()
            return []
        rates = {r["name"]: r["srate"] for r in self.last_streams}
        now = time.monotonic()
        out = []
        for s in st.get("streams", []):
            name, n = s.get("name"), s.get("samples", 0)
            prev = self._counts.get(name)
            if prev is None or prev[0] != n:
                self._counts[name] = (n, now)
                stood = 0.0
            else:
                stood = now - prev[1]
            if s.get("lost") or (rates.get(name, 0) > 0 and stood >= STALL_AFTER_S):
                out.append(name)
        return out

    def recorder(self) -> str | None:
        """The recorder module: ``services.recorder`` in its command, else one called so."""
        for name, spec in self.room.cfg.modules.items():
            if "services.recorder" in spec.argv or name == "recorder":
                return name
        return None

    # -- what a page starts from ----------------------------------------------------------------
    def modules(self) -> list[dict[str, Any]]:
        return list(self.room.module_info().values())

    def session(self) -> dict[str, Any] | None:
        """The running session, or ``{"running": false, "last": ...}``, as SESSION_STATUS says it
        (``None`` before the modules are up). Copied through JSON: the session's own thread goes
        on appending to the lists it shares with the summary."""
        sessions = getattr(self.room, "sessions", None)
        if sessions is None:
            return None
        return json.loads(json.dumps(sessions.summary(), default=str))

    def snapshot(self) -> dict[str, Any]:
        from control_room.server import LOG_SOURCES, RoomCommands

        room = self.room
        st = room.status()
        with self._lock:
            macro = (
                None if self.macro is None else {**self.macro, "steps": list(self.macro["steps"])}
            )
            decoder = dict(self.decoder)
        return {
            "time": time.time(),
            "room": {k: st.get(k) for k in ("config", "startup_s", "log_file", "pub", "web")},
            "running_macro": room.running_macro,
            "modules": list(st["modules"].values()),
            "macros": RoomCommands(room).macros(),
            "macro": macro,
            "streams": self.last_streams,
            "recording": self.last_recording,
            "recorder": self.recorder(),
            "bpod": self.trials.snapshot(),
            "decoder": decoder,
            "session": self.session(),
            "logs": [slim(r) for r in room.get_logs(n=500)["records"]],
            "log_sources": [*room.cfg.modules, *LOG_SOURCES],
        }
