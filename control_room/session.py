"""One experiment session across every module and rig of the mesh (docs/sessions.md).

``start``: ``EXPINFO`` to every participant (who is the main sync, and which experiment reference
it proposes: control_room/session_rules.py), the session folder and ``session.json``
(control_room/session_record.py), then ``EXPINIT`` and ``EXPSTART`` to each in order: the main
sync first, then the modules in dependency order, then the iblutil rigs. ``stop``: ``EXPEND`` in
reverse order, then ``EXPCLEANUP``. Every message has its own timeout and every failure names the
participant, the message and why.

What never happens: a session half-started, or a module left recording without anyone told. A
failing ``EXPINIT``/``EXPSTART`` sends ``EXPINTERRUPT`` and ``EXPCLEANUP`` to all and marks the
session failed; a participant that misses ``EXPEND`` gets ``EXPINTERRUPT`` and the session is
marked interrupted; a participant lost mid-session is handled by control_room/session_watch.py.

The step-wise methods (``prepare``, ``init``, ``begin``, ``end``, ``cleanup``) are what the
iblutil bridge calls when an iblrig PC drives the session message by message.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from control_room.iblutil_rig import RigParticipant
from control_room.session_parts import (
    ModuleParticipant,
    Participant,
    SessionRoom,
)
from control_room.session_record import SessionRecord, log
from control_room.session_rounds import Replies, Run, SessionRounds
from control_room.session_rules import SessionError, decide_main_sync, main_first
from control_room.session_watch import SessionWatch
from shared_utils.session_layout import check_subject, parse_exp_ref, session_folder

__all__ = ["SessionError", "SessionManager"]


class SessionManager(SessionRounds):
    """The control room's sessions: at most one running, the last one's summary kept."""

    def __init__(self, room: SessionRoom, data_dir: Path) -> None:
        self.room = room
        self.settings = room.cfg.session
        self.data_dir = data_dir
        self.run: Run | None = None
        self.last: dict[str, Any] | None = None
        self._lock = threading.RLock()  # one lifecycle step at a time
        self._rigs = {n: RigParticipant(n, u) for n, u in self.settings.remote_rigs.items()}
        self._prepared: tuple[str, list[Participant], Replies, str | None] | None = None

    # -- whole steps (CLI, macros, SESSION_START / SESSION_STOP) -------------------------------
    def start(self, subject: str, project: str | None = None, procedures: list[str] | None = None,
              exp_ref: str | None = None, source: str = "api") -> dict[str, Any]:  # fmt: skip
        """EXPINFO, EXPINIT and EXPSTART to every participant; returns the session summary.
        Repeated for the session already running, it changes nothing (``repeat: true``)."""
        with self._lock:
            run = self.run
            if run is not None and run.state == "stopped":
                raise SessionError(
                    f"session {run.exp_ref} has ended but is not cleaned up yet; finish it with "
                    "control-room session stop (EXPCLEANUP) first"
                )
            if run is not None:
                if run.subject == subject and exp_ref in (None, run.exp_ref):
                    return self.begin(run.exp_ref) if run.state == "initialized" else self.repeat()
                raise SessionError(
                    f"session {run.exp_ref} is {run.state}; stop it first (control-room session stop)"
                )
            info = self.prepare(subject, exp_ref)
            self.init(info["exp_ref"], subject, project, procedures, source)
            return self.begin(info["exp_ref"])

    def stop(self, interrupt: bool = False, reason: dict[str, Any] | None = None,
             source: str = "api") -> dict[str, Any]:  # fmt: skip
        """EXPEND (or EXPINTERRUPT) then EXPCLEANUP to every participant, in reverse order."""
        with self._lock:
            if self.run is None:
                if self.last is not None:
                    return {**self.last, "repeat": True}
                raise SessionError(
                    "no session is running (start one: control-room session start --subject S)"
                )
            self.end(interrupt, reason, source)
            return self.cleanup()

    # -- message by message (the iblutil bridge) ------------------------------------------------
    def participants(self) -> list[Participant]:
        """Modules in dependency order, then rigs; the configured main sync first."""
        order = [n for wave in self.room.cfg.start_order() for n in wave]
        names = main_first(self.settings.participants or [*order, *self._rigs], str,
                           self.settings.main_sync)  # fmt: skip
        return [self._rigs.get(n) or ModuleParticipant(self.room, n) for n in names]

    def prepare(self, subject: str, exp_ref: str | None = None, decide: bool = True) -> dict[str, Any]:  # fmt: skip
        """EXPINFO to all; the experiment reference: ``exp_ref`` if given, else the main sync's
        (unless ``decide`` is false: another rig's main sync gives it with EXPINIT)."""
        try:
            check_subject(subject)
            if exp_ref is not None and parse_exp_ref(exp_ref).subject != subject:
                raise ValueError(f"exp_ref {exp_ref} is not a session of subject {subject!r}")
        except ValueError as exc:
            raise SessionError(str(exc)) from None
        parts, main = self.participants(), self.settings.main_sync
        replies, errors = self._round(
            None, "EXPINFO", parts, lambda p: self._info_kwargs(p, subject)
        )
        if errors:
            raise SessionError("cannot start a session: " + "; ".join(map(str, errors.values())))
        decided = None  # who numbered the session: None when the reference came from outside
        if exp_ref is None and decide:
            exp_ref, decided = decide_main_sync(subject, replies, main, self.data_dir)
            main = decided
        self._prepared = (subject, parts, replies, decided)
        return {"exp_ref": exp_ref, "main_sync": main, "replies": replies}

    def init(self, exp_ref: str, subject: str | None = None, project: str | None = None,
             procedures: list[str] | None = None, source: str = "api") -> dict[str, Any]:  # fmt: skip
        """The session folder and session.json, then EXPINIT to every participant in order."""
        with self._lock:
            try:
                ref = parse_exp_ref(exp_ref)
            except ValueError as exc:
                raise SessionError(str(exc)) from None
            exp_ref, subject = str(ref), subject or ref.subject
            if self.run is not None:
                if self.run.exp_ref == exp_ref:
                    return self.repeat()
                raise SessionError(f"session {self.run.exp_ref} is {self.run.state}; stop it first")
            if self._prepared is None or self._prepared[0] != subject:
                self.prepare(subject, exp_ref)
            assert self._prepared is not None
            _, parts, replies, decided = self._prepared
            self._prepared = None
            folder = session_folder(self.data_dir, exp_ref)
            if (folder / "session.json").exists():
                raise SessionError(
                    f"{folder} already holds a session; experiment references are never reused "
                    "(start a new session: the main sync proposes the next number)"
                )
            claimed = next((n for n, r in replies.items() if r.get("main_sync")), None)
            lead = self.settings.main_sync or claimed
            main = decided or source
            record = SessionRecord(folder, exp_ref, subject, project or self.settings.project,
                                   list(procedures or []), self.room.cfg.path, source)  # fmt: skip
            parts = main_first(parts, lambda p: p.name, lead)
            run = Run(exp_ref, subject, record, parts, main, lead)
            record.update(main_sync=main)
            for p in run.parts:
                self._note(run, p, "EXPINFO", replies.get(p.name, {}))
            self.run = run
            self.publish("initializing")
            self._step(run, "EXPINIT", {"exp_ref": exp_ref, "subject": subject})
            record.update(status="initialized")
            return self.summary()

    def begin(self, exp_ref: Any) -> dict[str, Any]:
        """EXPSTART to every participant in order; the session is then running."""
        with self._lock:
            run = self.run
            if run is None or run.exp_ref != _ref(exp_ref):
                raise SessionError(
                    f"EXPSTART {exp_ref}: not initialised for it; send EXPINIT first"
                )
            if run.state != "initialized":
                if run.state == "running":
                    return self.repeat()
                raise SessionError(f"session {run.exp_ref} has ended; start a new one")
            replies = self._step(run, "EXPSTART", {"exp_ref": run.exp_ref})
            run.state = "running"
            run.record.update(status="running", start=self._clock(run, replies.get(run.lead or "")))
            self._record_clocks(run, "start")
            run.watch = SessionWatch(self, run).start()
            self.publish("running")
            self.room.console.note(f"session {run.exp_ref} running; folder {run.record.folder}")
            return self.summary()

    def end(self, interrupt: bool = False, reason: dict[str, Any] | None = None,
            source: str = "api") -> dict[str, Any]:  # fmt: skip
        """EXPEND (or EXPINTERRUPT) in reverse order; a participant that misses EXPEND is
        interrupted and the session counts as interrupted."""
        with self._lock:
            run = self.run
            if run is None:
                raise SessionError("no session to end")
            if run.state == "stopped":
                return self.repeat()
            if run.watch is not None:
                run.watch.stop()
            back = self._reachable(run, reversed(run.parts))
            if interrupt:
                self._interrupt(run, back, {"error": "interrupted", "message": f"by {source}",
                                            **(reason or {})})  # fmt: skip
            else:
                _, errors = self._round(run, "EXPEND", back, lambda p: {})
                if errors:
                    text = "; ".join(map(str, errors.values()))
                    self._interrupt(run, back, {"error": "missed EXPEND", "message": text})
            run.state = "stopped"
            self._record_clocks(run, "end")
            outcome = "interrupted" if run.record.data["interrupted"] else "ended"
            steps = run.record.data["modules"].get(run.lead, {}).get("steps", {})
            end = self._clock(run, steps.get("EXPEND") or steps.get("EXPINTERRUPT"))
            run.record.update(status=outcome, end=end)
            self.publish(outcome)
            return self.summary()

    def cleanup(self) -> dict[str, Any]:
        """EXPCLEANUP in reverse order; the session's files are final after this."""
        with self._lock:
            run = self.run
            if run is None:
                return {**(self.last or {}), "repeat": True}
            if run.state != "stopped":
                raise SessionError(f"session {run.exp_ref} is {run.state}; send EXPEND first")
            self._round(run, "EXPCLEANUP", self._reachable(run, reversed(run.parts)), lambda p: {})
            return self._finish(run)

    # -- state and hooks --------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        run = self.run
        if run is None:
            return {"running": False, "last": self.last}
        d = run.record.data
        keep = ("exp_ref", "subject", "project", "status", "main_sync", "start", "end",
                "interrupted", "problems", "events")  # fmt: skip
        mods = {n: {k: m.get(k) for k in ("kind", "status", "files", "error")}
                for n, m in d["modules"].items()}  # fmt: skip
        return {"running": run.state == "running", "folder": str(run.record.folder),
                **{k: d[k] for k in keep}, "modules": mods}  # fmt: skip

    def repeat(self) -> dict[str, Any]:
        return {**self.summary(), "repeat": True}

    def status_number(self) -> int:
        """iblutil's ExpStatus of the mesh as a whole: 0, 10, 20 or 30."""
        run = self.run
        return {"initialized": 10, "running": 20, "stopped": 30}.get(run.state, 0) if run else 0

    def on_log(self, rec: dict[str, Any]) -> None:
        """A central-log record: into the running session's ``session_log.jsonl``."""
        run = self.run
        if run is not None:
            run.record.log_record(rec)

    def on_event(self, topic: str, data: dict[str, Any]) -> None:
        """An event-bus event; module state changes may mean a participant was lost."""
        run = self.run
        if topic == "status" and run is not None and run.watch is not None:
            code = data.get("exit_code")  # a crash: what its exit means (ssh lost the host ...)
            why = (
                data.get("error") or data.get("note") or (code is not None and f"exit code {code}")
            )
            run.watch.module_state(str(data.get("module")), str(data.get("state")), why or None)

    def interrupt_run(self, run: Run, reason: dict[str, Any]) -> None:
        """Interrupt ``run`` if it still runs (from the watch, on its own thread)."""
        with self._lock:
            if self.run is run and run.state == "running":
                try:
                    self.stop(interrupt=True, reason=reason, source="watchdog")
                except SessionError as exc:
                    log.error("interrupting the session failed", error=str(exc))

    def macro_failed(self, before: Run | None, macro: str, error: str) -> None:
        """A macro failed: the session it started (``before`` was running before it), if it
        still runs, is interrupted; a session it did not start is left running."""
        run = self.run
        if run is not None and run is not before and run.state != "stopped":
            self.room.console.note(f"macro {macro} failed: interrupting session {run.exp_ref}")
            why = {"error": "macro failed", "message": f"{macro}: {error}"}
            self.stop(interrupt=True, reason=why, source=f"macro {macro}")

    def shutdown(self, reason: str) -> None:
        """The control room is going down: interrupt a session still open, close the rigs."""
        if self.run is not None:
            try:
                self.stop(interrupt=True, reason={"error": "shutdown", "message": reason},
                          source="shutdown")  # fmt: skip
            except SessionError as exc:
                log.error("session not closed cleanly", error=str(exc))
        for rig in self._rigs.values():
            rig.close()

    def publish(self, state: str, **data: Any) -> None:
        """A ``session`` event on the bus: ``state`` plus the session's reference and folder."""
        run = self.run
        base = {"exp_ref": run.exp_ref, "folder": str(run.record.folder)} if run else {}
        self.room.publish("session", state=state, **{**base, **data})


def _ref(exp_ref: Any) -> str | None:
    try:
        return str(parse_exp_ref(exp_ref))
    except ValueError:
        return None
