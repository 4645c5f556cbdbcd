"""`control-room run CONFIG --attach` drives modules that something else started (docker compose)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_run_attach_uses_running_modules_and_leaves_them_running(
    tmp_path: Path, lsl_name: str, module_process
) -> None:
    """With --attach the control room starts nothing, commands the module, and does not close it."""
    proc, port = module_process("tests.cr_modules.echo", "--name", "a")
    cfg = tmp_path / "mesh.toml"
    cfg.write_text(
        f"""
[control_room]
port = 0
pub_port = 0
log_port = 0
web_port = 0
log_dir = "{tmp_path / "logs"}"
marker_stream = "{lsl_name}"

[modules.a]
module = "tests.cr_modules.echo"
port = {port}

[macros.experiment]
[[macros.experiment.steps]]
send = "a"
cmd = "ECHO"
kwargs = {{ note = "from the attached control room" }}
"""
    )
    res = subprocess.run(
        [sys.executable, "-m", "control_room", "run", str(cfg), "--attach"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])["summary"]
    assert summary["steps_ok"] == 1
    assert proc.poll() is None, "an attached module must not be closed by the control room"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"HISTORY\n")
        out = sock.makefile().readline()
    assert "from the attached control room" in out
