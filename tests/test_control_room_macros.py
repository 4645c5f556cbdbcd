"""Issue 18 (control room) and issue 12 item 12: macros' finally steps, live macro output, CANCEL,
restarting a failed module by hand, what STATUS shows while a module restarts, a roll-back
reported once, and no waiting on a peer that stopped answering."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from cr_helpers import PY, cli, echo, header, pid_alive, spawn_cli, wait_for

from control_room.macros import MacroError
from shared_utils.errors import ModuleUnreachable

ROOT = Path(__file__).resolve().parent.parent

CLEANUP = """
[macros.work]
[[macros.work.steps]]
send = "a"
cmd = "ECHO"
kwargs = { step = "work" }
[[macros.work.steps]]
send = "a"
cmd = "FAIL"
[[macros.work.steps]]
send = "a"
cmd = "ECHO"
kwargs = { step = "never" }
[[macros.work.finally]]
label = "first cleanup"
send = "a"
cmd = "ECHO"
kwargs = { step = "cleanup 1" }
[[macros.work.finally]]
send = "a"
cmd = "FAIL"
[[macros.work.finally]]
send = "a"
cmd = "ECHO"
kwargs = { step = "cleanup 2" }
"""

LONG = """
[macros.long]
[[macros.long.steps]]
send = "a"
cmd = "ECHO"
kwargs = { step = "first" }
[[macros.long.steps]]
label = "long wait"
wait_s = 120
[[macros.long.finally]]
send = "a"
cmd = "ECHO"
kwargs = { step = "finally" }
"""

PLAIN = LONG[: LONG.index("[[macros.long.finally]]")]


def _history(room) -> list:
    return [h.get("step") for h in room.send("a", "HISTORY")]


def test_finally_steps_run_after_a_failing_step_each_one_reported(room_factory) -> None:
    room = room_factory(echo("a") + CLEANUP)
    with pytest.raises(MacroError) as info:
        room.run_macro("work")
    msg = str(info.value)
    assert "stopped at step 2 (a FAIL)" in msg
    assert "then finally step 2 (a FAIL)" in msg  # a failing finally step is named too
    assert _history(room) == ["work", "cleanup 1", "cleanup 2"]  # all ran, "never" did not
    rep = info.value.report  # type: ignore[attr-defined]
    assert [s.ok for s in rep.finally_steps] == [True, False, True]
    as_dict = room.last_reports["work"]
    assert [s["ok"] for s in as_dict["finally"]] == [True, False, True]
    assert as_dict["finally"][0]["label"] == "first cleanup"


def test_finally_steps_run_when_the_macro_is_cancelled_or_the_mesh_goes_down(room_factory) -> None:
    room = room_factory(echo("a") + LONG)
    errors: list[str] = []

    def run() -> None:
        try:
            room.run_macro("long")
        except MacroError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=run)
    t.start()
    wait_for(lambda: _history(room) == ["first"], "first step done")
    assert room.cancel_macro("cancelled by the test")
    t.join(30)
    assert "cancelled: cancelled by the test" in errors[0]
    assert _history(room) == ["first", "finally"]
    # shutdown cancels a running macro and waits for its finally steps before stopping modules
    t = threading.Thread(target=run)
    t.start()
    wait_for(lambda: _history(room).count("first") == 2, "second run started")
    room.down()
    t.join(30)
    assert "the control room is shutting down" in errors[1]
    assert room.last_reports["long"]["finally"][0]["ok"] is True


def test_run_summary_shows_the_finally_steps(tmp_path: Path, lsl_name: str) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(header(tmp_path, lsl_name) + echo("a") + CLEANUP.replace("work", "experiment"))
    res = subprocess.run(
        [PY, "-m", "control_room", "run", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "finally steps (always run): 2/3 ok" in res.stdout
    assert "    finally step 2 (a FAIL) FAILED: FAIL failed: FAIL always fails" in res.stdout
    summary = json.loads(res.stdout.strip().splitlines()[-1])["summary"]
    assert [f["ok"] for f in summary["finally"]] == [True, False, True]


def test_ctrl_c_during_run_cancels_the_macro_and_its_finally_steps_still_run(
    tmp_path: Path, lsl_name: str
) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(header(tmp_path, lsl_name) + echo("a") + LONG.replace("long", "experiment"))
    proc = spawn_cli("run", str(cfg))
    try:
        while "a ECHO" not in _read_line(proc.stdout, timeout=60):
            pass
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    finally:
        _end(proc)
    assert proc.returncode == 1, out
    assert "cancelled: SIGINT received" in out
    assert "finally steps (always run): 1/1 ok" in out
    assert "modules (time to ready" in out  # the summary, after a clean shutdown


def _read_line(stream, timeout: float = 30.0) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return stream.readline()


def _macro_cli(port: int, name: str) -> subprocess.Popen:
    return spawn_cli("--port", str(port), "macro", name)


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_macro_cli_prints_each_step_as_it_finishes(running_up) -> None:
    up = running_up(echo("a") + PLAIN)
    proc = _macro_cli(up.port, "long")
    try:
        first = _read_line(proc.stdout)  # while the 120 s wait still runs
        assert "a ECHO" in first
        assert '{"step": "first"}' in first
        assert proc.poll() is None
    finally:
        _end(proc)


def test_ctrl_c_in_macro_cli_cancels_and_the_finally_steps_run(running_up) -> None:
    up = running_up(echo("a") + LONG)
    proc = _macro_cli(up.port, "long")
    try:
        assert "a ECHO" in _read_line(proc.stdout)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    finally:
        _end(proc)
    assert "cancelling macro 'long' (its finally steps still run)" in rest
    assert "long wait" in rest
    assert "cancelled by CANCEL" in rest
    assert "finally   1 a ECHO" in rest
    assert proc.returncode == 1
    status = json.loads(cli("status", "--json", port=up.port).stdout)
    assert status["running_macro"] is None
    history = json.loads(cli("send", "a", "HISTORY", port=up.port).stdout)
    assert [h["step"] for h in history] == ["first", "finally"]


def test_macro_cli_gives_up_on_a_control_room_that_stopped_answering(running_up) -> None:
    up = running_up(echo("a") + PLAIN)
    proc = _macro_cli(up.port, "long")
    try:
        _read_line(proc.stdout, timeout=150)
        os.kill(up.proc.pid, signal.SIGSTOP)  # its host "vanished": connections stay open
        out = proc.communicate(timeout=60)[0]
    finally:
        os.kill(up.proc.pid, signal.SIGCONT)
        _end(proc)
    assert proc.returncode == 1
    assert f"the control room at 127.0.0.1:{up.port} stopped answering" in out


def test_restart_brings_back_a_failed_module_from_the_cli_and_a_macro(
    running_up, room_factory
) -> None:
    up = running_up(echo("a", restart="no") + echo("b"))
    port = up.port
    old_pid = up.modules["a"][0]
    assert cli("send", "a", "CRASH", port=port).returncode == 0
    wait_for(
        lambda: (
            json.loads(cli("status", "--json", port=port).stdout)["modules"]["a"]["state"]
            == "failed"
        ),
        "a failed",
    )
    res = cli("restart", "a", port=port)
    assert res.returncode == 0, res.stderr
    assert "a ready: pid" in res.stdout
    a = json.loads(cli("status", "--json", port=port).stdout)["modules"]["a"]
    assert a["state"] == "ready"
    assert a["pid"] not in (None, old_pid)
    assert json.loads(cli("send", "a", "ECHO", '{"back": 1}', port=port).stdout) == {"back": 1}
    # a running module is replaced, and a macro step can do the same
    room = room_factory(
        echo("m")
        + """
[macros.again]
[[macros.again.steps]]
restart = "m"
[[macros.again.steps]]
send = "m"
cmd = "ECHO"
kwargs = { fresh = true }
"""
    )
    before = room.module_info()["m"]["pid"]
    rep = room.run_macro("again")
    assert rep.steps[0].result["state"] == "ready"
    assert room.module_info()["m"]["pid"] != before
    assert not pid_alive(before)
    assert room.send("m", "HISTORY") == [{"fresh": True}]
    unknown = cli("restart", "nobody", port=port)
    assert unknown.returncode == 1
    assert "unknown module 'nobody'" in unknown.stderr


def test_status_shows_no_dead_pid_while_a_module_restarts(room_factory) -> None:
    room = room_factory(echo("a", restart_delay=2.0))
    old = room.module_info()["a"]["pid"]
    room.send("a", "CRASH")
    info = wait_for(
        lambda: (i := room.module_info()["a"])["state"] == "restarting" and i, "restarting"
    )
    assert info["pid"] is None
    assert info["last_pid"] == old
    with pytest.raises(ModuleUnreachable, match="a on 127.0.0.1:.* is restarting; not sent"):
        room.send("a", "ECHO")


def test_roll_back_reports_each_module_once(tmp_path: Path, lsl_name: str) -> None:
    cfg = tmp_path / "rb.toml"
    cfg.write_text(header(tmp_path, lsl_name) + echo("a") + echo("needy", "--needs", "1"))
    res = subprocess.run(
        [PY, "-m", "control_room", "up", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    out = res.stdout + res.stderr
    stopped = re.findall(r"^\d\d:\d\d:\d\d (\S+)\s+stopped\b", res.stdout, re.MULTILINE)
    assert sorted(stopped) == ["a", "needy"], out
    assert out.count("dependency on port 1 is not up") == 1, out


def test_commands_to_a_module_that_stopped_answering_fail_at_once(room_factory) -> None:
    room = room_factory(echo("a"))
    pid = room.module_info()["a"]["pid"]
    in_flight: list[BaseException] = []

    def waiting_command() -> None:
        try:
            room.send("a", "ECHO", {"lost": 1}, timeout=100)
        except ModuleUnreachable as exc:
            in_flight.append(exc)

    os.kill(pid, signal.SIGSTOP)  # alive, port open, answers nothing: like a vanished host
    try:
        t = threading.Thread(target=waiting_command)
        t.start()  # sent while the module still counts as ready: waits for its reply
        wait_for(lambda: room.module_info()["a"]["state"] == "unresponsive", "unresponsive")
        t.join(20)  # ended by the watchdog, not by its 100 s timeout
        assert "a on 127.0.0.1:" in str(in_flight[0])
        assert "stopped answering (3 health checks missed); ECHO was sent" in str(in_flight[0])
        with pytest.raises(ModuleUnreachable, match="is unresponsive .*control-room restart a"):
            room.send("a", "ECHO", timeout=20)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: room.module_info()["a"]["state"] == "ready", "ready again")
    assert room.send("a", "ECHO", {"ok": 1}) == {"ok": 1}
