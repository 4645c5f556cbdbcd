"""Start and stop an emulator child process for ``--emulator`` (the service's fake hardware).

The pty links live in a temporary folder ``bpod-emu-<service pid>-*``. Three ways keep those
folders from piling up: CLOSE removes it; the emulator child removes it when it exits, also
when it exits because the service died (even by SIGKILL, which runs no clean-up in the
service); and a service starting up removes folders whose service is gone, for the case where
both processes were killed at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFIX = "bpod-emu-"
_OWNER = re.compile(rf"^{PREFIX}(\d+)-")


class EmulatorProcess:
    """``python -m services.bpod.emulator`` on a pty linked at :attr:`link`; restartable."""

    def __init__(self, machine_type: int = 3, firmware: int = 23, script: str = "") -> None:
        self.machine_type = machine_type
        self.firmware = firmware
        self.script = script
        sweep_stale_folders()
        self._dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        self.link = self._dir / "bpod"
        self.proc: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive else None

    def start(self, timeout: float = 15.0) -> str:
        """Start (or restart) the child and wait until it printed READY; returns the port path."""
        self.stop()
        self._dir.mkdir(exist_ok=True)  # a previous emulator removed it when it exited
        argv = [
            sys.executable,
            "-m",
            "services.bpod.emulator",
            "--link",
            str(self.link),
            "--machine-type",
            str(self.machine_type),
            "--firmware",
            str(self.firmware),
            "--parent-pid",
            str(os.getpid()),
            "--remove-dir",
        ]
        if self.script:
            argv += ["--script", self.script]
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("READY"):
                    return str(self.link)
                if not line and self.proc.poll() is not None:
                    break
        rc = self.proc.poll()
        self.stop()
        raise RuntimeError(f"emulator did not start (exit code {rc}); see the log above")

    def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def cleanup(self) -> None:
        """Stop the child and remove the links' folder."""
        self.stop()
        remove_link_folder(self._dir)


def remove_link_folder(folder: Path) -> None:
    """Remove an emulator's link folder: only symlinks (and nothing else) are deleted in it."""
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            if p.is_symlink():
                p.unlink()
        folder.rmdir()


def sweep_stale_folders(root: str | Path | None = None) -> list[Path]:
    """Remove ``bpod-emu-<pid>-*`` folders (in the temporary folder) whose service is gone."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        m = _OWNER.match(folder.name)
        if not folder.is_dir() or folder.is_symlink():
            continue
        if m is not None and _pid_alive(int(m.group(1))):
            continue
        if m is None and not _abandoned(folder):  # named before the pid was in the name
            continue
        remove_link_folder(folder)
        if not folder.exists():
            removed.append(folder)
    return removed


def _abandoned(folder: Path) -> bool:
    """Ours, and every link in it points at a pty that no longer exists."""
    try:
        if folder.stat().st_uid != os.getuid():
            return False
        return all(p.is_symlink() and not p.exists() for p in folder.iterdir())
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, and not our folder to touch
        return True
    return True
