"""The control room with real subprocess modules: start order, refusals, crashes, shutdown,
macros, callbacks, LSL command markers, ZeroMQ events and the CLI against a running instance.

Test modules: tests/cr_modules/echo.py (built on DefaultServer) and tests/cr_modules/raw_dareplane.py
(no library, raw sockets, Dareplane dialect: stands in for a module in another language).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, free_port
from cr_helpers import PY, RAW, cli, echo, header, pid_alive, wait_for

from control_room.handle import StartError
from control_room.macros import MacroError
from shared_utils.errors import CommandFailed

# -- start-up ----------------------------------------------------------------------------------------


def test_dependency_order_and_parallel_start(room_factory, tmp_path: Path) -> None:
    stamp = tmp_path / "stamps.txt"
    d_started = tmp_path / "d_started"
    pa, pb = free_port(), free_port()
    body = (
        # a is not ready until d has started: a sequential start in file order would hang here
        echo("a", "--stamp", str(stamp), "--wait-file", str(d_started), port=pa)
        + echo("b", "--stamp", str(stamp), "--needs", str(pa), after='"a"', port=pb)
        + echo("c", "--stamp", str(stamp), "--needs", str(pb), after='"b"')
        + echo("d", "--stamp", str(stamp), "--touch", str(d_started))
    )
    room = room_factory(body)
    assert {m["state"] for m in room.module_info().values()} == {"ready"}
    t = {}
    for line in stamp.read_text().splitlines():
        name, what, when = line.split()
        t[(name, what)] = float(when)
    assert t[("b", "start")] >= t[("a", "ready")]
    assert t[("c", "start")] >= t[("b", "ready")]
    assert t[("d", "start")] < t[("a", "ready")]  # d depends on nothing: started alongside a
    assert room.startup_s is not None


def test_port_held_is_refused_naming_the_process(room_factory) -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    port = held.getsockname()[1]
    try:
        room = room_factory(echo("ok") + echo("clash", port=port), start=False)
        with pytest.raises(StartError) as info:
            room.up()
        msg = str(info.value)
        assert f"port {port} is held by pid {os.getpid()}" in msg
        assert "clash" in msg
        pid = room.supervisor.handles["ok"].pid if room.supervisor else None
        assert pid is None or not pid_alive(pid)  # nothing left running
    finally:
        held.close()


def test_module_failing_readiness_reports_its_output_and_nothing_remains(room_factory) -> None:
    pa = free_port()
    body = echo("a") + echo("needy", "--needs", str(pa))  # nobody on pa: exits 5 at start
    room = room_factory(body, start=False)
    with pytest.raises(StartError) as info:
        room.up()
    msg = str(info.value)
    assert "needy: exited with code 5 before it was ready" in msg
    assert f"dependency on port {pa} is not up" in msg
    assert not pid_alive(room.supervisor.handles["a"].pid)


def test_attach_to_unreachable_module_is_clear(room_factory) -> None:
    port = free_port()
    body = f"""
[modules.far]
attach = true
port = {port}
ready_timeout_s = 0.5
"""
    room = room_factory(body, start=False)
    with pytest.raises(StartError, match=f"far: no answer to UP on 127.0.0.1:{port} within 0.5 s"):
        room.up()


def test_ready_when_lsl_stream_appears(room_factory, lsl_name: str) -> None:
    stream = f"{lsl_name}_ready"
    body = echo("pub", "--outlet", stream) + f'ready = {{ stream = "{stream}", timeout_s = 20 }}\n'
    room = room_factory(body)
    assert room.module_info()["pub"]["state"] == "ready"
    assert room.wait_stream(stream, 1.0)


# -- supervision -------------------------------------------------------------------------------------


def test_crash_is_reported_restarted_and_its_output_logged(room_factory) -> None:
    room = room_factory(echo("steady") + echo("fragile"))
    steady_pid = room.module_info()["steady"]["pid"]
    first_pid = room.module_info()["fragile"]["pid"]
    room.send("fragile", "CRASH")
    info = wait_for(
        lambda: (
            (i := room.module_info()["fragile"])["restarts"] == 1 and i["state"] == "ready" and i
        ),
        "fragile restarted",
    )
    assert info["pid"] != first_pid
    assert room.send("fragile", "ECHO", {"again": True}) == {"again": True}
    assert room.module_info()["steady"]["pid"] == steady_pid  # the others keep running

    def logged() -> list[str]:
        return [
            r["event"]
            for _, r in list(room.logs)
            if r.get("module") == "fragile" and r.get("logger", "").endswith(("stdout", "stderr"))
        ]

    wait_for(lambda: "echo: last words on stderr" in logged(), "stderr line in the log")
    assert "echo: about to crash (stdout)" in logged()
    log_file = Path(room.status()["log_file"])
    room.down()
    on_disk = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(
        r["module"] == "fragile" and r["event"] == "echo: last words on stderr" for r in on_disk
    )


def test_restart_policy_no_leaves_module_failed(room_factory) -> None:
    room = room_factory(echo("once", restart="no") + echo("other"))
    room.send("once", "CRASH")
    info = wait_for(lambda: (i := room.module_info()["once"])["state"] == "failed" and i, "failed")
    assert info["exit_code"] == 3
    assert "restart policy 'no'" in info["error"]
    assert room.module_info()["other"]["state"] == "ready"


def test_clean_shutdown_stops_everything_gracefully(room_factory) -> None:
    room = room_factory(
        echo("a") + echo("b", after='"a"') + f"\n[modules.raw]\ncmd = {json.dumps(RAW)}\n"
    )
    pids = {n: i["pid"] for n, i in room.module_info().items()}
    ports = {n: i["port"] for n, i in room.module_info().items()}
    steps = room.down()
    assert steps["a"] == ["STOP", "CLOSE"]
    assert steps["b"] == ["STOP", "CLOSE"]
    assert "SIGKILL" not in steps["raw"]
    for n, pid in pids.items():
        assert not pid_alive(pid), n
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", ports[n]))  # port released


# -- macros ------------------------------------------------------------------------------------------

MACROS = """
[macros.session]
description = "templating, saved results, waits, a failing step"
[macros.session.default_json]
word = "hello"
stream = "STREAM"
[[macros.session.steps]]
send = "a"
cmd = "ECHO"
kwargs = { text = "$word", b_port = "${modules.b.port}" }
save_as = "first"
[[macros.session.steps]]
send = "a"
cmd = "OUTLET"
kwargs = { stream = "$stream" }
[[macros.session.steps]]
wait_stream = "$stream"
timeout_s = 20
[[macros.session.steps]]
until = "b"
cmd = "ECHO"
kwargs = { n = 3 }
expect = { n = { ">=" = 3 } }
timeout_s = 5
[[macros.session.steps]]
send = "b"
cmd = "ECHO"
kwargs = { copied = "${first.text}", port = "${first.b_port}" }
[[macros.session.steps]]
send = "b"
cmd = "FAIL"
[[macros.session.steps]]
send = "b"
cmd = "ECHO"
kwargs = { never = true }

[macros.dp]
name = "DP"
[macros.dp.default_json]
value = "x"
label = "$value-y"
[macros.dp.cmds]
com1 = ["a", "ECHO", "got=label"]
"""


def test_macro_runs_steps_and_stops_at_failing_one(room_factory, lsl_name: str) -> None:
    macros = MACROS.replace("STREAM", f"{lsl_name}_m")
    room = room_factory(echo("a") + echo("b") + macros)
    with pytest.raises(MacroError) as info:
        room.run_macro("session")
    msg = str(info.value)
    assert "macro 'session' stopped at step 6 (b FAIL)" in msg
    assert "FAIL always fails (on purpose)" in msg
    assert "5 of 7 steps had completed" in msg
    rep = info.value.report  # type: ignore[attr-defined]
    assert [s.ok for s in rep.steps] == [True] * 5 + [False]
    b_port = room.module_info()["b"]["port"]
    assert rep.steps[0].result == {"text": "hello", "b_port": b_port}
    hist = room.send("b", "HISTORY")
    assert {"copied": "hello", "port": b_port} in hist
    assert {"never": True} not in hist  # nothing after the failing step ran
    assert room.run_macro("dp").steps[0].result == {"got": "x-y"}  # Dareplane cmds + $templating


def test_macro_until_times_out_with_last_reason(room_factory) -> None:
    body = (
        echo("a")
        + """
[macros.wait_forever]
[[macros.wait_forever.steps]]
until = "a"
cmd = "ECHO"
kwargs = { n = 1 }
expect = { n = 2 }
timeout_s = 0.5
every_s = 0.1
"""
    )
    room = room_factory(body)
    with pytest.raises(
        MacroError, match=r"a ECHO did not succeed within 0.5 s .*last: n is 1, want == 2"
    ):
        room.run_macro("wait_forever")


# -- callbacks, markers, events --------------------------------------------------------------------


def test_callbacks_are_routed_both_dialects(room_factory) -> None:
    body = echo("a") + echo("b") + f"\n[modules.raw]\ncmd = {json.dumps(RAW)}\n"
    room = room_factory(body)
    assert room.module_info()["raw"]["protocol"] == "dareplane"
    # ours: {"event": "callback"} after SUBSCRIBE
    room.send("a", "CALLBACK", {"target": "b", "cmd": "ECHO", "kwargs": {"from": "a"}})
    # Dareplane dialect: target|CMD|json written back on the command connection, twice in a row
    for i in range(2):
        room.send("raw", "EMIT", {"target": "a", "cmd": "ECHO", "payload": {"from": "raw", "i": i}})
    wait_for(lambda: {"from": "a"} in room.send("b", "HISTORY"), "callback a -> b")
    wait_for(lambda: len(room.send("a", "HISTORY")) == 2, "two callbacks raw -> a")
    assert sorted(h["i"] for h in room.send("a", "HISTORY")) == [0, 1]


def test_every_command_is_an_lsl_marker(room_factory, lsl_name: str) -> None:
    import pylsl

    room = room_factory(echo("a"))
    streams = pylsl.resolve_byprop("name", lsl_name, 1, 10.0)
    assert streams, "marker stream not visible"
    inlet = pylsl.StreamInlet(streams[0])
    inlet.open_stream(10.0)
    before = pylsl.local_clock()
    room.send("a", "ECHO", {"k": 1}, source="test")
    room.send("a", "STATUS")  # read-only queries are not markers
    room.send("a", "HISTORY")
    got = []
    while len(got) < 2:
        sample, ts = inlet.pull_sample(timeout=10.0)
        assert sample is not None, f"markers missing, got {got}"
        got.append((json.loads(sample[0]), ts))
    assert got[0][0] == {"module": "a", "cmd": "ECHO", "kwargs": {"k": 1}, "source": "test"}
    assert got[1][0]["cmd"] == "HISTORY"
    assert before <= got[0][1] <= pylsl.local_clock()


def test_zeromq_pub_status_commands_and_replies(room_factory) -> None:
    import zmq

    room = room_factory(echo("a", restart="no"))
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(room.bus.address)
    got: list[tuple[str, dict]] = []

    def receive(pred: Callable[[str, dict], bool]) -> dict:
        while True:
            for t, m in got:
                if pred(t, m):
                    return m
            assert sub.poll(10_000), f"no ZeroMQ message; got {got}"
            topic, body = sub.recv_multipart()
            got.append((topic.decode(), json.loads(body)))

    # a SUB socket joins asynchronously: send until the first command shows up
    wait_for(lambda: room.send("a", "ECHO", {"probe": 1}) and sub.poll(100), "subscription active")
    room.send("a", "ECHO", {"seen": 2})
    cmd = receive(lambda t, m: t == "command" and m["kwargs"] == {"seen": 2})
    assert cmd["module"] == "a"
    assert cmd["cmd"] == "ECHO"
    assert cmd["lsl_time"] > 0
    rep = receive(lambda t, m: t == "reply" and m["result"] == {"seen": 2})
    assert rep["ok"] is True
    assert rep["cmd"] == "ECHO"
    assert rep["ms"] >= 0
    room.send("a", "CRASH")
    st = receive(lambda t, m: t == "status" and m["state"] == "failed")
    assert st["module"] == "a"
    sub.close(0)


# -- the CLI against a running control room, and SIGKILL of the control room ------------------------


def test_cli_against_running_control_room(running_up) -> None:
    body = (
        echo("a")
        + f"\n[modules.raw]\ncmd = {json.dumps(RAW)}\n"
        + """
[macros.hi]
[[macros.hi.steps]]
send = "a"
cmd = "ECHO"
kwargs = { hi = 1 }
"""
    )
    proc, port = running_up(body)
    st = cli("status", port=port)
    assert st.returncode == 0, st.stderr
    assert "a " in st.stdout
    assert "ready" in st.stdout
    assert "raw" in st.stdout
    res = cli("send", "a", "ECHO", '{"x": 1}', port=port)
    assert res.returncode == 0
    assert json.loads(res.stdout) == {"x": 1}
    bad = cli("send", "a", "FAIL", port=port)
    assert bad.returncode == 1
    assert "FAIL always fails" in bad.stderr
    nope = cli("send", "raw", "NOPE", port=port)  # a Dareplane module would silently ignore it
    assert nope.returncode == 1
    assert "raw: unknown command 'NOPE'" in nope.stderr
    assert "Valid commands: EMIT" in nope.stderr
    unknown = cli("send", "nobody", "UP", port=port)
    assert unknown.returncode == 1
    assert "unknown module 'nobody'" in unknown.stderr
    mac = cli("macro", "hi", port=port)
    assert mac.returncode == 0
    assert "a ECHO" in mac.stdout
    assert '{"hi": 1}' in mac.stdout
    logs = cli("logs", "--module", "a", "-n", "500", port=port)
    assert logs.returncode == 0
    assert "[a" in logs.stdout
    status = json.loads(cli("status", "--json", port=port).stdout)
    a_port = status["modules"]["a"]["port"]
    chk = cli("check", f"127.0.0.1:{a_port}", port=port)
    assert "R1" in chk.stdout
    assert "pass" in chk.stdout
    follow = subprocess.Popen(
        [PY, "-m", "control_room", "--port", str(port), "logs", "-f", "--module", "a"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli("send", "a", "CRASH", port=port).returncode == 0
        for line in follow.stdout:  # type: ignore[union-attr]
            if "echo: last words on stderr" in line:
                break
    finally:
        follow.kill()
        follow.wait(10)

    def a_restarted() -> bool:
        a = json.loads(cli("status", "--json", port=port).stdout)["modules"]["a"]
        return a["state"] == "ready" and a["restarts"] == 1

    wait_for(a_restarted, "a restarted")
    status = json.loads(cli("status", "--json", port=port).stdout)
    pids = [m["pid"] for m in status["modules"].values()]
    down = cli("down", port=port)
    assert down.returncode == 0
    assert proc.wait(30) == 0
    assert "shutting down" in proc.stdout.read()  # type: ignore[union-attr]
    for pid in pids:
        assert not pid_alive(pid)


def test_no_orphans_when_control_room_is_sigkilled(running_up) -> None:
    body = echo("a") + echo("b", after='"a"') + f"\n[modules.raw]\ncmd = {json.dumps(RAW)}\n"
    proc, port = running_up(body)
    status = json.loads(cli("status", "--json", port=port).stdout)
    pids = {n: m["pid"] for n, m in status["modules"].items()}
    assert all(pid_alive(p) for p in pids.values())
    os.kill(proc.pid, signal.SIGKILL)  # only the control room, not its process group
    proc.wait(10)
    for name, pid in pids.items():
        wait_for(lambda pid=pid: not pid_alive(pid), f"{name} (pid {pid}) to exit")


def test_unmodified_dareplane_module(room_factory, tmp_path: Path) -> None:
    """dareplane-utils' own server: one connection at a time, banner, no replies, callbacks."""
    body = (
        echo("a")
        + f"""
[modules.dp]
kind = "python"
cwd = "{ROOT}"
custom_entry_point = "tests.cr_modules.dp_module"
"""
    )
    room = room_factory(body)
    assert room.module_info()["dp"]["protocol"] == "dareplane"
    mark = tmp_path / "mark.txt"
    room.send("dp", "MARK", {"file": str(mark), "text": "first"})
    room.send("dp", "CB", {"target": "a", "cmd": "ECHO", "via": "dareplane"})
    wait_for(lambda: room.send("a", "HISTORY") == [{"via": "dareplane"}], "callback dp -> a")
    wait_for(lambda: mark.exists() and mark.read_text() == "first\n", "MARK ran")
    with pytest.raises(CommandFailed, match="cannot take ';', '[|]' or non-ASCII"):
        room.send("dp", "MARK", {"file": str(mark), "text": "a;b"})
    # health checks share the single connection: several watchdog rounds keep it ready
    assert room.handle("dp").link.up(2.0)
    assert room.module_info()["dp"]["state"] == "ready"
    pid = room.module_info()["dp"]["pid"]
    steps = room.down()
    assert steps["dp"] == ["STOP", "CLOSE"]  # CLOSE alone ended it: no signal needed
    assert not pid_alive(pid)


def test_run_subcommand_prints_summary_and_fails_clearly(tmp_path: Path, lsl_name: str) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        header(tmp_path, lsl_name)
        + echo("a")
        + """
[macros.experiment]
[[macros.experiment.steps]]
send = "a"
cmd = "ECHO"
kwargs = { cv_accuracy = 0.875, file = "nothing.xdf" }
[[macros.experiment.steps]]
send = "a"
cmd = "FAIL"
"""
    )
    res = subprocess.run(
        [PY, "-m", "control_room", "run", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    assert "SUMMARY  (macro FAILED)" in out
    assert "stopped at step 2 (a FAIL)" in out
    assert "FAIL always fails" in out
    assert "decoder cross-validated accuracy: 0.875" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["summary"]["steps_ok"] == 1
    assert summary["summary"]["startup_s"] > 0
    assert summary["summary"]["modules"]["a"]["state"] == "stopped"


def test_up_with_invalid_config_names_the_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[modules.a]\nmodule = "x"\nprot = 3\n')
    res = subprocess.run(
        [PY, "-m", "control_room", "up", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    assert f"{cfg}:3: modules.a.prot: unknown key" in res.stderr


def test_module_written_in_c_is_started_commanded_and_closed(room_factory, tmp_path: Path) -> None:
    """examples/modules/c: plain C, no libraries; started with `cmd`, dialect detected."""
    exe = tmp_path / "c_module"
    src = ROOT / "examples" / "modules" / "c"
    subprocess.run(["make", "-s", "-C", str(src), f"TARGET={exe}"], check=True, timeout=120)
    room = room_factory(
        f'[modules.c]\ncmd = ["{exe}", "--port", "{{port}}", "--name", "{{name}}"]\n'
    )
    assert room.module_info()["c"]["protocol"] == "json"
    assert "ECHO" in room.module_info()["c"]["commands"]
    assert room.send("c", "ECHO", {"from": "control room", "n": [1, 2]}) == {
        "from": "control room",
        "n": [1, 2],
    }
    pid = room.module_info()["c"]["pid"]
    assert room.down()["c"] == ["STOP", "CLOSE"]
    assert not pid_alive(pid)
