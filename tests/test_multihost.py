"""Two hosts for real: a control room in namespace A drives modules it starts over ssh in
namespace B (tests/netns_helpers.py), across a veth pair, with a lab LSL config (KnownPeers).

What must cross: LSL streams (a recording in A holds B's stream, with B's hostname and measured
clock offsets), commands, structured logs and stdout/stderr; the module in B is started, crashes,
is restarted and is stopped by the control room, and nothing of ours is left in B. Two rigs must
not mix: a stream name published in both A and B is refused unless the host is named. A host
that vanishes mid-recording is reported by name, the recording keeps what it had, and the
module on it ends by itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for
from netns_helpers import A_ADDR, B_ADDR, B_HOSTNAME, TwoHosts, skip_reason, two_hosts

ROOT = Path(__file__).resolve().parent.parent
CR_PORT = 9310  # inside namespace A only
STREAMER_PORT, ECHO_PORT = 8301, 8302  # inside namespace B only

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHosts]:
    with two_hosts(tmp_path_factory.mktemp("two_hosts")) as h:
        yield h


class Mesh:
    """A ``control-room up`` in namespace A and its CLI, run as a user would."""

    def __init__(self, hosts: TwoHosts, tmp: Path, body: str, control: str = "") -> None:
        self.hosts = hosts
        self.tmp = tmp
        token = tmp / "token"
        token.write_text(uuid.uuid4().hex + "\n")
        token.chmod(0o600)
        self.env = {
            **os.environ,
            "LSLAPICFG": str(hosts.lab_cfg),
            "MESH_TOKEN_FILE": str(token),
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("MESH_TOKEN", None)
        cfg = tmp / "mesh.toml"
        cfg.write_text(
            f'[control_room]\nhost = "{A_ADDR}"\nport = {CR_PORT}\npub_port = 0\nlog_port = 0\n'
            f'log_dir = "{tmp / "logs"}"\nwatchdog_s = 0.2\ntoken_file = "{token}"\n'
            f'marker_stream = "markers_{uuid.uuid4().hex[:6]}"\n{control}\n' + body
        )
        self.out = open(tmp / "up.out", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            hosts.a.argv(sys.executable, "-m", "control_room", "up", str(cfg)),
            cwd=ROOT,
            env=self.env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        res = subprocess.run(
            self.hosts.a.argv(
                sys.executable,
                "-m",
                "control_room",
                "--host",
                A_ADDR,
                "--port",
                str(CR_PORT),
                *args,
            ),  # fmt: skip
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"control-room {' '.join(args)} failed: {res.stderr}{self.log()}")
        return res.stdout + res.stderr

    def send(self, module: str, cmd: str, payload: dict | None = None, **kw: Any) -> Any:
        out = self.cli("send", module, cmd, json.dumps(payload or {}), **kw)
        return json.loads(out) if kw.get("check", True) else out

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json"))

    def wait_ready(self) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"control room exited:\n{self.log()}")
            try:
                st = self.status()
            except AssertionError:
                return None
            mods = st["modules"]  # empty until the supervisor exists: not "all ready" yet
            return st if mods and all(m["state"] == "ready" for m in mods.values()) else None

        return wait_for(ready, "every module ready", timeout=60, every=0.3)

    def log(self) -> str:
        self.out.flush()
        return "\n--- control room output ---\n" + (self.tmp / "up.out").read_text()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.cli("down", check=False)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
        self.out.close()


def remote(name: str, module: str, port: int, hosts: TwoHosts, extra: str = "") -> str:
    """A module table started over ssh in namespace B."""
    return f"""
[modules.{name}]
module = "{module}"
launch = "ssh"
host = "{B_ADDR}"
ssh = "{hosts.ssh_dest}"
ssh_options = ["-F", "{hosts.ssh_config}"]
remote_cwd = "{ROOT}"
python_executable = "{sys.executable}"
port = {port}
ready_timeout_s = 40
stop_timeout_s = 2
{extra}
"""


def recorder(tmp: Path) -> str:
    return f"""
[modules.recorder]
module = "services.recorder"
args = ["--data-dir", "{tmp / "data"}"]
stop_timeout_s = 2
"""


@pytest.fixture
def mesh(hosts: TwoHosts, tmp_path: Path) -> Iterator[Any]:
    made: list[Mesh] = []

    def make(body: str, control: str = "") -> Mesh:
        m = Mesh(hosts, tmp_path, body, control)
        made.append(m)
        return m

    yield make
    for m in made:
        m.stop()


def impostor(hosts: TwoHosts, stream: str) -> subprocess.Popen:
    """An outlet in A with the same name as B's stream: the other rig."""
    code = (
        "import pylsl, time\n"
        f"o = pylsl.StreamOutlet(pylsl.StreamInfo({stream!r}, 'EEG', 4, 250, "
        "pylsl.cf_float32, 'rig-a-amp'))\n"
        "while True:\n    o.push_sample([0.0] * 4); time.sleep(0.004)\n"
    )
    return subprocess.Popen(
        hosts.a.argv(sys.executable, "-c", code),
        env={**os.environ, "LSLAPICFG": str(hosts.lab_cfg)},
        start_new_session=True,
    )


def test_control_room_runs_modules_on_the_far_host(hosts: TwoHosts, mesh: Any) -> None:
    stream = f"eeg_{uuid.uuid4().hex[:6]}"
    m = mesh(
        remote("streamer", "services.mockup_streamer", STREAMER_PORT, hosts)
        + remote("echo_b", "tests.cr_modules.echo", ECHO_PORT, hosts, 'restart = "on-failure"')
        + recorder(hosts.tmp / uuid.uuid4().hex[:6])
    )
    st = m.wait_ready()
    streamer = st["modules"]["streamer"]
    assert (streamer["launch"], streamer["host"]) == ("ssh", B_ADDR)
    assert isinstance(streamer["remote_pid"], int)
    assert str(streamer["remote_pid"]) in hosts.b.run("ps", "-e", "-o", "pid=").stdout

    # commands cross; the module in B publishes a stream the recorder in A sees
    m.send("streamer", "START", {"stream": stream, "channels": 4, "srate": 250, "markers": False})
    fake = impostor(hosts, stream)
    try:

        def both_sources() -> bool:
            seen = {(s["name"], s["hostname"]) for s in m.send("recorder", "LIST")}
            return len([1 for n, _ in seen if n == stream]) == 2

        wait_for(both_sources, "the stream from both hosts", timeout=20, every=0.3)
        # a bare name two rigs publish is refused, naming both sources
        refused = m.send("recorder", "START", {"file": "x.xdf", "streams": [stream]}, check=False)
        for part in ("2 sources", f"host {B_HOSTNAME!r}", "source_id 'rig-a-amp'"):
            assert part in refused
        started = m.send(
            "recorder",
            "START",
            {"file": "two.xdf", "streams": [{"name": stream, "host": B_HOSTNAME}]},
        )

        def recorded() -> dict | None:
            rs = m.send("recorder", "STATUS")
            host = rs.get("hosts", {}).get(B_HOSTNAME, {})
            return (
                rs
                if rs["counts"].get(stream, 0) > 500 and host.get("offset_ms") is not None
                else None
            )

        rs = wait_for(recorded, "samples and a clock offset from B", timeout=30, every=0.5)
    finally:
        fake.kill()
        fake.wait(10)
    assert [s["hostname"] for s in rs["streams"]] == [B_HOSTNAME]
    b_offset = rs["hosts"][B_HOSTNAME]["offset_ms"]
    assert abs(b_offset) < 1.0  # one kernel clock underneath: only measurement noise
    m.send("recorder", "STOP")

    import pyxdf

    streams, _ = pyxdf.load_xdf(
        started["file"], synchronize_clocks=False, dejitter_timestamps=False
    )
    assert [s["info"]["name"][0] for s in streams] == [stream]
    assert streams[0]["info"]["hostname"][0] == B_HOSTNAME
    assert len(streams[0]["time_series"]) > 500
    assert len(streams[0]["clock_values"]) >= 1

    # clock offsets to B measured by the control room itself
    clocks = m.status()["clocks"]
    assert abs(clocks[B_HOSTNAME]["offset_ms"]) < 1.0, clocks
    assert (clocks[B_HOSTNAME]["address"], clocks[B_HOSTNAME]["same_host"]) == (B_ADDR, False)

    # structured logs (through the receiver, token-authenticated) and stdout/stderr (through ssh)
    echo_pid = m.status()["modules"]["echo_b"]["remote_pid"]
    m.send("echo_b", "CRASH")
    wait_for(
        lambda: (e := m.status()["modules"]["echo_b"])["state"] == "ready" and e["restarts"] == 1,
        "echo_b restarted over ssh",
        timeout=40,
        every=0.3,
    )
    assert m.status()["modules"]["echo_b"]["remote_pid"] != echo_pid
    logs = m.cli("logs", "-n", "2000")
    assert "last words on stderr" in logs
    assert "about to crash (stdout)" in logs
    # the module's own structured record, sent from B to the receiver in A (with the token)
    assert f"[mockup_streamer] streaming  stream={stream}" in logs
    assert "log connection refused" not in logs

    # stopped by the control room: nothing of ours left in B
    m.stop()
    assert m.proc.returncode == 0, m.log()
    wait_for(lambda: not hosts.others_in_b(), "B to be empty but for sshd", timeout=15, every=0.2)


def test_far_host_that_vanishes_is_reported_and_its_module_ends(hosts: TwoHosts, mesh: Any) -> None:
    stream = f"eeg_{uuid.uuid4().hex[:6]}"
    m = mesh(
        remote("streamer", "services.mockup_streamer", STREAMER_PORT, hosts, 'restart = "no"')
        + recorder(hosts.tmp / uuid.uuid4().hex[:6])
    )
    m.wait_ready()
    m.send("streamer", "START", {"stream": stream, "channels": 4, "srate": 250, "markers": False})
    started = m.send(
        "recorder", "START", {"file": "lost.xdf", "streams": [{"name": stream, "host": B_HOSTNAME}]}
    )
    wait_for(
        lambda: m.send("recorder", "STATUS")["counts"].get(stream, 0) > 250,
        "samples from B",
        timeout=30,
        every=0.3,
    )
    hosts.set_link(up=False)
    try:
        # reported stalled after 2 s of silence, then lost once the resolver forgets it (3 s)
        rs = wait_for(
            lambda: (r := m.send("recorder", "STATUS"))["stalled"] + r["lost"] and r,
            "the recorder to report B's stream stalled or lost",
            timeout=15,
            every=0.3,
        )
        assert stream in rs["stalled"] + rs["lost"], rs
        assert rs["recording"]

        def failed() -> dict | None:
            s = m.status()["modules"]["streamer"]
            return s if s["state"] == "failed" else None

        s = wait_for(failed, "the control room to give the streamer up", timeout=30, every=0.3)
        assert f"ssh to {hosts.ssh_dest} failed or lost the host (exit 255)" in s["error"]
        # sshd in B drops the dead session (ClientAliveInterval), stdin closes, the module ends
        wait_for(lambda: not hosts.others_in_b(), "the module in B to end", timeout=20, every=0.3)
    finally:
        hosts.set_link(up=True)
    stopped = m.send("recorder", "STOP")
    assert stopped["counts"][stream] > 250

    import pyxdf

    streams, _ = pyxdf.load_xdf(started["file"])
    assert len(streams[0]["time_series"]) == stopped["counts"][stream]


def test_a_rig_that_never_answers_fails_the_start_naming_it(hosts: TwoHosts, mesh: Any) -> None:
    body = (
        remote("streamer", "services.mockup_streamer", STREAMER_PORT, hosts).replace(
            f'ssh = "{hosts.ssh_dest}"',
            'ssh = "root@10.123.0.9"',  # no such host on the veth
        )
        + recorder(hosts.tmp / uuid.uuid4().hex[:6])
    )
    m = mesh(body)
    assert m.proc.wait(60) != 0
    out = (m.tmp / "up.out").read_text()
    assert "streamer: exited with code 255 before it was ready" in out
    assert "ssh to root@10.123.0.9 failed or lost the host" in out
    assert re.search(r"recorder +stopped +exit_code=0", out)  # what had started is stopped again
