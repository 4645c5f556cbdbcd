"""One supervised module: its process, readiness check, commands and graceful stop.

Its output is captured by control_room/output.py; every connection to it is made by
:meth:`ModuleHandle.client`, so none can forget the module's token.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from control_room.config import ModuleSpec
from control_room.launch import launcher_for
from control_room.output import LineSink, OutputCapture
from control_room.ports import free_port, port_holder, port_in_use
from control_room.tokens import auth_refusal
from shared_utils.errors import CommandFailed, ModuleError, ModuleUnreachable
from shared_utils.platform.processes import (
    Scheduling,
    end_group,
    parse_sched,
    scheduling_problem,
)
from shared_utils.protocol import dareplane
from shared_utils.protocol.client import ModuleClient
from shared_utils.protocol.commands import unknown_command_message

CONNECT_TIMEOUT_S = 3.0  # a host that went away fails a connect within this, whatever the command


class StartError(RuntimeError):
    """A module could not be started or did not become ready; the text says why."""


_UNUSABLE = {
    "pending": "has not been started",
    "starting": "is starting",
    "restarting": "is restarting",
    "crashed": "has crashed",
    "failed": "has failed",
    "stopping": "is stopping",
    "stopped": "is stopped",
    "unresponsive": "is unresponsive (no answer to its last UP checks)",
}


class ModuleHandle:
    """State and process of one module. States: pending, starting, ready, crashed, restarting,
    failed, stopping, stopped."""

    def __init__(
        self,
        spec: ModuleSpec,
        line_sink: LineSink,
        extra_env: dict[str, str],
        token: str | None = None,
        token_source: str = "none",
    ) -> None:
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
        self.health_ms: float | None = None  # reply time of the last health check (UP)
        self.answered = False  # answered UP since its last launch (else stop() only signals)
        self.launcher = launcher_for(spec)
        self.output = OutputCapture(spec.name, line_sink, intercept=self.launcher.intercept)
        self.commands: list[str] = []  # from GET_PCOMMS (or the config's pcomms)
        self.generation = 0  # bumped by a restart by hand: the old watcher then lets go
        self.refused_auth = False  # it answered "authentication required" / "wrong token"
        self._extra_env = extra_env
        self._token = token  # kept here only: never in info(), logs or argv
        self._token_source = token_source
        self._last_failure = ""  # why the last readiness probe failed (for the timeout message)
        self._client: ModuleClient | None = None
        self._client_lock = threading.Lock()
        self._inflight: dict[ModuleClient, str | None] = {}  # requests waiting -> abort reason
        self._inflight_lock = threading.Lock()
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

    def client(self, timeout: float) -> ModuleClient:
        """A new connection to this module, authenticated with its token when there is one.

        Every connection the control room opens to a module (readiness, watchdog, commands) is
        made here, so none of them can forget the token.
        """
        return ModuleClient(
            self.host,
            self.port,
            timeout=timeout,
            protocol=self.protocol,  # type: ignore[arg-type]
            token=self._token,
            connect_timeout=CONNECT_TIMEOUT_S,
        )

    def auth_request(self) -> bytes:
        """The ``AUTH`` line for connections made without :meth:`client` (callback listener)."""
        if not self._token:
            return b""
        return json.dumps({"cmd": "AUTH", "kwargs": {"token": self._token}}).encode() + b"\n"

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "kind": self.spec.kind,
            "host": self.host,
            "port": self.port,
            "pid": self.pid if self.alive() else None,  # never a dead process's pid
            "last_pid": self.pid,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "ready_s": self.ready_s,
            "uptime_s": self._uptime(),
            "health_ms": self.health_ms,
            "protocol": self.protocol,
            "error": self.error,
            "commands": self.commands,
            "scheduling": self.scheduling().describe() or None,
            **self.launcher.info(),
        }

    def _uptime(self) -> float | None:
        """Seconds since this process (or attachment) started; None while nothing runs."""
        running = self.alive() if self.owned else self.state in ("ready", "unresponsive")
        if not running or self.started_at is None:
            return None
        return round(time.monotonic() - self.started_at, 1)

    # -- start -----------------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the process (or check an attached module's port); does not wait for readiness."""
        self.error = None
        self.refused_auth = False
        self.exit_code = None
        self.answered = False
        if not self.owned:
            self.started_at = time.monotonic()
            return
        here = not self.launcher.program  # a port on another host: only that host can check it
        if here and self.port == 0:
            self.port = free_port(self.host)  # chosen once: a restart keeps it, callers rely on it
        elif here and port_in_use(self.host, self.port):
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
        if sched.describe() and self.launcher.mode != "local":
            raise StartError(
                f"{self.name}: cpu_affinity, nice and sched apply to modules started on this "
                f"machine, not with launch = {self.launcher.mode!r}"
            )
        try:
            self.proc = self.launcher.start(
                argv, {**self._extra_env, **self.spec.env}, self._token, scheduling=sched
            )
        except (OSError, subprocess.SubprocessError) as exc:
            what = self.launcher.program or argv[0]  # the local program that could not start
            why = getattr(exc, "strerror", None) or exc
            raise StartError(f"{self.name}: cannot run {what!r}: {why}") from None
        self.started_at = time.monotonic()
        self.output.start(self.proc.stdout, self.proc.stderr)

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

    def wait_ready(
        self, stop: threading.Event, stream_check: Callable[[str, float], bool]
    ) -> float:
        """Block until the readiness check passes; returns seconds since launch.

        Raises :class:`StartError` with the module's last output if it exits first or times out.
        """
        ready = self.spec.ready
        deadline = time.monotonic() + ready.timeout_s
        if ready.up:
            self._last_failure = ""
            while not self._try_up():
                last = f" (last: {self._last_failure})" if self._last_failure else ""
                self._check_still_starting(
                    stop, deadline, f"no answer to UP on {self.host}:{self.port}", last
                )
                time.sleep(0.02)
        if ready.stream:
            while not stream_check(ready.stream, min(0.5, max(0.05, deadline - time.monotonic()))):
                self._check_still_starting(
                    stop, deadline, f"LSL stream {ready.stream!r} did not appear"
                )
        assert self.started_at is not None
        self.ready_s = round(time.monotonic() - self.started_at, 3)
        self.answered = True
        return self.ready_s

    def _check_still_starting(
        self, stop: threading.Event, deadline: float, failure: str, detail: str = ""
    ) -> None:
        """One readiness wait, one set of reasons to give up: the module exited, the start was
        cancelled, or ``deadline`` passed (``failure`` says what was still missing)."""
        self._check_alive_or_raise()
        if stop.is_set():
            raise StartError(f"{self.name}: start cancelled")
        if time.monotonic() > deadline:
            raise StartError(
                f"{self.name}: {failure} within {self.spec.ready.timeout_s} s{detail}"
                f"{self.output.tail_text()}"
            )

    def _check_alive_or_raise(self) -> None:
        if self.owned and self.proc is not None and self.proc.poll() is not None:
            self.exit_code = self.proc.returncode
            self.flush_output(1.0)
            raise StartError(
                f"{self.name}: exited with code {self.exit_code} before it was ready"
                f"{self.exit_note()}{self.output.tail_text()}"
            )

    def exit_note(self) -> str:
        """What the exit code means for how the module was launched ("" if nothing special)."""
        note = self.launcher.exit_note(self.exit_code)
        return f" ({note})" if note else ""

    def _try_up(self) -> bool:
        """One readiness probe; raises :class:`StartError` at once if the module refuses us."""
        try:
            with self.client(1.0) as c:
                if c.send("UP") is not True:
                    self._last_failure = "UP did not answer true"
                    return False
                if self.protocol == "auto":
                    self.protocol = c.protocol  # remember the dialect: later connects skip the wait
                self._learn_commands(c)
                return True
        except CommandFailed as exc:
            refusal = auth_refusal(
                f"{self.name}: {self.host}:{self.port}", exc.error, self._token_source
            )
            if refusal:
                self.refused_auth = True
                raise StartError(refusal) from None
            self._last_failure = f"{exc.cmd}: {exc.error}"
        except (ModuleError, OSError, ValueError) as exc:
            self._last_failure = str(exc)
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

    def check_usable(self) -> None:
        """Refuse at once to command a module that cannot answer, instead of waiting out a
        timeout (a host that vanished shows as ``unresponsive`` within a few watchdog rounds)."""
        why = _UNUSABLE.get(self.state)
        if why is None:
            return
        hint = ""
        if self.state in ("failed", "unresponsive"):
            hint = f"; `control-room restart {self.name}` starts it again"
        raise ModuleUnreachable(f"{self.name} on {self.host}:{self.port} {why}; not sent{hint}")

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
                    self._client = self.client(timeout)
                self._client.timeout = timeout
                return self._call(self._client, cmd, kwargs)
            except ModuleError as exc:
                if not isinstance(exc, CommandFailed) and self._client is not None:
                    self._client.close()
                    self._client = None
                raise
            finally:
                self._client_lock.release()
        with self.client(timeout) as c:
            return self._call(c, cmd, kwargs)

    def _call(self, c: ModuleClient, cmd: str, kwargs: dict[str, Any]) -> Any:
        """One request that :meth:`abort_commands` can end early."""
        with self._inflight_lock:
            self._inflight[c] = None
        try:
            return c.call(cmd, kwargs)
        except ModuleUnreachable as exc:
            with self._inflight_lock:
                why = self._inflight.get(c)
            if why is None:
                raise
            raise ModuleUnreachable(
                f"{self.name} on {self.host}:{self.port} {why}; {cmd} was sent and may or may "
                "not have run"
            ) from exc
        finally:
            with self._inflight_lock:
                self._inflight.pop(c, None)

    def abort_commands(self, why: str) -> None:
        """End every command waiting for a reply now (the watchdog calls this when the module
        stopped answering: a host that vanished must not hold a macro for a whole timeout)."""
        with self._inflight_lock:
            for c in self._inflight:
                self._inflight[c] = why
                c.abort()

    def drop_client(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- stop ------------------------------------------------------------------------------------
    def stop(self, timeout: float | None = None) -> list[str]:
        """STOP, CLOSE, then SIGTERM and SIGKILL the process group; returns what was needed."""
        from control_room.stopping import stop_module

        return stop_module(self, self.spec.stop_timeout_s if timeout is None else timeout)

    def flush_output(self, timeout: float = 2.0) -> None:
        """After the process exited: end what it left in its process group (a child of a killed
        module can hold the pipes and the port), then wait until both pipes reached EOF."""
        if self.proc is not None and self.proc.poll() is not None:
            end_group(self.proc.pid, 0.5)
        self.output.flush(timeout)
