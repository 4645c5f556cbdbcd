"""The mesh as one of an iblrig PC's remote devices: iblutil's messages in, our session out.

An iblrig behaviour PC lists us in its ``remote_devices.yaml`` (``mesh: udp://<control room
PC>:11001``) and drives our session with its own messages; ``[session] iblutil_listen`` turns
this on. Messages are handled one at a time, in the order they arrive, on a worker thread (the
reader thread only echoes), and each is answered with a message of the same event once the whole
mesh has done the step, as iblutil expects:

| iblrig sends | the mesh does | we answer |
|---|---|---|
| ``[64, status, {subject, ...}]`` EXPINFO | EXPINFO to every participant | ``[64, status, {exp_ref, main_sync, subject, ...}]`` |
| ``[1, {exp_ref}]`` EXPINIT | folder, session.json, EXPINIT to all | ``[1, {status: 10, exp_ref, folder}]`` |
| ``[2, exp_ref, data]`` EXPSTART | EXPSTART to all | ``[2, exp_ref, {status: 20, ...}]`` |
| ``[4, data]`` / ``[16, {error, message}]`` | EXPEND / EXPINTERRUPT to all | same event, ``{status: 30, ...}`` |
| ``[8, data]`` EXPCLEANUP | EXPCLEANUP to all | ``[8, {status: 0, ...}]`` |
| ``[32, status]`` EXPSTATUS | nothing | ``[32, our status]`` |

The mesh claims main sync (and proposes the experiment reference its own main sync gives) only
with ``[session] iblutil_main_sync = true``; by default the iblrig side's main sync decides and
its ``exp_ref`` wins. A step that fails is answered iblutil's way, ``[0, "SessionError: why",
event]``, which the iblrig side logs; the session itself is then interrupted and cleaned up.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from control_room.config_session import parse_udp_uri
from control_room.iblutil_wire import EVENTS, NAMES, Addr, UdpPeer, WireError, encode
from control_room.session import SessionError, SessionManager
from control_room.session_record import log
from shared_utils.protocol.session import SPEC_VERSION


class IblrigBridge:
    """Listens on ``listen`` (``udp://host:port``) and maps iblutil messages onto ``sessions``."""

    def __init__(
        self, sessions: SessionManager, listen: str, claim_main_sync: bool = False
    ) -> None:
        self.sessions = sessions
        self.claim = claim_main_sync
        host, port = parse_udp_uri(listen)
        self.peer = UdpPeer((host, port), self._received, "iblrig-bridge")
        self.address = f"udp://{host}:{self.peer.port}"
        self.handled = 0
        self._queue: queue.Queue[tuple[int, list[Any], Addr] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="iblrig-bridge", daemon=True)
        self._worker.start()

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(2.0)
        self.peer.close()

    def _received(self, event: int, fields: list[Any], addr: Addr) -> None:
        if event == 0:
            log.warning("iblrig PC reported an error", peer=f"{addr[0]}:{addr[1]}", fields=fields)
            return
        self._queue.put((event, fields, addr))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            event, fields, addr = item
            name = NAMES.get(event, str(event))
            try:
                reply = self._handle(name, fields)
            except (SessionError, ValueError, TypeError) as exc:
                log.error("iblrig message failed", message=name, error=str(exc))
                try:  # iblutil's report of a failed handler: not echoed, not waited for
                    self.peer.sock.sendto(encode(0, [f"{type(exc).__name__}: {exc}", event]), addr)
                except OSError:
                    pass
                continue
            finally:
                self.handled += 1
            if reply is None:
                continue
            try:
                self.peer.send(event, reply, addr)
            except WireError as exc:
                log.warning("iblrig PC did not confirm our answer", message=name, error=str(exc))

    def _handle(self, name: str, fields: list[Any]) -> list[Any] | None:
        s = self.sessions
        data = next((f for f in fields if isinstance(f, dict)), {})
        if name == "EXPINFO":
            return [s.status_number(), self._info(data.get("subject"))]
        if name == "EXPINIT":
            exp_ref = data.get("exp_ref") if data else (fields[0] if fields else None)
            res = s.init(exp_ref, source="iblrig")
            return [self._brief(res)]
        if name == "EXPSTART":
            exp_ref = fields[0] if fields and fields[0] else (s.run.exp_ref if s.run else None)
            res = s.begin(exp_ref)
            return [res["exp_ref"], self._brief(res)]
        if name in ("EXPEND", "EXPINTERRUPT"):
            reason = {k: str(data[k]) for k in ("error", "message") if k in data} or None
            res = s.end(interrupt=name == "EXPINTERRUPT", reason=reason, source="iblrig")
            return [self._brief(res)]
        if name == "EXPCLEANUP":
            res = s.cleanup()
            return [{**self._brief(res), "status": 0}]
        if name == "EXPSTATUS":
            return [s.status_number()]
        if name == "ALYX":  # no Alyx here; answer a request for our token with none
            return None if len(fields) > 1 and fields[1] else [None, {}]
        return None

    def _info(self, subject: Any) -> dict[str, Any]:
        s = self.sessions
        out: dict[str, Any] = {"main_sync": self.claim, "exp_ref": None, "subject": subject,
                               "spec_version": SPEC_VERSION, "rig": "closedloop-mesh"}  # fmt: skip
        if s.run is not None:
            out.update(exp_ref=s.run.exp_ref, subject=s.run.subject)
            return out
        if not isinstance(subject, str):
            raise SessionError("EXPINFO needs the subject in its data ({'subject': ...})")
        info = s.prepare(subject, decide=self.claim)
        out["exp_ref"] = info["exp_ref"] if self.claim else None
        out["participants"] = list(info["replies"])
        return out

    @staticmethod
    def _brief(summary: dict[str, Any]) -> dict[str, Any]:
        """What fits in one datagram: status, reference, folder and problems."""
        status = {"initialized": 10, "running": 20}.get(summary.get("status") or "", 30)
        return {"status": status, "exp_ref": summary.get("exp_ref"), "folder": summary.get("folder"),
                "problems": (summary.get("problems") or [])[:5]}  # fmt: skip


def open_bridge(sessions: SessionManager, settings: Any, console: Any) -> IblrigBridge | None:
    """The bridge ``[session] iblutil_listen`` asks for (None without it); a busy address is a
    start-up error that says what to change."""
    from control_room.handle import StartError

    listen = settings.iblutil_listen
    if not listen:
        return None
    try:
        bridge = IblrigBridge(sessions, listen, settings.iblutil_main_sync)
    except OSError as exc:
        raise StartError(
            f"iblutil bridge: cannot listen on {listen}: {exc.strerror or exc}. Set [session] "
            "iblutil_listen to a free address."
        ) from None
    console.note(f"answering iblrig PCs on {bridge.address}")
    return bridge


__all__ = ["EVENTS", "IblrigBridge", "open_bridge"]
