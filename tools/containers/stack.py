"""A compose project driven the way a user drives it: up, health, exec, down, and cleanup.

Used by compose_test.py. Everything goes through the engine's own compose command (podman-compose
or docker compose) with the repository's compose.yaml; only what compose cannot tell portably
(container health, leftovers) is asked of the engine CLI directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import engine as engines

MODULES = ["mockup-streamer", "stream-watcher", "recorder", "decoder", "bpod", "presenter"]
CONTROL_ROOM = "control-room"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def _seconds(stamp: str, since: float) -> float | None:
    """``stamp`` (Unix ns, or RFC 3339 with up to ns) minus ``since``, in seconds."""
    try:
        t = int(stamp) / 1e9 if stamp.isdigit() else None
        if t is None:
            head, _, frac = stamp.rstrip("Z").partition(".")
            t = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
            t += float(f"0.{frac}") if frac.isdigit() else 0.0
    except ValueError:
        return None
    return round(t - since, 1)


@dataclass
class Stack:
    """One compose project (``-p name``) of compose.yaml with its environment variables."""

    eng: engines.Engine
    project: str
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        """``<compose> -f compose.yaml -p project args`` in the repository, output captured."""
        cmd = [*self.eng.prefix, *self.eng.compose, "-f", "compose.yaml", "-p", self.project, *args]
        return subprocess.run(
            cmd,
            cwd=engines.ROOT,
            env={**os.environ, **self.eng.env, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        """Run a compose subcommand; returns stdout, raises with the output on failure."""
        proc = self._run(list(args), timeout)
        if check and proc.returncode != 0:
            raise engines.EngineError(
                f"`{' '.join(proc.args)}` exited {proc.returncode}:\n{proc.stdout[-3000:]}"
                f"\n{proc.stderr[-3000:]}"
            )
        return proc.stdout

    def timed(self, what: str, *args: str, timeout: float = 600) -> str:
        t0 = time.monotonic()
        out = self.compose(*args, timeout=timeout)
        self.timings[what] = round(time.monotonic() - t0, 1)
        return out

    def containers(self) -> dict[str, str]:
        """service -> container name, for every container of this project (running or not)."""
        names = self.eng.run(
            "ps", "-a", "--filter", f"label={PROJECT_LABEL}={self.project}", "--format",
            "{{.Names}}",
        ).stdout.split()  # fmt: skip
        found = {}
        for n in names:
            svc = self.eng.run(
                "inspect", "--format", f'{{{{index .Config.Labels "{SERVICE_LABEL}"}}}}', n
            ).stdout.strip()
            found[svc or n] = n
        return found

    def stopped(self, since: float) -> dict[str, tuple[int, float | None]]:
        """service -> (exit code, seconds from ``since`` (Unix time) until its container ended).

        Exit code 137 means the container had to be killed; the seconds show who was slow.
        """
        # podman's FinishedAt is a Go time (UnixNano works); docker's is an RFC 3339 string.
        fmt = "{{.State.ExitCode}} {{.State.FinishedAt.UnixNano}}"
        if self.eng.name == "docker":
            fmt = "{{.State.ExitCode}} {{.State.FinishedAt}}"
        found = {}
        for svc, ctr in self.containers().items():
            code, _, end = (
                self.eng.run("inspect", "--format", fmt, ctr).stdout.strip().partition(" ")
            )
            found[svc] = (int(code) if code.lstrip("-").isdigit() else -1, _seconds(end, since))
        return found

    def health(self, container: str) -> tuple[bool, str]:
        """Run the container's healthcheck now (podman: nothing runs it without systemd)."""
        if self.eng.name == "podman":
            p = self.eng.run("healthcheck", "run", container)
            return p.returncode == 0, (p.stdout + p.stderr).strip() or "healthy"
        st = self.eng.run("inspect", "--format", "{{json .State.Health}}", container).stdout
        try:
            h = json.loads(st)
        except ValueError:
            return False, st.strip()
        last = (h.get("Log") or [{}])[-1].get("Output", "").strip()
        return h.get("Status") == "healthy", f"{h.get('Status')}: {last}"

    def wait_healthy(self, services: list[str], timeout: float = 180) -> dict[str, float]:
        """Poll every service's healthcheck until all pass; seconds until each passed."""
        t0 = time.monotonic()
        done: dict[str, float] = {}
        last: dict[str, str] = {}
        while True:
            ctrs = self.containers()
            for svc in services:
                if svc in done or svc not in ctrs:
                    continue
                ok, why = self.health(ctrs[svc])
                last[svc] = why
                if ok:
                    done[svc] = round(time.monotonic() - t0, 1)
                    engines.say(f"  {svc:<16} healthy after {done[svc]:.1f} s")
            if len(done) == len(services):
                return done
            if time.monotonic() - t0 > timeout:
                missing = {s: last.get(s, "no container") for s in services if s not in done}
                raise engines.EngineError(f"not healthy within {timeout:.0f} s: {missing}")
            time.sleep(1.0)

    def exec(self, service: str, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """``compose exec -T service argv`` (no terminal: output captured)."""
        return self._run(["exec", "-T", service, *argv], timeout)

    def logs(self, service: str, tail: int = 40) -> str:
        ctr = self.containers().get(service)
        if not ctr:
            return "(no container)"
        p = self.eng.run("logs", "--tail", str(tail), ctr)
        return (p.stdout + p.stderr).strip()

    def remove_leftovers(self) -> list[str]:
        """Force-remove any container and network of this project; names of what was removed."""
        gone = []
        for ctr in self.containers().values():
            self.eng.run("rm", "-f", "-t", "2", ctr)
            gone.append(ctr)
        nets = self.eng.run(
            "network", "ls", "--filter", f"label={PROJECT_LABEL}={self.project}", "--format",
            "{{.Name}}",
        ).stdout.split()  # fmt: skip
        for net in nets:
            self.eng.run("network", "rm", net)
            gone.append(f"network {net}")
        return gone
