"""Multi-host pieces that run on one host: the launch keys of a config, the command the ssh
launcher hands a remote shell (run here through a real ``sh``), the compose command, the log
receiver's allowlist and token frame, ``--exit-on-stdin-eof``, and the control room's clock
offsets. The two-namespace test (tests/test_multihost.py) runs them across hosts for real.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port, wait_until_up
from cr_helpers import echo
from helpers import Collector, wait_for

from control_room.clocks import ClockMonitor
from control_room.config import ConfigError, parse_config
from control_room.launch import REMOTE_SCRIPT, ComposeLauncher, SshLauncher
from services.recorder.clocks import OffsetTrack, by_host
from shared_utils.logging import encode_frame, wire_record
from shared_utils.logging.peers import auth_frame
from shared_utils.logging.receiver import LogReceiver

TOKEN_ENV = {"MESH_TOKEN": "t0ken-for-tests"}

SSH_MODULE = """
[modules.rig2]
module = "services.mockup_streamer"
launch = "ssh"
host = "10.0.0.2"
ssh = "lab@rig2"
ssh_options = ["-p", "2222"]
remote_cwd = "/opt/mesh"
port = 8101
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        parse_config(text, "/tmp/mesh.toml")
    except ConfigError as exc:
        return exc.problems
    finally:
        os.environ.clear()
        os.environ.update(old)
    return []


def parsed(text: str) -> object:
    old = dict(os.environ)
    os.environ.update(TOKEN_ENV)
    try:
        return parse_config(text, "/tmp/mesh.toml")
    finally:
        os.environ.clear()
        os.environ.update(old)


# -- config ----------------------------------------------------------------------------------------
def test_an_ssh_module_loads_with_python3_on_the_far_host() -> None:
    cfg = parsed('[control_room]\nlog_host = "0.0.0.0"\n' + SSH_MODULE)
    spec = cfg.modules["rig2"]  # type: ignore[attr-defined]
    assert spec.launch.mode == "ssh"
    assert (spec.launch.ssh, spec.launch.remote_cwd) == ("lab@rig2", "/opt/mesh")
    assert spec.argv[:3] == ["python3", "-m", "services.mockup_streamer"]
    assert spec.cwd is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("port = 8101", "port = 0", "needs a fixed port"),
        ('ssh = "lab@rig2"', 'ssh = "-oProxyCommand=touch /tmp/x"', "must be an ssh destination"),
        ("port = 8101", 'port = 8101\ncwd = "here"', "cwd is a folder of this PC"),
        ('launch = "ssh"', 'launch = "telnet"', "must be one of local, ssh, compose"),
        (
            'launch = "ssh"',
            'launch = "ssh"\nattach = true',
            "an attached module is started by someone else",
        ),
    ],
)
def test_ssh_mistakes_are_named(old: str, new: str, expected: str) -> None:
    text = '[control_room]\nlog_host = "0.0.0.0"\n' + SSH_MODULE.replace(old, new)
    found = problems(text, TOKEN_ENV)
    assert any(expected in p for p in found), found


def test_a_remote_module_needs_a_reachable_log_receiver_and_a_token() -> None:
    found = problems(SSH_MODULE, TOKEN_ENV)
    assert any(
        "log receiver listens on 127.0.0.1 only" in p and "rig2 (10.0.0.2)" in p for p in found
    )
    found = problems('[control_room]\nlog_host = "0.0.0.0"\n' + SSH_MODULE, {"MESH_TOKEN": ""})
    assert any("10.0.0.2 is beyond loopback" in p for p in found), found


def test_compose_modules_name_their_service_and_nothing_to_run() -> None:
    base = '[control_room]\nlog_host = "0.0.0.0"\n[modules.eeg]\nlaunch = "compose"\nhost = "10.0.0.3"\nport = 8101\n'
    found = problems(
        base + 'module = "services.x"\ncompose = { service = "bad name" }\n', TOKEN_ENV
    )
    assert any("remove it here" in p for p in found)
    assert any("must name the compose service" in p for p in found)
    cfg = parsed(base + 'compose = { service = "eeg", context = "rig3", file = "c.yaml" }\n')
    launcher = ComposeLauncher(cfg.modules["eeg"])  # type: ignore[attr-defined]
    assert launcher.command() == [
        "docker", "--context", "rig3", "compose", "-f", "c.yaml", "up", "--no-deps",
        "--no-color", "--no-log-prefix", "--exit-code-from", "eeg", "--timeout", "3", "eeg",
    ]  # fmt: skip


# -- the ssh command: every value reaches the far side as one literal word ---------------------------
HOSTILE = [
    "$(touch {canary})",
    "`touch {canary}`",
    "a b; touch {canary}",
    "it's",
    'q"q',
    "new\nline",
    "ünï",
    "*",
    "-x",
]


def test_the_remote_command_passes_argv_and_env_literally(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    values = [v.format(canary=canary) for v in HOSTILE]
    cfg = parsed(
        '[control_room]\nlog_host = "0.0.0.0"\n'
        + SSH_MODULE.replace(
            'remote_cwd = "/opt/mesh"', f"remote_cwd = {json.dumps(str(tmp_path))}"
        )
    )
    launcher = SshLauncher(cfg.modules["rig2"])  # type: ignore[attr-defined]
    probe = "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ.get('X'), os.environ.get('MESH_TOKEN'), os.getcwd()]))"
    argv = launcher.command([sys.executable, "-c", probe, *values], {"X": values[0]})
    assert argv[:3] == ["ssh", "-p", "2222"]  # the user's options first: they win in ssh
    assert {"BatchMode=yes", "ServerAliveInterval=2"} <= set(argv)
    assert argv[argv.index("--") + 1] == "lab@rig2"
    remote = argv[-1]
    assert "t0ken" not in " ".join(argv)
    # what sshd does with it: the login shell runs the string, stdin is the channel
    res = subprocess.run(
        ["sh", "-c", remote], input="t0ken-for-tests\n", capture_output=True, text=True, timeout=20
    )
    assert res.returncode == 0, res.stderr
    got_argv, got_x, got_token, cwd = json.loads(res.stdout)
    assert got_argv == values
    assert (got_x, got_token, cwd) == (values[0], "t0ken-for-tests", str(tmp_path))
    assert not canary.exists()
    assert res.stderr.startswith("mesh-remote-pid ")
    assert launcher.intercept("stderr", res.stderr.strip())
    assert launcher.remote_pid == int(res.stderr.split()[1])
    assert shlex.quote(REMOTE_SCRIPT) in remote


def test_a_module_started_with_exit_on_stdin_eof_ends_with_its_stdin(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cr_modules.echo", "--port", str(port)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MESH_EXIT_ON_STDIN_EOF": "1"},
        start_new_session=True,
    )
    try:
        wait_until_up(port, proc)
        proc.stdin.write(b"anything is read and ignored\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        time.sleep(0.2)
        assert proc.poll() is None
        proc.stdin.close()  # type: ignore[union-attr]
        assert proc.wait(5) == 0  # a clean shutdown, not the hard exit
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()  # type: ignore[union-attr]


# -- log receiver beyond loopback ------------------------------------------------------------------
def _frame(event: str) -> bytes:
    return encode_frame(
        wire_record(module="far", logger="far", levelno=20, event=event, kv={}, created=time.time())
    )


def _send(port: int, *frames: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"".join(frames))
        time.sleep(0.2)


def test_the_receiver_takes_only_allowed_authenticated_peers(tmp_path: Path) -> None:
    got = Collector()
    rcv = LogReceiver(
        "127.0.0.1", 0, tmp_path, on_record=got, allow={"127.0.0.1"}, token="s3cret",
        trust_loopback=False,
    ).start()  # fmt: skip
    try:
        _send(rcv.port, _frame("no auth"))
        _send(rcv.port, auth_frame("wrong"), _frame("wrong auth"))
        _send(rcv.port, auth_frame("s3cret"), _frame("authenticated"))
        got.wait_for(lambda rs: any(r["event"] == "authenticated" for r in rs))
    finally:
        rcv.close()
    events = [r["event"] for r in got.records]
    assert "no auth" not in events
    assert "wrong auth" not in events
    refusals = [r["kv"]["reason"] for r in got.records if r["event"] == "log connection refused"]
    assert len(refusals) == 1  # one record per address, whatever the number of attempts
    assert rcv.refused == 2
    assert "s3cret" not in Path(rcv.path).read_text()  # an auth frame is never stored

    other = LogReceiver("127.0.0.1", 0, None, allow={"10.9.9.9"}, trust_loopback=False).start()
    try:
        _send(other.port, _frame("from a stranger"))
        wait_for(lambda: other.refused == 1, "the stranger refused at once", timeout=5)
    finally:
        other.close()
    assert other.records == 1  # only its own note


# -- clocks ----------------------------------------------------------------------------------------
def test_recorder_offsets_warn_once_past_one_millisecond() -> None:
    t = OffsetTrack()
    assert [t.add(v) for v in (0.010, 0.0104, 0.0109, 0.0130, 0.0101)] == [
        None,
        None,
        None,
        pytest.approx(3.0),
        None,
    ]
    s = {"name": "eeg", "hostname": "rig2", **t.summary()}
    assert s["clock_offset_ms"] == pytest.approx(10.1)
    assert by_host([s])["rig2"]["warning"].startswith("clock offset drifted +3.000 ms")


def test_control_room_clock_keeps_the_worst_drift_since_a_session_start() -> None:
    """A drift that came and went during a session still counts (session.json lists it)."""
    warned: list[str] = []
    monitor = ClockMonitor({}, lambda *a, **k: None, warned.append)
    for offset in (5.0, 7.5, 5.2):  # ms: past the 1 ms limit, then back
        monitor._record("rig2", "10.0.0.2", ["bpod"], offset, 0.2)
    entry = monitor.snapshot()["rig2"]
    assert entry["max_drift_ms"] == pytest.approx(2.5)
    assert "warning" not in entry  # only while over the limit
    assert len(warned) == 1
    assert "drifted +2.500 ms" in warned[0]
    monitor.mark()  # a session starts: the next measurement is the reference
    monitor._record("rig2", "10.0.0.2", ["bpod"], 5.3, 0.2)
    entry = monitor.snapshot()["rig2"]
    assert entry["reference_ms"] == pytest.approx(5.3)
    assert entry["max_drift_ms"] == 0.0


def test_the_control_room_measures_clock_offsets(room_factory) -> None:
    room = room_factory(echo("a"))
    clocks = wait_for(room.clock_offsets, "a first clock measurement", timeout=20)
    (entry,) = clocks.values()
    assert entry["same_host"] is True
    assert entry["modules"] == ["a"]
    assert abs(entry["offset_ms"]) < 5 * max(entry["uncertainty_ms"], 0.05)
    assert room.status()["clocks"].keys() == clocks.keys()
