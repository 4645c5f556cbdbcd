"""Start and stop an emulator child process for ``--emulator`` (the service's fake hardware)."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class EmulatorProcess:
    """``python -m services.bpod.emulator`` on a pty linked at :attr:`link`; restartable."""

    def __init__(self, machine_type: int = 3, firmware: int = 23, script: str = "") -> None:
        self.machine_type = machine_type
        self.firmware = firmware
        self.script = script
        self._dir = Path(tempfile.mkdtemp(prefix="bpod-emu-"))
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
        self.stop()
        for p in self._dir.glob("*"):
            with contextlib.suppress(OSError):
                p.unlink()
        with contextlib.suppress(OSError):
            self._dir.rmdir()
