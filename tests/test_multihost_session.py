"""A far host that vanishes during a session (issue 14; docs/sessions.md and docs/multi-host.md,
"a rig vanishes mid-session"): the control room in namespace A runs a session with a recorder in
A and a streamer it started over ssh in namespace B (tests/netns_helpers.py), then B's link goes
down. The session must be interrupted at once with a problem that names the module and its host,
the recorder must stop recording (EXPINTERRUPT) and keep a readable XDF with B's samples up to
then, session.json must say all of it, and the module in B must end by itself.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for
from netns_helpers import B_ADDR, B_HOSTNAME, TwoHosts, skip_reason, two_hosts
from test_multihost import STREAMER_PORT, Mesh, recorder, remote

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))
TODAY = _dt.date.today().isoformat()


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHosts]:
    with two_hosts(tmp_path_factory.mktemp("two_hosts")) as h:
        yield h


@pytest.fixture
def mesh(hosts: TwoHosts, tmp_path: Path) -> Iterator[Any]:
    made: list[Mesh] = []

    def make(body: str, control: str = "") -> Mesh:
        made.append(Mesh(hosts, tmp_path, body, control))
        return made[-1]

    yield make
    for m in made:
        m.stop()


def session_table(stream: str) -> str:
    """Every module takes part; the recorder records B's stream only, named by its host."""
    return (
        "\n[session]\nstatus_every_s = 0.5\n[session.options.recorder]\n"
        f'streams = [{{ name = "{stream}", host = "{B_HOSTNAME}" }}]\n'
    )


def test_far_host_vanishing_mid_session_interrupts_it_naming_module_and_host(
    hosts: TwoHosts, mesh: Any
) -> None:
    stream, base = f"eeg_{uuid.uuid4().hex[:6]}", hosts.tmp / uuid.uuid4().hex[:6]
    m = mesh(
        remote("streamer", "services.mockup_streamer", STREAMER_PORT, hosts, 'restart = "no"')
        + recorder(base)  # records into base/data, the control room's data folder too
        + session_table(stream),
        control=f'data_dir = "{base / "data"}"',
    )
    m.wait_ready()
    m.send("streamer", "START", {"stream": stream, "channels": 4, "srate": 250, "markers": False})
    out = m.cli("session", "start", "--subject", "mouse01")
    assert f"session {TODAY}_1_mouse01: running" in out, out
    folder = base / "data" / "mouse01" / TODAY / "001"
    wait_for(
        lambda: m.send("recorder", "STATUS")["counts"].get(stream, 0) > 250,
        "samples from B in the session's recording",
        timeout=30,
        every=0.3,
    )
    hosts.set_link(up=False)
    t0 = time.monotonic()
    try:
        last = wait_for(
            lambda: json.loads(m.cli("session", "status", "--json")).get("last"),
            "the session to be interrupted",
            timeout=20,
            every=0.3,
        )
        took = time.monotonic() - t0
        # the module in B ends by itself: sshd drops the dead session and its stdin closes
        wait_for(lambda: not hosts.others_in_b(), "the module in B to end", timeout=20, every=0.3)
    finally:
        hosts.set_link(up=True)
    assert took < 10, f"the session was interrupted only after {took:.1f} s"
    lost = f"streamer ({B_ADDR}:{STREAMER_PORT}) lost"
    assert last["status"] == "interrupted", last
    assert last["interrupted"]["error"] == "participant lost"
    assert last["interrupted"]["message"].startswith(f"streamer ({B_ADDR}:{STREAMER_PORT})")
    (problem,) = [p for p in last["problems"] if p.startswith(lost)]
    # why, as the supervisor saw it first: no UP answered, or the ssh client gave the host up
    assert "its host is unreachable" in problem or "lost the host" in problem, problem
    assert last["modules"]["streamer"]["status"] == "lost"
    assert last["modules"]["recorder"]["status"] == "stopped"

    # the user was told at once, on the console of `control-room up`
    assert f"session {TODAY}_1_mouse01: {lost}" in m.log()
    assert "interrupting the session" in m.log()
    # nothing is left recording
    assert m.send("recorder", "STATUS")["recording"] is False
    stopped = m.cli("session", "stop", check=False)  # what a user types next: told again
    assert "interrupted: participant lost" in stopped, stopped
    assert f"problem: {lost}" in stopped, stopped

    meta = json.loads((folder / "session.json").read_text())
    assert {k: meta[k] for k in ("status", "problems")} == {
        "status": "interrupted",
        "problems": last["problems"],
    }
    assert meta["end"] is not None
    assert [e["module"] for e in meta["events"] if e["what"] == "participant_lost"] == ["streamer"]
    assert meta["modules"]["recorder"]["cleaned_up"] is True
    assert "cleaned_up" not in meta["modules"]["streamer"]  # nothing was sent to the lost host
    rec = meta["modules"]["recorder"]["steps"]["EXPINTERRUPT"]
    assert rec["counts"][stream] > 250

    import pyxdf

    streams, head = pyxdf.load_xdf(str(folder / f"{TODAY}_1_mouse01.xdf"))
    assert head["info"]["exp_ref"] == [f"{TODAY}_1_mouse01"]
    (eeg,) = streams
    assert eeg["info"]["hostname"] == [B_HOSTNAME]
    assert len(eeg["time_series"]) == rec["counts"][stream]
