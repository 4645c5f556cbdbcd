"""Control rooms in documented shell blocks: `control-room up CONFIG` as the docs show it (in a
terminal of its own, until Ctrl-C) and a control room the harness starts for a block (room=).

Either runs on this run's ports, never on a mesh running on this machine: `up`'s CONFIG is
copied with the mesh ports replaced like the block's own (the control room's port, event and log
ports added when the config leaves them at their defaults), the dashboard on a free port, and the
block's clients find it through $CONTROL_ROOM_PORT. At the end of the block it gets SIGINT, what
Ctrl-C sends, and must then stop by itself with status 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from conftest import free_port, stop_process_group
from doc_sandbox import Mesh

UP_RE = re.compile(r"(?:^|[\s/])(?:control-room|-m control_room) up (\S+)")
#: [control_room] keys that default to a fixed port, with that port (replaced like the block's)
CONTROL_PORTS = (("port", 9010), ("pub_port", 9021), ("log_port", 9020))
READY_TEXT = "\nrunning; "  # what `up` prints once every module is ready
HOSTED = """[control_room]
port = {port}
pub_port = 0
log_port = 0
web = false
log_dir = "logs"
{lines}

[modules.echo]
module = "tests.cr_modules.echo"
port = 0
"""


class Room:
    """A running control room: its process, where its output goes and its port."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = 60.0) -> str | None:
        """None once it says it is running, else why not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_TEXT in self.output():
                return None
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode} before it was running"
            time.sleep(0.05)
        return f"not running within {timeout:.0f} s"

    def interrupt(self) -> str | None:
        """Ctrl-C: SIGINT to its process group; None if it then ended with status 0."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            stop_process_group(self.proc)
            return "still running 30 s after SIGINT (Ctrl-C)"
        return None if code == 0 else f"exit status {code} after SIGINT (Ctrl-C)"


def up_config(cmd: str) -> str | None:
    """The CONFIG of a `control-room up CONFIG` command, else None."""
    m = UP_RE.search(cmd)
    return m.group(1) if m else None


def ported(src: Path, dest: Path, mesh: Mesh, mapping: dict[int, int]) -> int:
    """Write ``src`` to ``dest`` with this run's ports (``mapping``, updated); its control port."""
    text, new = mesh.ports(src.read_text(), mapping)
    mapping.update(new)
    table = tomllib.loads(text).get("control_room")
    missing = [(k, p) for k, p in CONTROL_PORTS if k not in (table or {})]
    lines = "".join(f"{k} = {mapping.setdefault(p, free_port())}\n" for k, p in missing)
    if table is None:
        text += f"\n[control_room]\n{lines}"
    else:
        text = re.sub(r"(?m)^\[control_room\][ \t]*(#.*)?\n", lambda m: m.group(0) + lines, text)
    dest.write_text(text)
    return int(tomllib.loads(text)["control_room"]["port"])


class Rooms:
    """What one command of a block needs of control rooms (``rooms``: the block's, in order)."""

    def __init__(
        self,
        rooms: list[Room],
        mesh: Mesh,
        mapping: dict[int, int],
        env: dict[str, str],
        cwd: Path,
        tag: str,
    ) -> None:
        self.rooms, self.mesh, self.mapping, self.env, self.cwd, self.tag = (
            rooms, mesh, mapping, env, cwd, tag
        )  # fmt: skip

    def before(self, cmd: str, hosted: str | None) -> tuple[bool, str | None]:
        """Start the room ``hosted`` (room=) before the block's first control-room command, and
        run `control-room up CONFIG` on a ported copy. (True if ``cmd`` was that `up`, why a
        room did not start, with its output)."""
        why = None
        if hosted is not None and not self.rooms and re.search(r"control[-_]room", cmd):
            why = self._start(self._hosted_argv(hosted))
        if not why and up_config(cmd):
            return True, self._start(self._up_argv(cmd))
        return False, why

    def _start(self, argv: list[str] | str) -> str | None:
        if isinstance(argv, str):
            return argv  # why there is nothing to start
        log = self.mesh.sandbox.base / "tmp" / f"room-{self.tag}-{len(self.rooms)}.log"
        self.rooms.append(Room(argv, self.env, self.cwd, log))
        why = self.rooms[-1].wait_ready()
        return f"{why}:\n{self.rooms[-1].output()[-2000:]}" if why else None

    def _up_argv(self, cmd: str) -> list[str] | str:
        """The block's `control-room up CONFIG` on a ported copy; sets $CONTROL_ROOM_PORT."""
        m = UP_RE.search(cmd)
        assert m is not None
        src = self.cwd / m.group(1)
        if not src.is_file():
            return f"config {m.group(1)} does not exist"
        dest = self.mesh.sandbox.base / "tmp" / f"up-{self.tag}-{src.name}"
        self.env["CONTROL_ROOM_PORT"] = str(ported(src, dest, self.mesh, self.mapping))
        return ["bash", "-c", f"{cmd[: m.start(1)]}{dest}{cmd[m.end(1) :]} --web-port 0"]

    def _hosted_argv(self, lines: str) -> list[str]:
        """A control room of one echo module with ``lines`` in its [control_room] table."""
        port = free_port()
        config = self.mesh.sandbox.base / "tmp" / f"room-{self.tag}.toml"
        config.write_text(HOSTED.format(port=port, lines=lines))
        self.env["CONTROL_ROOM_PORT"] = str(port)
        return [sys.executable, "-m", "control_room", "up", str(config)]
