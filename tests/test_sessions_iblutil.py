"""Interoperating with iblrig (issue 14), both directions, with iblutil from PyPI as the peer.

- an iblrig behaviour PC drives our mesh: iblutil's ``Services`` (what iblrig's NetworkSession
  uses) sends EXPINFO ... EXPCLEANUP to the control room's bridge, and our modules follow with
  its experiment reference;
- our control room drives an iblutil rig (an ``EchoProtocol`` server, as an IBL camera or
  Timeline PC runs it) as a session participant, the rig being the main sync; a rig that claims
  main sync next to our recorder is an error naming both; a rig that vanishes mid-session
  interrupts the session.

iblutil is installed by ``make install`` (``pip install --no-deps iblutil colorlog``: the
network part needs nothing else, and its full dependency set is 700 MB).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from cr_helpers import wait_for

from control_room.room import ControlRoom
from control_room.session import SessionError

app = pytest.importorskip(
    "iblutil.io.net.app",
    reason="iblutil is not installed (make install adds it: pip install --no-deps iblutil colorlog)",
)
base = pytest.importorskip("iblutil.io.net.base")
TODAY = _dt.date.today().isoformat()
RECORDER = '\n[modules.recorder]\nmodule = "services.recorder"\n'


class Loop:
    """An asyncio loop on a thread, for iblutil's coroutines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture
def room_with(
    room_factory: Callable[..., ControlRoom], tmp_path: Path
) -> Callable[[str], ControlRoom]:
    return lambda body: room_factory(body, extra=f'data_dir = "{tmp_path / "data"}"')


# -- an iblrig PC drives our mesh ---------------------------------------------------------------
def _drive(loop: Loop, port: int, ref: str, during: Callable[[], None]) -> dict[str, Any]:
    """The message sequence of iblrig's NetworkSession, with iblutil's Services."""

    async def go() -> dict[str, Any]:
        com = await app.EchoProtocol.client(f"udp://127.0.0.1:{port}", name="mesh")
        services = app.Services([com], timeout=30)
        try:
            out = {"info": await services.info(base.ExpStatus.CONNECTED, {"subject": "mouse01"})}
            main = [r[-1] for r in out["info"].values() if r[-1]["main_sync"]]
            exp_ref = main[0]["exp_ref"] if main else ref
            out["init"] = await services.init({"exp_ref": exp_ref})
            out["start"] = await services.start(exp_ref)
            out["status"] = await services.status(base.ExpStatus.RUNNING)
            await asyncio.get_running_loop().run_in_executor(None, during)
            out["end"] = await services.stop()
            out["cleanup"] = await services.cleanup()
            return out
        finally:
            services.close()

    return loop.run(go())


def test_an_iblrig_pc_drives_the_mesh_with_its_exp_ref(
    room_with: Callable[[str], ControlRoom], loop: Loop, tmp_path: Path
) -> None:
    port = free_port()
    room = room_with(RECORDER + f'\n[session]\niblutil_listen = "udp://127.0.0.1:{port}"\n')
    ref = f"{TODAY}_3_mouse01"  # numbered by the iblrig side's own main sync
    seen: dict[str, Any] = {}

    def during() -> None:
        seen.update(room.sessions.summary())

    out = _drive(loop, port, ref, during)
    status, info = out["info"]["mesh"]
    assert status == 0
    assert info["main_sync"] is False
    assert info["exp_ref"] is None
    assert out["init"]["mesh"][0]["status"] == 10
    assert out["start"]["mesh"][0] == ref
    assert out["status"]["mesh"] == [20]
    assert seen["exp_ref"] == ref
    assert seen["modules"]["recorder"]["status"] == "running"
    assert out["end"]["mesh"][0]["status"] == 30
    folder = tmp_path / "data" / "mouse01" / TODAY / "003"
    meta = json.loads((folder / "session.json").read_text())
    assert meta["started_by"] == "iblrig"
    assert meta["main_sync"] == "iblrig"  # the reference came from the iblrig side
    assert meta["start"]["source"] == "recorder"  # times on the recording's own clock
    assert meta["status"] == "ended"
    assert (folder / f"{ref}.xdf").is_file()
    assert room.sessions.run is None


def test_the_mesh_can_be_the_main_sync_of_an_iblrig_session(
    room_with: Callable[[str], ControlRoom], loop: Loop, tmp_path: Path
) -> None:
    port = free_port()
    room = room_with(
        RECORDER
        + f'\n[session]\niblutil_listen = "udp://127.0.0.1:{port}"\niblutil_main_sync = true\n'
    )
    out = _drive(loop, port, "unused", lambda: None)
    info = out["info"]["mesh"][-1]
    assert info["main_sync"] is True  # what iblrig's init_mixin_network counts
    assert info["exp_ref"] == f"{TODAY}_1_mouse01"  # our recorder's number
    assert out["start"]["mesh"][0] == f"{TODAY}_1_mouse01"
    assert room.sessions.last["status"] == "ended"
    assert (tmp_path / "data" / "mouse01" / TODAY / "001" / "session.json").is_file()


def test_a_failing_step_is_reported_the_iblutil_way(
    room_with: Callable[[str], ControlRoom], loop: Loop
) -> None:
    """A step the mesh cannot do comes back as iblutil's error message ([0, text, event])."""
    port = free_port()
    room_with(RECORDER + f'\n[session]\niblutil_listen = "udp://127.0.0.1:{port}"\n')
    errors: list[Any] = []

    async def go() -> None:
        com = await app.EchoProtocol.client(f"udp://127.0.0.1:{port}", name="mesh")
        com.assign_callback(0, lambda data, addr: errors.append(data))
        try:
            await com.init({"exp_ref": "not-a-reference"})
            await asyncio.sleep(0.5)
        finally:
            com.close()

    loop.run(go())
    assert len(errors) == 1
    assert "exp_ref must look like 'yyyy-mm-dd_N_subject'" in errors[0][0]
    assert errors[0][1] == base.ExpMessage.EXPINIT


# -- our control room drives an iblutil rig -----------------------------------------------------
class Rig:
    """An iblutil rig (``EchoProtocol.server``) that answers every message like an IBL aux PC,
    claims main sync with ``proposal``, and remembers what it was sent."""

    def __init__(self, loop: Loop, proposal: str | None) -> None:
        self.port = free_port()
        self.seen: list[tuple[str, Any]] = []
        self.loop, self.proposal = loop, proposal
        self.com = loop.run(app.EchoProtocol.server(f"udp://127.0.0.1:{self.port}", name="rig"))
        self.com.assign_callback(base.ExpMessage.any(), self._on)

    def _on(self, data: Any, addr: Any, event: Any) -> None:
        E, c = base.ExpMessage, self.com
        self.seen.append((event.name, data))
        if event is E.EXPINFO:
            info = {"exp_ref": self.proposal, "main_sync": self.proposal is not None}
            reply = c.info(base.ExpStatus.CONNECTED, info, addr=addr)
        elif event is E.EXPINIT:
            reply = c.init({"status": 10}, addr=addr)
        elif event is E.EXPSTART:
            reply = c.start(data[0], {"status": 20}, addr=addr)
        elif event is E.EXPSTATUS:
            reply = c.status(base.ExpStatus.RUNNING, addr=addr)
        elif event in (E.EXPEND, E.EXPINTERRUPT):
            reply = c.stop({"status": 30}, immediately=event is E.EXPINTERRUPT, addr=addr)
        elif event is E.EXPCLEANUP:
            reply = c.cleanup({"status": 0}, addr=addr)
        else:
            return
        asyncio.ensure_future(reply)

    def names(self) -> list[str]:
        return [n for n, _ in self.seen if n != "EXPSTATUS"]

    def close(self) -> None:
        self.loop.loop.call_soon_threadsafe(self.com.close)


def test_the_control_room_drives_an_iblutil_rig_that_is_main_sync(
    room_with: Callable[[str], ControlRoom], loop: Loop, tmp_path: Path
) -> None:
    rig = Rig(loop, proposal=f"{TODAY}_5_mouse01")
    room = room_with(
        RECORDER + '\n[session]\nmain_sync = "timeline"\nstatus_every_s = 0.2\n'
        f'remote_rigs = {{ timeline = "udp://127.0.0.1:{rig.port}" }}\n'
    )
    try:
        res = room.sessions.start("mouse01")
        assert res["exp_ref"] == f"{TODAY}_5_mouse01"
        assert list(res["modules"]) == ["timeline", "recorder"]
        wait_for(lambda: any(n == "EXPSTATUS" for n, _ in rig.seen), "an EXPSTATUS heartbeat")
        res = room.sessions.stop()
    finally:
        rig.close()
    assert res["status"] == "ended", res
    assert rig.names() == ["EXPINFO", "EXPINIT", "EXPSTART", "EXPEND", "EXPCLEANUP"]
    init = dict(rig.seen)["EXPINIT"][0]
    assert init["exp_ref"] == f"{TODAY}_5_mouse01"
    assert dict(rig.seen)["EXPSTART"][0] == f"{TODAY}_5_mouse01"
    meta = json.loads((tmp_path / "data" / "mouse01" / TODAY / "005" / "session.json").read_text())
    assert meta["main_sync"] == "timeline"
    assert meta["modules"]["timeline"]["kind"] == "iblutil"
    assert meta["modules"]["timeline"]["status"] == "stopped"
    assert meta["modules"]["recorder"]["main_sync"] is False


def test_an_iblutil_rig_and_the_recorder_both_claiming_main_sync(
    room_with: Callable[[str], ControlRoom], loop: Loop
) -> None:
    rig = Rig(loop, proposal=f"{TODAY}_5_mouse01")
    room = room_with(
        RECORDER + f'\n[session]\nremote_rigs = {{ timeline = "udp://127.0.0.1:{rig.port}" }}\n'
    )
    try:
        with pytest.raises(
            SessionError, match="2 participants claim main sync: recorder, timeline"
        ):
            room.sessions.start("mouse01")
    finally:
        rig.close()
    assert rig.names() == ["EXPINFO"]


def test_a_rig_that_vanishes_mid_session_interrupts_it(
    room_with: Callable[[str], ControlRoom], loop: Loop
) -> None:
    rig = Rig(loop, proposal=None)
    room = room_with(
        RECORDER + "\n[session]\nstatus_every_s = 0.2\n"
        "timeouts = { status = 0.5, interrupt = 1, cleanup = 1 }\n"
        f'remote_rigs = {{ camera = "udp://127.0.0.1:{rig.port}" }}\n'
    )
    room.sessions.start("mouse01")
    rig.close()  # the camera PC is gone
    wait_for(lambda: room.sessions.run is None, "the session to be interrupted", timeout=30)
    last = room.sessions.last
    assert last["status"] == "interrupted"
    assert last["modules"]["camera"]["status"] == "lost"
    assert "camera" in last["interrupted"]["message"]
    assert "no answer to EXPSTATUS 3 times" in last["modules"]["camera"]["error"]
    assert last["modules"]["recorder"]["status"] == "stopped"
