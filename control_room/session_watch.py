"""Watching a running session: a participant that is lost is never lost silently.

Two sources: the supervisor's module states (a module crashed, failed or stopped answering
``UP``: the host went away), and an ``EXPSTATUS`` round every ``[session] status_every_s`` to
every participant, which is the only watchdog an iblutil rig has, catches a module that was
restarted and forgot the session, and notices a recorder whose recording stopped by itself.

A lost participant is written into ``session.json`` (``modules.<name>.status = "lost"``, a
problem and an event), printed, logged, published on the ``session`` topic and, with ``[session]
on_module_lost = "interrupt"`` (the default), the session is interrupted: ``EXPINTERRUPT`` and
``EXPCLEANUP`` to everyone else, never to the lost one (a vanished host would only make each
message wait for its timeout). The problem names the participant with its address, so a module
on another PC names its host: ``streamer (10.0.0.2:8101) lost: unresponsive (...)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from control_room.session_record import log

if TYPE_CHECKING:
    from control_room.session import SessionManager
    from control_room.session_rounds import Run

LOST_STATES = ("crashed", "failed", "unresponsive", "stopped")
#: what a state means for the session's problem text (a module on another PC whose host vanished
#: is first ``unresponsive``: its ssh client only notices seconds later)
STATE_HINTS = {"unresponsive": "unresponsive (its host is unreachable, or it hangs)"}
RIG_MISSES = 3  # EXPSTATUS answers a rig may miss in a row before it counts as lost


class SessionWatch:
    """The watch of one run (started with the session, ended by :meth:`stop`)."""

    def __init__(self, manager: SessionManager, run: Run) -> None:
        self.m = manager
        self.run = run
        self.lost: set[str] = set()
        self._misses: dict[str, int] = {}
        self._warned: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="session-watch", daemon=True)

    def start(self) -> SessionWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def module_state(self, name: str, state: str, error: str | None) -> None:
        """A module's state changed (event bus): lost if it is a participant that went away."""
        if state in LOST_STATES and name in {p.name for p in self.run.parts}:
            state = STATE_HINTS.get(state, state)
            self.lose(name, state + (f": {error}" if error else ""))

    def lose(self, name: str, why: str) -> None:
        """``name`` is gone: every line about it names it with its address (the host it ran on,
        which for a module on another PC is what the user must go and look at)."""
        run, policy = self.run, self.m.settings.on_module_lost
        if self._stop.is_set() or name in self.lost:
            return
        self.lost.add(name)
        where = next((p.address for p in run.parts if p.name == name), None)
        who = f"{name} ({where})" if where else name
        run.record.module(name, status="lost")
        run.record.problem(f"{who} lost: {why}", module=name)
        run.record.event("participant_lost", module=name, address=where, detail=why)
        text = f"session {run.exp_ref}: {who} lost: {why}"
        self.m.room.console.note(
            text + ("; interrupting the session" if policy == "interrupt" else "")
        )
        log.warning("participant lost", exp_ref=run.exp_ref, module=name, address=where,
                    detail=why, policy=policy)  # fmt: skip
        self.m.publish("participant_lost", module=name, address=where, detail=why)
        if policy == "interrupt":
            reason = {"error": "participant lost", "message": f"{who}: {why}"}
            threading.Thread(
                target=self.m.interrupt_run,
                args=(run, reason),
                name="session-interrupt",
                daemon=True,
            ).start()

    def _loop(self) -> None:
        every = self.m.settings.status_every_s
        while not self._stop.wait(every):
            for p in self.run.parts:
                if self._stop.is_set():
                    return
                if p.kind != "foreign" and p.name not in self.lost:
                    self._check(p.name, lambda p=p: p.call("EXPSTATUS", {"status": 20},
                                                           self.m.settings.timeouts["status"]),
                                p.kind)  # fmt: skip

    def _check(self, name: str, ask: Callable[[], dict[str, Any]], kind: str) -> None:
        from control_room.session_parts import ParticipantError

        try:
            rep = ask()
        except ParticipantError as exc:
            self._misses[name] = self._misses.get(name, 0) + 1
            if kind == "iblutil" and self._misses[name] >= RIG_MISSES:  # modules: the supervisor
                self.lose(name, f"no answer to EXPSTATUS {RIG_MISSES} times in a row: {exc}")
            return
        self._misses[name] = 0
        status = rep.get("status")
        if isinstance(status, int) and status != 20 and not self._stop.is_set():
            self.lose(name, f"left the session (its status is {rep.get('status_name') or status})")
        elif rep.get("recording") is False and name not in self._warned:
            self._warned.add(name)
            self.run.record.event("recording_stopped", module=name)
            self.m.room.console.note(f"session {self.run.exp_ref}: {name} is no longer recording")
            log.warning("session recording stopped", module=name, exp_ref=self.run.exp_ref)
