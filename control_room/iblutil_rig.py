"""An iblutil rig as a session participant: our control room drives it like iblrig would.

A rig listed in ``[session] remote_rigs`` (the same name -> address map as iblrig's
``remote_devices.yaml``) runs ``iblutil.io.net`` as a server (a camera PC, a Neuropixels PC, a
Timeline PC that is the main sync). We are its client: each session message goes out as the
datagram iblutil's ``Communicator`` would send, and we wait for the rig's answer of the same
event, echoing it as iblutil expects (a rig whose answer is not echoed gives up on us).

| message | we send | the rig answers |
|---|---|---|
| EXPINFO | ``[64, status, {subject, main_sync: false, exp_ref: null, ...}]`` | ``[64, status, {exp_ref, main_sync, ...}]`` |
| EXPINIT | ``[1, {exp_ref, subject, ...}]`` | ``[1, data]`` |
| EXPSTART | ``[2, exp_ref, {...}]`` | ``[2, exp_ref?, data]`` |
| EXPSTATUS | ``[32, status]`` | ``[32, status]`` |
| EXPEND / EXPINTERRUPT | ``[4, {...}]`` / ``[16, {error, message}]`` | same event, ``[data]`` |
| EXPCLEANUP | ``[8, {...}]`` | ``[8, data]`` |
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from control_room.config_session import parse_udp_uri
from control_room.iblutil_wire import EVENTS, NAMES, Addr, UdpPeer, WireError
from control_room.session_parts import STATUS_NAMES, ParticipantError
from shared_utils.protocol.session import SPEC_VERSION


def request_fields(msg: str, kwargs: dict[str, Any]) -> list[Any]:
    """The fields after the event number, as iblutil's Communicator methods lay them out."""
    if msg == "EXPINFO":
        data = {"subject": kwargs.get("subject"), "main_sync": False, "exp_ref": None,
                "spec_version": SPEC_VERSION, **kwargs}  # fmt: skip
        return [int(kwargs.get("status", 0)), data]
    if msg == "EXPSTART":
        return [kwargs.get("exp_ref"), {k: v for k, v in kwargs.items() if k != "exp_ref"}]
    if msg == "EXPSTATUS":
        return [int(kwargs.get("status", 0))]
    return [dict(kwargs)]


def reply_dict(msg: str, fields: list[Any]) -> dict[str, Any]:
    """A rig's answer as the dict every participant returns."""
    out: dict[str, Any] = {}
    if msg in ("EXPINFO", "EXPSTATUS") and fields and isinstance(fields[0], int):
        out["status"] = fields[0]
        out["status_name"] = STATUS_NAMES.get(fields[0], str(fields[0]))
        fields = fields[1:]
    elif msg == "EXPSTART" and fields and (fields[0] is None or isinstance(fields[0], str)):
        out["exp_ref"], fields = fields[0], fields[1:]
    for f in fields:
        if isinstance(f, dict):
            out.update(f)
        elif f is not None:
            out.setdefault("result", f)
    return out


class RigParticipant:
    """One iblutil rig at ``udp://host:port``."""

    kind = "iblutil"

    def __init__(self, name: str, uri: str) -> None:
        self.name = name
        self.host, self.port = parse_udp_uri(uri)
        self.address = f"udp://{self.host}:{self.port}"
        self._peer: UdpPeer | None = None
        self._addr: Addr | None = None
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[threading.Event, list[Any]]] = {}

    def _connect(self) -> UdpPeer:
        if self._peer is None:
            try:
                ip = socket.gethostbyname(self.host)
            except OSError as exc:
                raise ParticipantError(
                    f"{self.name}: cannot resolve {self.host}: {exc}", "unreachable"
                ) from None
            self._addr = (ip, self.port)
            bind_host = "127.0.0.1" if ip.startswith("127.") else "0.0.0.0"
            self._peer = UdpPeer((bind_host, 0), self._on_message, f"rig-{self.name}", only_from=ip)
        return self._peer

    def call(self, msg: str, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
        event = EVENTS[msg]
        with self._lock:  # one message at a time to a rig, as iblutil's Services does
            peer = self._connect()
            assert self._addr is not None
            done, slot = threading.Event(), []
            self._waiting[event] = (done, slot)
            try:
                peer.send(event, request_fields(msg, kwargs), self._addr)
            except WireError as exc:
                self._waiting.pop(event, None)
                raise ParticipantError(
                    f"{self.name} ({self.address}): {exc}", "unreachable"
                ) from None
            if not done.wait(timeout):
                self._waiting.pop(event, None)
                raise ParticipantError(
                    f"{self.name} ({self.address}) did not answer {msg} within {timeout:g} s "
                    "(it echoed the message, so it is listening)",
                    "timeout",
                )
        kind, value = slot[0]
        if kind == "error":
            raise ParticipantError(f"{self.name}: its {msg} handler failed: {value}")
        return reply_dict(msg, value)

    def _on_message(self, event: int, fields: list[Any], addr: Addr) -> None:
        if event == 0:  # [0, "Error: text", event]: the rig's handler raised
            text, evt = (fields + [None, None])[:2]
            waiter = self._waiting.pop(evt, None) if isinstance(evt, int) else None
            if waiter is not None:
                waiter[1].append(("error", text))
                waiter[0].set()
            return
        waiter = self._waiting.pop(event, None)
        if waiter is not None:
            waiter[1].append(("reply", fields))
            waiter[0].set()

    def close(self) -> None:
        if self._peer is not None:
            self._peer.close()
            self._peer = None

    def __repr__(self) -> str:
        return f"RigParticipant({self.name!r}, {self.address!r}, waiting={[NAMES[e] for e in self._waiting]})"
