"""Issue 12 item 2: token mode with the control room. Modules are started with a token on
127.0.0.1 (a token given is enforced on loopback too), so every connection the control room
opens must authenticate: readiness, watchdog, commands, the callback listener, the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from pathlib import Path

import pytest
from cr_helpers import cli, echo, pid_alive, wait_for

from control_room.handle import StartError
from shared_utils.errors import CommandFailed
from shared_utils.protocol.client import ModuleClient

TOKEN = "s3cret-mesh-token"


def _raw_reply(port: int, line: bytes) -> dict:
    """One request on a fresh connection, no AUTH: what an outsider gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(line)
        return json.loads(s.makefile("rb").readline())


def _proc_file(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def test_modules_with_the_mesh_token_are_started_commanded_and_supervised(
    room_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_TOKEN", TOKEN)
    room = room_factory(echo("a") + echo("b"))
    info = room.module_info()
    assert {i["state"] for i in info.values()} == {"ready"}
    a_port, a_pid = info["a"]["port"], info["a"]["pid"]
    # the module really enforces the token: an outsider without AUTH is refused
    assert "authentication required" in _raw_reply(a_port, b"ECHO\n")["error"]
    # the token reached the module through its environment, never its argv
    assert f"MESH_TOKEN={TOKEN}".encode() in _proc_file(a_pid, "environ").split(b"\0")
    assert TOKEN.encode() not in _proc_file(a_pid, "cmdline")
    # commands, and a callback (the router's own connection authenticates too)
    assert room.send("a", "ECHO", {"x": 1}) == {"x": 1}
    room.send("a", "CALLBACK", {"target": "b", "cmd": "ECHO", "kwargs": {"via": "callback"}})
    wait_for(lambda: {"via": "callback"} in room.send("b", "HISTORY"), "callback a -> b")
    # supervision: a crash is noticed and the module restarted with its token
    room.send("a", "CRASH")
    wait_for(
        lambda: (i := room.module_info()["a"])["restarts"] == 1 and i["state"] == "ready",
        "a restarted",
    )
    assert room.send("a", "ECHO", {"after": "restart"}) == {"after": "restart"}
    assert TOKEN not in json.dumps(room.status())
    log_file = Path(room.status()["log_file"])
    room.down()
    assert TOKEN not in log_file.read_text()


def test_token_env_gives_one_module_its_own_token(
    room_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_TOKEN", TOKEN)
    monkeypatch.setenv("LAB_B_TOKEN", "b-only")
    room = room_factory(echo("a") + echo("b", more='token_env = "LAB_B_TOKEN"'))
    assert room.send("b", "ECHO", {"b": 1}) == {"b": 1}
    b_pid, b_port = room.module_info()["b"]["pid"], room.module_info()["b"]["port"]
    env = _proc_file(b_pid, "environ").split(b"\0")
    assert b"MESH_TOKEN=b-only" in env
    with (
        ModuleClient("127.0.0.1", b_port, timeout=10, token=TOKEN) as c,
        pytest.raises(CommandFailed, match="wrong token"),
    ):
        c.send("UP")


@pytest.mark.parametrize(
    ("room_token", "expect"),
    [
        (TOKEN, r"refused the control room's token from \$MESH_TOKEN \('wrong token'\)"),
        (None, r"requires a token \(it answered 'authentication required'\)"),
    ],
)
def test_a_module_refusing_us_fails_its_start_at_once_saying_what_to_set(
    room_factory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, room_token, expect
) -> None:
    if room_token:
        monkeypatch.setenv("MESH_TOKEN", room_token)
    else:
        monkeypatch.delenv("MESH_TOKEN", raising=False)
    own = tmp_path / "own.token"
    own.write_text("the-module's-own\n")
    body = echo("ok") + echo("locked", "--token-file", str(own), more="ready_timeout_s = 60")
    room = room_factory(body, start=False)
    with pytest.raises(StartError) as info:
        room.up()
    msg = str(info.value)
    port = room.supervisor.handles["locked"].port
    assert f"locked: 127.0.0.1:{port} " in msg
    assert "no answer to UP" not in msg  # not a readiness timeout: refused at once
    assert re.search(expect, msg), msg
    assert "set $MESH_TOKEN or [control_room] token_file" in msg
    assert not pid_alive(room.supervisor.handles["ok"].pid)


def test_cli_sends_the_mesh_token_from_env_or_file(running_up, tmp_path: Path) -> None:
    up = running_up(echo("a"), env={"MESH_TOKEN": TOKEN})
    port = up.port
    no_token = {"MESH_TOKEN": ""}
    bare = cli("status", port=port, env=no_token)
    assert bare.returncode == 1
    assert "requires the mesh token: set $MESH_TOKEN or pass --token-file" in bare.stderr
    wrong = cli("status", port=port, env={"MESH_TOKEN": "nope"})
    assert wrong.returncode == 1
    assert "wrong token" in wrong.stderr
    ok = cli("status", "--json", port=port, env={"MESH_TOKEN": TOKEN})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["modules"]["a"]["state"] == "ready"
    token_file = tmp_path / "mesh.token"
    token_file.write_text(TOKEN + "\n")
    sent = cli(
        "--token-file", str(token_file), "send", "a", "ECHO", '{"k": 2}', port=port, env=no_token
    )
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"k": 2}
    a_port = up.modules["a"][1]
    chk = cli("check", f"127.0.0.1:{a_port}", port=port, env={"MESH_TOKEN": TOKEN})
    assert chk.returncode == 0, chk.stdout  # every rule passes once the checker sends AUTH
    a_pid = up.modules["a"][0]
    assert TOKEN.encode() not in _proc_file(a_pid, "cmdline")
    down = cli("down", port=port, env={"MESH_TOKEN": TOKEN})
    assert down.returncode == 0, down.stderr
    assert up.proc.wait(30) == 0
    assert not pid_alive(a_pid)


def test_control_room_token_file_protects_its_port_and_reaches_modules(
    running_up, tmp_path: Path
) -> None:
    token_file = tmp_path / "room.token"
    token_file.write_text("from-a-file\n")
    os.chmod(token_file, 0o600)
    up = running_up(echo("a"), env={"MESH_TOKEN": ""}, extra=f'token_file = "{token_file}"')
    assert b"MESH_TOKEN=from-a-file" in _proc_file(up.modules["a"][0], "environ").split(b"\0")
    refused = cli("status", port=up.port, env={"MESH_TOKEN": ""})
    assert "requires the mesh token" in refused.stderr
    ok = cli("--token-file", str(token_file), "status", port=up.port, env={"MESH_TOKEN": ""})
    assert ok.returncode == 0, ok.stderr
    os.kill(up.proc.pid, signal.SIGTERM)
    assert up.proc.wait(30) == 0
