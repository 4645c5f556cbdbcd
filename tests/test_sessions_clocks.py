"""A session during which a participant's host clock drifts (issue 14, docs/sessions.md
``clocks``): the control room measures the offset at the start, its own monitor sees the step
while the session runs (a warning), and although the clock is back in step by the end, the
session's ``problems`` say how far it drifted and ``clocks`` keeps the offsets at both ends.

The drifting host is tests/cr_modules/drift_module.py (why a module and not a real second clock:
its notes). The control room, its clock monitor, the session and the module runtime are real."""

from __future__ import annotations

import datetime as _dt
import json
import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from cr_helpers import wait_for

from control_room.room import ControlRoom

TODAY = _dt.date.today().isoformat()
SHIFT_MS = 5.0  # well past the 1 ms limit and any measuring noise between two local processes
MESH = """
[modules.rig]
module = "tests.cr_modules.drift_module"
args = ["--name", "rig"]
stop_timeout_s = 1.0

[modules.good]
module = "tests.cr_modules.exp_module"
args = ["--name", "good"]
stop_timeout_s = 1.0

[session]
main_sync = "control_room"
status_every_s = 0.3
"""


def test_a_host_clock_that_drifts_during_the_session_is_a_problem(
    room_factory: Callable[..., ControlRoom], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    room = room_factory(MESH, extra=f'data_dir = "{data}"')
    host = socket.gethostname()  # the rig module runs here; the monitor measures it first
    started = room.sessions.start("mouse01")
    assert list(started["modules"]) == ["rig", "good"]

    room.send("rig", "SHIFT_CLOCK", {"ms": SHIFT_MS})  # the rig's clock steps mid-session
    warned = wait_for(
        lambda: room.clock_offsets().get(host, {}).get("warning"),
        "the clock monitor's own round to see the step",
        timeout=15,
        every=0.2,
    )
    # its clock ahead: the offset to add to its timestamps (LSL's sign) went down by SHIFT_MS
    step = re.search(
        rf"clock of {re.escape(host)} \(127\.0\.0\.1\) drifted ([-+][\d.]+) ms since", warned
    )
    assert step is not None, warned
    assert float(step[1]) == pytest.approx(-SHIFT_MS, abs=1.0), warned
    room.send("rig", "SHIFT_CLOCK", {"ms": 0.0})  # back in step before the session ends
    ended = room.sessions.stop()

    assert ended["status"] == "ended"  # a drift is reported, it does not interrupt
    (problem,) = [p for p in ended["problems"] if "drifted" in p]
    assert problem.startswith(f"clock of {host} drifted up to ")
    assert "during the session (limit 1.0 ms)" in problem
    meta = json.loads((data / "mouse01" / TODAY / "001" / "session.json").read_text())
    assert meta["problems"] == ended["problems"]
    start, end = meta["clocks"]["start"][host], meta["clocks"]["end"][host]
    assert start["modules"] == end["modules"] == ["good", "rig"]
    assert start["drift_ms"] == start["max_drift_ms"] == 0.0  # the start is the reference
    assert start["offset_ms"] == start["reference_ms"]
    assert abs(end["drift_ms"]) < 1.0, end  # in step again at the end ...
    assert SHIFT_MS - 1.0 < end["max_drift_ms"] < SHIFT_MS + 1.0, end  # ... but not during it
    assert f"{end['max_drift_ms']:.3f} ms" in problem
    assert end["reference_ms"] == start["offset_ms"]
    assert end["samples"] > start["samples"]
    logged = room.get_logs("control_room", 0, 0)["records"]
    assert any(f"clock of {host} (127.0.0.1) drifted" in str(r.get("event")) for r in logged)
