"""How a module's process is started and, after STOP/CLOSE over TCP, made to end: here, over
ssh on another host, or by docker compose (docs/multi-host.md).

Each launcher gives the supervisor one local process that stands for the module: the module
itself, the OpenSSH client running it on the far host, or the ``docker compose up`` client
attached to its container. That process's exit is the module's exit and its pipes carry the
module's stdout and stderr, so crash detection, restarts, output capture and crash reports work
the same for all three. No agent of our own runs on the far host: sshd or the docker daemon does
the starting.

Why the ssh command is safe to build from config values: ssh hands the far host's login shell one
command string. Ours is a constant script (:data:`REMOTE_SCRIPT`) followed by the working folder,
``NAME=value`` pairs and the module's argv, each quoted with :func:`shlex.quote`, so the shell
sees every value as one literal word: no expansion, no substitution, no second command, whatever
the value holds. The script only refers to them as ``"$1"`` and ``"$@"``. It needs a POSIX shell
(bash, dash, zsh) as the far user's login shell. The token never appears in any argv, on either
host: it goes down the ssh channel as the first line of the module's stdin, and the script moves
it into ``MESH_TOKEN``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from control_room.schema import ModuleSpec
from control_room.spawn import spawn
from control_room.tokens import child_env
from shared_utils.platform.processes import signal_group

ROOT = Path(__file__).resolve().parent.parent
#: (label, action, wait): after STOP/CLOSE, each action in turn until the process exited; an
#: action returns False when there was nothing left to act on.
Stage = tuple[str, Callable[[subprocess.Popen], bool], float]

#: Runs on the far host under ``sh -c``: token from the first stdin line, cd, report the pid
#: (which is also the process group: sshd made the session), then exec the module.
REMOTE_SCRIPT = (
    'IFS= read -r t || exit 97; [ -z "$t" ] || { MESH_TOKEN=$t; export MESH_TOKEN; }; unset t; '
    'cd "$1" || exit 96; shift; echo "mesh-remote-pid $$" >&2; exec env -- "$@"'
)
_PID_LINE = re.compile(r"^mesh-remote-pid (\d+)$")
#: ssh client options that make a lost host an exit (255) within ~8 s instead of a hang; the
#: user's ssh_options come first and so win (ssh keeps the first value of an option).
SSH_DEFAULTS = [
    "-T",
    "-e", "none",
    "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=5",
    "-o", "ServerAliveInterval=2",
    "-o", "ServerAliveCountMax=3",
]  # fmt: skip
SSH_LOST = 255  # what the OpenSSH client exits with when it could not connect or lost the host


class LocalLauncher:
    """A child of the control room, in its own process group, asked to die with it."""

    mode = "local"
    #: the local client that runs the module elsewhere (None: the module runs here)
    program: str | None = None

    def __init__(self, spec: ModuleSpec) -> None:
        self.spec = spec

    def start(
        self,
        argv: list[str],
        mesh_env: dict[str, str],
        token: str | None,
        scheduling: Any = None,
    ) -> Any:
        env = {**child_env(os.environ, token), **mesh_env}
        env["MESH_PARENT_PID"] = str(os.getpid())
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        return spawn(
            argv,
            scheduling=scheduling,
            cwd=self.spec.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def intercept(self, stream: str, line: str) -> bool:
        """True for an output line the launcher consumes itself (never logged)."""
        return False

    def stages(self, timeout: float) -> list[Stage]:
        return [
            ("SIGTERM", lambda p: signal_group(p), timeout),
            ("SIGKILL", lambda p: signal_group(p, kill=True), 5.0),
        ]

    def exit_note(self, code: int | None) -> str:
        return ""

    def info(self) -> dict[str, Any]:
        return {"launch": "attach" if self.spec.kind == "attach" else self.mode}


class SshLauncher(LocalLauncher):
    """The module runs on ``ssh`` (user@host) under the OpenSSH client, which stays connected:
    its stdin is the module's stdin (the token, then EOF when we let go), its stdout and stderr
    the module's. Our modules get ``MESH_EXIT_ON_STDIN_EOF=1``, so the ssh session ending, for
    whatever reason, ends them too."""

    mode = "ssh"
    program = "ssh"

    def __init__(self, spec: ModuleSpec) -> None:
        super().__init__(spec)
        self.remote_pid: int | None = None
        launch = spec.launch
        self.dest = launch.ssh or spec.host
        self.base = ["ssh", *launch.ssh_options, *SSH_DEFAULTS, "--", self.dest]

    def command(self, argv: list[str], mesh_env: dict[str, str]) -> list[str]:
        """The local argv: ssh, its options, the destination and one quoted command string."""
        env = {"PYTHONUNBUFFERED": "1", "MESH_EXIT_ON_STDIN_EOF": "1", **mesh_env}
        words = [
            self.spec.launch.remote_cwd or ".",
            *(f"{k}={v}" for k, v in env.items()),
            *argv,
        ]
        remote = f"exec sh -c {shlex.quote(REMOTE_SCRIPT)} mesh-module " + " ".join(
            shlex.quote(w) for w in words
        )
        return [*self.base, remote]

    def start(
        self, argv: list[str], mesh_env: dict[str, str], token: str | None, scheduling: Any = None
    ) -> Any:
        self.remote_pid = None
        proc = spawn(
            self.command(argv, mesh_env),
            env=child_env(os.environ, None),  # the ssh client itself never holds the token
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            proc.stdin.write(((token or "") + "\n").encode())
            proc.stdin.flush()
        except OSError:
            pass  # ssh already failed: its exit code and stderr tell why
        return proc

    def intercept(self, stream: str, line: str) -> bool:
        m = _PID_LINE.match(line) if stream == "stderr" and self.remote_pid is None else None
        if m:
            self.remote_pid = int(m.group(1))
        return m is not None

    def stages(self, timeout: float) -> list[Stage]:
        return [
            ("stdin EOF", _close_stdin, timeout),
            ("SIGTERM", lambda p: self._remote_kill(p, "TERM"), timeout),
            ("SIGKILL", self._kill_all, 5.0),
        ]

    def _remote_kill(self, proc: subprocess.Popen, sig: str) -> bool:
        """``kill -SIG -- -PGID`` on the far host, through a second ssh connection (the first
        one carries no signals without a tty)."""
        if self.remote_pid is None or proc.poll() is not None:
            return False
        try:
            subprocess.run(
                [*self.base, f"kill -{sig} -- -{self.remote_pid}"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                env=child_env(os.environ, None),
            )
        except (OSError, subprocess.TimeoutExpired):
            pass
        return True

    def _kill_all(self, proc: subprocess.Popen) -> bool:
        self._remote_kill(proc, "KILL")
        return signal_group(proc, kill=True)

    def exit_note(self, code: int | None) -> str:
        if code == SSH_LOST:
            return (
                f"ssh to {self.dest} failed or lost the host (exit {SSH_LOST}): host down, "
                "network gone, sshd not running or the key refused; its stderr says which"
            )
        if code in (96, 97):
            return f"the remote start script could not {'cd' if code == 96 else 'read stdin'}"
        return ""

    def info(self) -> dict[str, Any]:
        return {"launch": self.mode, "ssh": self.dest, "remote_pid": self.remote_pid}


class ComposeLauncher(LocalLauncher):
    """``docker compose up SERVICE`` in the foreground: attached to the container's output, and
    exits with the container (``--exit-code-from``); SIGTERM makes compose stop the container."""

    mode = "compose"

    def __init__(self, spec: ModuleSpec) -> None:
        super().__init__(spec)
        c = spec.launch.compose
        assert c is not None
        self.compose = c
        self.program = c.engine
        ctx = ["--context", c.context] if c.context else []
        files = [a for f in c.files for a in ("-f", f)]
        project = ["-p", c.project] if c.project else []
        self.base = [c.engine, *ctx, "compose", *files, *project]

    def command(self) -> list[str]:
        s = self.compose.service
        grace = str(max(1, round(self.spec.stop_timeout_s)))
        return [
            *self.base, "up", "--no-deps", "--no-color", "--no-log-prefix",
            "--exit-code-from", s, "--timeout", grace, s,
        ]  # fmt: skip

    def start(
        self, argv: list[str], mesh_env: dict[str, str], token: str | None, scheduling: Any = None
    ) -> Any:
        # The compose file passes what its service needs from here (``environment: [MESH_TOKEN,
        # MESH_LOG_SERVER]``); they reach the compose client's environment only.
        env = {**child_env(os.environ, token), **mesh_env}
        if self.compose.docker_host:
            env["DOCKER_HOST"] = self.compose.docker_host
        return spawn(self.command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def stages(self, timeout: float) -> list[Stage]:
        # compose stops the container on SIGTERM (its own --timeout, then SIGKILL): allow for both
        return [
            ("SIGTERM", lambda p: signal_group(p), timeout + self.spec.stop_timeout_s + 2),
            ("SIGKILL", self._kill_all, 5.0),
        ]

    def _kill_all(self, proc: subprocess.Popen) -> bool:
        env = dict(os.environ)
        if self.compose.docker_host:
            env["DOCKER_HOST"] = self.compose.docker_host
        try:
            subprocess.run(
                [*self.base, "kill", self.compose.service],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=15,
                env=env,
            )
        except (OSError, subprocess.TimeoutExpired):
            pass
        return signal_group(proc, kill=True)

    def info(self) -> dict[str, Any]:
        c = self.compose
        return {"launch": self.mode, "service": c.service, "context": c.context}


def _close_stdin(proc: subprocess.Popen) -> bool:
    if proc.stdin is None or proc.stdin.closed:
        return False
    try:
        proc.stdin.close()
    except OSError:
        pass
    return True


def launcher_for(spec: ModuleSpec) -> LocalLauncher:
    """The launcher the module's ``launch`` key names (an attached module is never launched)."""
    mode = "local" if spec.kind == "attach" else spec.launch.mode
    return {"ssh": SshLauncher, "compose": ComposeLauncher}.get(mode, LocalLauncher)(spec)


__all__ = ["ComposeLauncher", "LocalLauncher", "SshLauncher", "launcher_for"]
