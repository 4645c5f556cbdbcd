"""The message rounds of a session: sending one EXP* message to participants in order, noting
each reply in session.json, and finishing a run. A base class of
:class:`~control_room.session.SessionManager` (session.py keeps the lifecycle: start, stop and the
step-wise methods the iblutil bridge calls); the state it uses is created there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from control_room.session_parts import (
    STATUS_NAMES,
    Participant,
    ParticipantError,
)
from control_room.session_record import SessionRecord, clock, log
from control_room.session_rules import SessionError

if TYPE_CHECKING:
    from control_room.session_watch import SessionWatch

IDENTITY = ("module", "version", "host", "revision", "spec_version", "main_sync", "needs")
STANDARD = {"status", "status_name", "exp_ref", "started", "ended", "interrupted", "repeat",
            "foreign", "files", *IDENTITY}  # fmt: skip
Replies = dict[str, dict[str, Any]]


@dataclass
class Run:
    """The session in progress (the control room runs one at a time)."""

    exp_ref: str
    subject: str
    record: SessionRecord
    parts: list[Participant]
    main_sync: str  # who gave the reference (a participant, "control_room", or "api"/"iblrig")
    lead: str | None  # the participant that claimed main sync: it starts first, its clocks count
    state: str = "initialized"  # initialized -> running -> stopped
    watch: SessionWatch | None = None


class SessionRounds:
    """Rounds of messages and the end of a run (see the module notes)."""

    # -- internals ------------------------------------------------------------------------------
    def _info_kwargs(self, p: Participant, subject: str) -> dict[str, Any]:
        kw: dict[str, Any] = {"subject": subject}
        if self.settings.main_sync is not None:  # modules that would claim it stand down
            kw["claim_main_sync"] = p.name == self.settings.main_sync
        return kw

    def _round(self, run: Run | None, msg: str, parts: list[Participant],
               kwargs: Callable[[Participant], dict[str, Any]], stop_at_error: bool = False,
               ) -> tuple[Replies, dict[str, ParticipantError]]:  # fmt: skip
        """Send ``msg`` to each participant in turn; replies and errors by name."""
        timeout = self.settings.timeouts[msg.removeprefix("EXP").lower()]
        replies: Replies = {}
        errors: dict[str, ParticipantError] = {}
        for p in parts:
            opts = self.settings.options.get(p.name) if msg in ("EXPINIT", "EXPSTART") else None
            try:
                rep = p.call(msg, {**kwargs(p), **(opts or {})}, timeout)
            except ParticipantError as exc:
                errors[p.name] = exc
                log.warning("session step failed", message=msg, module=p.name, error=str(exc))
                if run is not None:
                    run.record.problem(str(exc), module=p.name)
                    run.record.event("step_failed", module=p.name, message=msg, error=str(exc))
                if stop_at_error:
                    break
                continue
            replies[p.name] = rep
            if run is not None:
                log.info("session step", message=msg, module=p.name, status=rep.get("status_name"))
                self._note(run, p, msg, rep)
        if run is not None:
            run.record.write()
        return replies, errors

    def _note(self, run: Run, p: Participant, msg: str, rep: dict[str, Any]) -> None:
        """A reply into ``modules.<name>``: identity, files, status after the step, details."""
        fields: dict[str, Any] = {"kind": p.kind, "address": p.address}
        if msg == "EXPINFO":
            fields.update({k: rep[k] for k in IDENTITY if k in rep})
        status = rep.get("status_name") or STATUS_NAMES.get(rep.get("status"))  # type: ignore[arg-type]
        if msg == "EXPCLEANUP":
            fields["cleaned_up"] = True  # "status" keeps how it ended (stopped, lost)
        elif status and run.record.data["modules"].get(p.name, {}).get("status") != "lost":
            fields["status"] = status
        details = {k: v for k, v in rep.items() if k not in STANDARD}
        step = (msg, details) if details and msg not in ("EXPSTATUS", "EXPCLEANUP") else None
        run.record.module(p.name, step, files=rep.get("files"), **fields)

    def _step(self, run: Run, msg: str, kwargs: dict[str, Any]) -> Replies:
        """EXPINIT / EXPSTART to all, stopping at the first failure: then everyone is
        interrupted and cleaned up, the session is marked failed, and SessionError says why."""
        replies, errors = self._round(run, msg, run.parts, lambda p: kwargs, stop_at_error=True)
        if not errors:
            return replies
        text = "; ".join(map(str, errors.values()))
        back = list(reversed(run.parts))
        self._interrupt(run, back, {"error": f"{msg} failed", "message": text})
        self._round(run, "EXPCLEANUP", back, lambda p: {})
        run.state = "stopped"
        run.record.update(status="failed", end=clock())
        self.publish("failed", error=text)
        summary = self._finish(run)
        raise SessionError(
            f"session {run.exp_ref} not started: {text}; every participant was sent "
            f"EXPINTERRUPT and EXPCLEANUP (folder {summary['folder']})"
        )

    @staticmethod
    def _reachable(run: Run, parts: Any) -> list[Participant]:
        """``parts`` without the participants lost mid-session (nothing more is sent to them)."""
        lost = run.watch.lost if run.watch is not None else set()
        return [p for p in parts if p.name not in lost]

    @staticmethod
    def _clock(run: Run, reply: dict[str, Any] | None) -> dict[str, Any]:
        """The main sync's clocks from its reply (the recording's own LSL clock), else ours."""
        theirs = (reply or {}).get("clock")
        if isinstance(theirs, dict) and "wall" in theirs:
            return {**theirs, "source": run.lead}
        return clock()

    def _interrupt(self, run: Run, parts: list[Participant], why: dict[str, Any]) -> None:
        run.record.update(interrupted={**why, "wall": clock()["wall"]})
        self._round(run, "EXPINTERRUPT", parts, lambda p: why)

    def _finish(self, run: Run) -> dict[str, Any]:
        if run.watch is not None:
            run.watch.stop()
        run.record.close()
        summary = self.summary()
        self.last, self.run = summary, None
        problems = summary["problems"]
        self.publish("closed", status=summary["status"], exp_ref=run.exp_ref,
                     folder=str(run.record.folder))  # fmt: skip
        self.room.console.note(
            f"session {run.exp_ref} {summary['status']}; folder {run.record.folder}"
            + (f"; problems: {'; '.join(problems)}" if problems else "")
        )
        return summary

    def _record_clocks(self, run: Run, when: str) -> None:
        """Each host's clock offset into ``session.json`` under ``clocks.<when>``. The start is
        the drift reference; at the end, a host that drifted past the limit at any time during
        the session is one of its problems (its data need the offsets, not the host clocks)."""
        monitor = getattr(self.room, "clocks", None)
        if monitor is None:
            return
        if when == "start":
            monitor.mark()
        try:
            snapshot = monitor.measure_now()
        except Exception as exc:  # a measuring failure must not fail the session
            run.record.problem(f"clock offsets at the session {when} not measured: {exc!r}")
            return
        run.record.update(clocks={**(run.record.data.get("clocks") or {}), when: snapshot})
        if when != "end":
            return
        for host, entry in snapshot.items():
            worst = entry.get("max_drift_ms", 0.0)
            if worst > monitor.drift_limit_ms:
                run.record.problem(
                    f"clock of {host} drifted up to {worst:.3f} ms during the session (limit "
                    f"{monitor.drift_limit_ms} ms): use the recorded offsets, check NTP/chrony"
                )
