"""The participants of a session, one interface for all: our modules, foreign modules, iblutil rigs.

A participant answers ``call(message, kwargs, timeout)`` with a dict (the reply) or raises
:class:`ParticipantError`, whose text names the participant, the message and what went wrong
("bpod did not answer EXPINIT within 30 s"). The session logic (control_room/session.py) never
needs to know which kind it talks to.

- :class:`ModuleParticipant`: a module of the mesh, over the protocol through the control room
  (marked on LSL and published like every command). A module that does not know the EXP*
  messages (a Dareplane module, a minimal module in another language) is *foreign*: it is
  treated as always ready and never blocks a session.
- :class:`control_room.iblutil_rig.RigParticipant`: an iblutil rig over UDP.
"""

from __future__ import annotations

from typing import Any, Protocol

from shared_utils.errors import CommandFailed, ModuleError, ModuleUnreachable

QUERIES = ("EXPINFO", "EXPSTATUS")  # not worth an LSL command marker
STATUS_NAMES = {0: "connected", 10: "initialized", 20: "running", 30: "stopped"}


class ParticipantError(RuntimeError):
    """A session message failed for one participant; ``kind``: refused, timeout or unreachable."""

    def __init__(self, text: str, kind: str = "refused") -> None:
        super().__init__(text)
        self.kind = kind


class Participant(Protocol):
    name: str
    kind: str  # "module", "foreign" or "iblutil"
    address: str

    def call(self, msg: str, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]: ...
    def close(self) -> None: ...


class SessionRoom(Protocol):
    """What participants and the session logic need from the control room."""

    cfg: Any
    console: Any
    clocks: Any  # control_room.clocks.ClockMonitor, None before the modules are up

    def handle(self, module: str) -> Any: ...
    def send(self, module: str, cmd: str, *args: Any, **kwargs: Any) -> Any: ...  # room.send
    def publish(self, topic: str, **data: Any) -> None: ...


def foreign_reply() -> dict[str, Any]:
    return {"foreign": True, "status_name": "always ready"}


class ModuleParticipant:
    """A module of this mesh, reached through the control room's own connection to it."""

    def __init__(self, room: SessionRoom, name: str) -> None:
        self.room = room
        self.name = name
        h = room.handle(name)
        self.address = f"{h.host}:{h.port}"
        offered = {c.upper() for c in h.commands}
        self.foreign = h.protocol == "dareplane" or bool(offered and "EXPINFO" not in offered)

    @property
    def kind(self) -> str:
        return "foreign" if self.foreign else "module"

    def call(self, msg: str, kwargs: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.foreign:
            return foreign_reply()
        try:
            res = self.room.send(
                self.name, msg, kwargs, source="session", timeout=timeout, quiet=msg in QUERIES
            )
        except CommandFailed as exc:
            if "unknown command" in exc.error:
                self.foreign = True  # a module that does not take part: always ready
                return foreign_reply()
            raise ParticipantError(f"{self.name} refused {msg}: {exc.error}") from None
        except ModuleUnreachable as exc:
            if "no reply within" in str(exc):
                raise ParticipantError(
                    f"{self.name} ({self.address}) did not answer {msg} within {timeout:g} s",
                    "timeout",
                ) from None
            raise ParticipantError(
                f"{self.name}: {msg} not delivered: {exc}", "unreachable"
            ) from None
        except (ModuleError, KeyError) as exc:
            raise ParticipantError(f"{self.name}: {msg} failed: {exc}", "unreachable") from None
        return res if isinstance(res, dict) else {"result": res}

    def close(self) -> None:
        pass
