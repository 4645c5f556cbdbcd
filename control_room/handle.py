"""One supervised module: its process, output capture, readiness check and graceful stop.

Why so careful with output: a crashing module's last words are usually a traceback on stderr;
both pipes are read line by line on their own threads until EOF, so nothing it printed is lost
even when it dies during start-up.
"""

from __future__ import annotations

import collections
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from control_room.config import ModuleSpec
from control_room.ports import free_port, port_holder, port_in_use
from control_room.spawn import spawn
from shared_utils.errors import CommandFailed, ModuleError, ModuleUnreachable
from shared_utils.platform.processes import (
    Scheduling,
    parse_sched,
    scheduling_problem,
    signal_group,
)
from shared_utils.protocol import dareplane
from shared_utils.protocol.client import ModuleClient
from shared_utils.protocol.commands import unknown_command_message

ROOT = Path(__file__).resolve().parent.parent
LineSink = Callable[[str, str, str], None]  # (module, "stdout"|"stderr", line)


class StartError(RuntimeError):
    """A module could not be started or did not become ready; the text says why."""


class ModuleHandle:
    """State and process of one module. States: pending, starting, ready, crashed, restarting,
    failed, stopping, stopped."""

    def __init__(self, spec: ModuleSpec, line_sink: LineSink, extra_env: dict[str, str]) -> None:
        self.spec = spec
        self.name = spec.name
        self.host = spec.host
        self.port = spec.port
        self.protocol = spec.protocol
        self.state = "pending"
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.exit_code: int | None = None
        self.ready_s: float | None = None
        self.started_at: float | None = None
        self.error: str | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self.commands: list[str] = []  # from GET_PCOMMS (or the config's pcomms)
        self._sink = line_sink
        self._extra_env = extra_env
        self._pumps: list[threading.Thread] = []
        self._client: ModuleClient | None = None
        self._client_lock = threading.Lock()
        # Dareplane modules serve one connection at a time and write callbacks on it, so once
        # ready all their traffic goes through the router's link (set by CallbackRouter.attach).
        self.link: Any = None

    # -- info ------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def owned(self) -> bool:
        return self.spec.kind != "attach"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "kind": self.spec.kind,
            "host": self.host,
            "port": self.port,
            "pid": self.pid,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "ready_s": self.ready_s,
            "protocol": self.protocol,
            "error": self.error,
            "commands": self.commands,
            "scheduling": self.scheduling().describe() or None,
        }

    # -- start -----------------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the process (or check an attached module's port); does not wait for readiness."""
        self.error = None
        self.exit_code = None
        if not self.owned:
            self.started_at = time.monotonic()
            return
        if self.port == 0:
            self.port = free_port(self.host)  # chosen once: a restart keeps it, callers rely on it
        elif port_in_use(self.host, self.port):
            who = port_holder(self.port) or f"port {self.port} is in use"
            raise StartError(
                f"{self.name}: cannot start on {self.host}:{self.port}: {who}. Stop that process "
                f"or choose another port (port = 0 picks a free one)"
            )
        argv = [self._fill(a) for a in self.spec.argv]
        sched = self.scheduling()
        problem = scheduling_problem(sched)
        if problem:
            raise StartError(f"{self.name}: cannot start with {problem}")
        env = {**os.environ, **self._extra_env, **self.spec.env}
        env["MESH_PARENT_PID"] = str(os.getpid())
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        try:
            self.proc = spawn(
                argv,
                scheduling=sched,
                cwd=self.spec.cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise StartError(f"{self.name}: cannot run {argv[0]!r}: {why}") from None
        self.started_at = time.monotonic()
        self._pumps = [
            threading.Thread(target=self._pump, args=(s, n), name=f"{self.name}-{n}", daemon=True)
            for s, n in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr"))
        ]
        for t in self._pumps:
            t.start()

    def scheduling(self) -> Scheduling:
        """The CPU affinity and priority the config gives this module (empty: inherited)."""
        s = self.spec
        policy, prio = parse_sched(s.sched) if s.sched else (None, 0)
        cpus = tuple(s.cpu_affinity) if s.cpu_affinity is not None else None
        return Scheduling(cpus=cpus, nice=s.nice, policy=policy, priority=prio)

    def _fill(self, arg: str) -> str:
        return (
            arg.replace("{port}", str(self.port))
            .replace("{host}", self.host)
            .replace("{name}", self.name)
        )

    def _pump(self, stream: Any, name: str) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                continue
            self.tail.append(line)
            self._sink(self.name, name, line)
        stream.close()

    def flush_output(self, timeout: float = 2.0) -> None:
        """Wait until both pipes reached EOF (after the process exited)."""
        for t in self._pumps:
            t.join(timeout)

    def wait_ready(
        self, stop: threading.Event, stream_check: Callable[[str, float], bool]
    ) -> float:
        """Block until the readiness check passes; returns seconds since launch.

        Raises :class:`StartError` with the module's last output if it exits first or times out.
        """
        ready = self.spec.ready
        deadline = time.monotonic() + ready.timeout_s
        if ready.up:
            while not self._try_up():
                self._check_still_starting(
                    stop, deadline, f"no answer to UP on {self.host}:{self.port}"
                )
                time.sleep(0.02)
        if ready.stream:
            while not stream_check(ready.stream, min(0.5, max(0.05, deadline - time.monotonic()))):
                self._check_still_starting(
                    stop, deadline, f"LSL stream {ready.stream!r} did not appear"
                )
        assert self.started_at is not None
        self.ready_s = round(time.monotonic() - self.started_at, 3)
        return self.ready_s

    def _check_still_starting(self, stop: threading.Event, deadline: float, failure: str) -> None:
        """One readiness wait, one set of reasons to give up: the module exited, the start was
        cancelled, or ``deadline`` passed (``failure`` says what was still missing)."""
        self._check_alive_or_raise()
        if stop.is_set():
            raise StartError(f"{self.name}: start cancelled")
        if time.monotonic() > deadline:
            raise StartError(
                f"{self.name}: {failure} within {self.spec.ready.timeout_s} s{self._tail_text()}"
            )

    def _check_alive_or_raise(self) -> None:
        if self.owned and self.proc is not None and self.proc.poll() is not None:
            self.exit_code = self.proc.returncode
            self.flush_output(1.0)
            raise StartError(
                f"{self.name}: exited with code {self.exit_code} before it was ready"
                f"{self._tail_text()}"
            )

    def _tail_text(self, n: int = 12) -> str:
        lines = list(self.tail)[-n:]
        return ("; last output:\n    " + "\n    ".join(lines)) if lines else ""

    def _try_up(self) -> bool:
        try:
            with ModuleClient(self.host, self.port, timeout=1.0, protocol=self.protocol) as c:  # type: ignore[arg-type]
                if c.send("UP") is not True:
                    return False
                if self.protocol == "auto":
                    self.protocol = c.protocol  # remember the dialect: later connects skip the wait
                self._learn_commands(c)
                return True
        except (ModuleError, OSError, ValueError):
            return False

    def _learn_commands(self, c: ModuleClient) -> None:
        """Ask for the command names once (macros are checked against them before sending)."""
        if self.spec.pcomms:
            self.commands = [*self.spec.pcomms, "UP", "STOP", "CLOSE"]
            return
        try:
            names = c.send("GET_PCOMMS")
        except ModuleError:
            return
        if isinstance(names, list) and all(isinstance(n, str) and n for n in names):
            self.commands = names

    def check_command(self, cmd: str) -> None:
        """Refuse a command the module did not list (matched case-insensitively)."""
        if self.commands and cmd.upper() not in {c.upper() for c in self.commands}:
            raise CommandFailed(cmd, f"{self.name}: {unknown_command_message(cmd, self.commands)}")

    # -- commands --------------------------------------------------------------------------------
    def command(self, cmd: str, kwargs: dict[str, Any], timeout: float = 30.0) -> Any:
        """Send one command on the shared connection (a second one if it is busy)."""
        if self.protocol == "dareplane" and self.link is not None and cmd != "GET_PCOMMS":
            if cmd == "UP":
                return self.link.up(timeout)
            try:
                line = dareplane.encode_command(cmd, kwargs, who=self.name)
            except dareplane.DialectError as exc:
                raise CommandFailed(cmd, str(exc)) from None
            try:
                self.link.write(line)
            except OSError as exc:
                raise ModuleUnreachable(f"{self.name}: {exc}") from exc
            return None  # Dareplane modules do not answer commands
        if self._client_lock.acquire(blocking=False):
            try:
                if self._client is None:
                    self._client = ModuleClient(self.host, self.port, protocol=self.protocol)  # type: ignore[arg-type]
                self._client.timeout = timeout
                return self._client.call(cmd, kwargs)
            except ModuleError as exc:
                if not isinstance(exc, CommandFailed) and self._client is not None:
                    self._client.close()
                    self._client = None
                raise
            finally:
                self._client_lock.release()
        with ModuleClient(self.host, self.port, timeout=timeout, protocol=self.protocol) as c:  # type: ignore[arg-type]
            return c.call(cmd, kwargs)

    def drop_client(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- stop ------------------------------------------------------------------------------------
    def stop(self, timeout: float | None = None) -> list[str]:
        """STOP, CLOSE, then SIGTERM and SIGKILL the process group; returns what was needed."""
        timeout = self.spec.stop_timeout_s if timeout is None else timeout
        steps: list[str] = []
        if self.owned and not self.alive():
            self._reap()
            return ["already exited"]
        for cmd in ("STOP", "CLOSE") if self.owned else ("STOP",):
            try:
                self.command(cmd, {}, timeout=timeout)
                steps.append(cmd)
            except ModuleError as exc:
                steps.append(f"{cmd} failed: {exc}")
                if not self.alive():
                    break
        self.drop_client()
        if not self.owned or self.proc is None:
            return steps
        for sig, wait in ((None, timeout), ("SIGTERM", timeout), ("SIGKILL", 5.0)):
            if sig is not None:
                if not signal_group(self.proc, kill=sig == "SIGKILL"):
                    break
                steps.append(sig)
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._reap()
        return steps

    def _reap(self) -> None:
        """Collect the exit code and make sure nothing of the process group is left."""
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            self.exit_code = self.proc.returncode
        signal_group(self.proc.pid, kill=True)  # helpers it started in its group (a GUI child)
        self.flush_output(2.0)
