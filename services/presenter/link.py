"""Parent side of the child pipe: start the child, send requests, wait with timeouts.

Every wait here has a deadline, and the child's death wakes every waiter at once (the reader
thread sees end-of-file on the event pipe), so a command can never hang the server. STATUS is
answered from the last status event the child pushed, without a round trip.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from services.presenter import ipc
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger

log = get_logger("presenter.link")
ROOT = Path(__file__).resolve().parents[2]


class ChildLink:
    """One presenter child process and the two pipes to it."""

    def __init__(self, marker_stream: str, refresh_hz: float = 60.0, pace: str = "auto") -> None:
        self.marker_stream = marker_stream
        self.refresh_hz = refresh_hz
        self.pace = pace
        self.proc: subprocess.Popen[bytes] | None = None
        self.status: dict[str, Any] = {}
        self.exit_code: int | None = None
        self.fatal: str | None = None
        self.restarts = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._cmd_fd: int | None = None
        self._ready = False
        self._dead = True
        self._asked_to_stop = False  # an exit we asked for is news, not a warning

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self._dead and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        """Spawn the child (does not wait for it: see :meth:`wait_ready`)."""
        self._asked_to_stop = False
        cmd_r, cmd_w = os.pipe()
        evt_r, evt_w = os.pipe()
        env = dict(os.environ)
        env.setdefault("LP_NUM_THREADS", "1")  # llvmpipe: one thread renders steadier on 2 cores
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        argv = [
            sys.executable,
            "-m",
            "services.presenter.child",
            "--cmd-fd",
            str(cmd_r),
            "--evt-fd",
            str(evt_w),
            "--marker-stream",
            self.marker_stream,
            "--refresh-hz",
            str(self.refresh_hz),
            "--pace",
            self.pace,
            "--parent-pid",
            str(os.getpid()),
        ]
        try:
            self.proc = subprocess.Popen(
                argv, pass_fds=(cmd_r, evt_w), env=env, cwd=str(ROOT), stdin=subprocess.DEVNULL
            )
        finally:
            os.close(cmd_r)
            os.close(evt_w)
        with self._cond:
            self._cmd_fd, self._ready, self._dead = cmd_w, False, False
            self.exit_code, self.fatal, self.status = None, None, {}
        threading.Thread(
            target=self._read_events, args=(self.proc, evt_r), name="presenter-events", daemon=True
        ).start()
        log.info("child started", pid=self.proc.pid)

    def wait_ready(self, timeout: float) -> None:
        """Block until the child has imported PsychoPy, or raise :class:`CommandError`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._ready and not self._dead:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommandError(
                        f"presenter child not ready within {timeout} s "
                        "(importing PsychoPy); try OPEN again"
                    )
                self._cond.wait(left)
            if self._dead:
                raise CommandError(self.death_message())

    def death_message(self) -> str:
        why = f": {self.fatal}" if self.fatal else ""
        return (
            f"presenter child died (exit code {self.exit_code}){why}; send OPEN to start it again"
        )

    def request(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        """Send one command and wait for its reply; child errors become :class:`CommandError`."""
        with self._cond:
            if self._dead or self._cmd_fd is None:
                raise CommandError(
                    self.death_message()
                    if self.proc
                    else "presenter child is not running; send OPEN"
                )
            req_id = next(self._ids)
            slot: dict[str, Any] = {}
            self._pending[req_id] = slot
            fd = self._cmd_fd
        try:
            ipc.write_all(fd, ipc.encode({"id": req_id, "cmd": cmd, "args": args or {}}))
        except OSError as exc:
            with self._cond:
                self._pending.pop(req_id, None)
            raise CommandError(f"cannot reach presenter child ({exc}); send OPEN") from exc
        deadline = time.monotonic() + timeout
        with self._cond:
            while "reply" not in slot and not self._dead:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._pending.pop(req_id, None)
                    raise CommandError(
                        f"presenter child did not answer {cmd} within {timeout} s; if it stays "
                        'stuck, OPEN|{"restart": true} replaces it'
                    )
                self._cond.wait(left)
            self._pending.pop(req_id, None)
            if "reply" not in slot:
                raise CommandError(self.death_message())
        reply = slot["reply"]
        if not reply.get("ok"):
            raise CommandError(str(reply.get("error")))
        return reply.get("result")

    def _read_events(self, proc: subprocess.Popen[bytes], fd: int) -> None:
        try:
            for msgs in ipc.LineReader(fd).batches():
                with self._cond:
                    if proc is not self.proc:
                        break  # an old child's leftovers
                    for m in msgs:
                        self._dispatch(m)
                    self._cond.notify_all()
        finally:
            os.close(fd)
            try:
                code = proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(timeout=5.0)
            with self._cond:
                if proc is self.proc:
                    self._dead, self.exit_code = True, code
                    if self._cmd_fd is not None:
                        os.close(self._cmd_fd)
                        self._cmd_fd = None
                self._cond.notify_all()
            if code == 0 and self._asked_to_stop:
                log.info("child stopped", pid=proc.pid, exit_code=code)
            else:
                log.warning("child exited", pid=proc.pid, exit_code=code)

    def _dispatch(self, m: dict[str, Any]) -> None:
        if "id" in m and m["id"] is not None:
            slot = self._pending.get(m["id"])
            if slot is not None:
                slot["reply"] = m
        elif m.get("event") == "status":
            self.status = m.get("status") or {}
        elif m.get("event") == "ready":
            self._ready = True
        elif m.get("event") == "fatal":
            self.fatal = m.get("error")

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL the child (e.g. stuck in user code) and wait until the reader saw it go."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._dead and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to shut down; kill it if it does not go."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self._asked_to_stop = True
        try:
            self.request("shutdown", timeout=timeout)
        except CommandError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
