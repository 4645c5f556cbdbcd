"""The dashboard at shutdown: it lets go of its LSL inlets before the modules stop.

In a file of its own: another control room alive in this process (a module-scoped fixture of
another file) would follow the same Bpod stream and report its end itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dash_helpers import running_room
from helpers import wait_for


def test_clean_shutdown_leaves_liblsl_nothing_to_report(tmp_path: Path, capfd: Any) -> None:
    """The dashboard follows the Bpod's trials with no page open; when the mesh stops, its inlet
    is closed before the Bpod's outlet ends, so liblsl does not print "Stream transmission broke
    off" (an error line at the end of a good `make run`, seen before this was fixed)."""
    body = """
[modules.bpod]
module = "services.bpod"
args = ["--emulator"]
ready_timeout_s = 20
"""
    with running_room(tmp_path, body) as room:
        assert room.status()["modules"]["bpod"]["state"] == "ready"
        wait_for(lambda: room.web.monitor.trials.following, timeout=15, what="trial feed opened")
    out, err = capfd.readouterr()
    assert "transmission broke off" not in out + err, (out + err)[-2000:]
