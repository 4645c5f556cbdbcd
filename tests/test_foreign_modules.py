"""Modules in other languages (examples/modules/: Node.js, C, bash with socat) with the real
control room: each passes the required conformance rules, is started from a config with
``cmd = [...]``, commanded, restarted after ``kill -9``, stopped cleanly at shutdown, and its own
log records reach the control room's receiver. Then modules that meet only the required rules
(tests/cr_modules/minimal.py under the control room, examples/modules/node/minimal.js through the
checker), and foreign modules that misbehave (never answer UP, answer garbage, flood their
output, die at start): reported with their last output, the rest of the mesh keeps running, the
restart policy applies.

A language whose toolchain is missing is skipped with the reason (node; gcc; socat and jq).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import helpers
import pytest
from conftest import ROOT, free_port, stop_process_group
from cr_helpers import cli as _cli
from cr_helpers import pid_alive

from control_room.handle import StartError
from control_room.room import ControlRoom
from shared_utils.conformance import failures, run_checks
from shared_utils.errors import CommandFailed
from shared_utils.platform.processes import group_alive

EXAMPLES = ROOT / "examples" / "modules"
MINIMAL = [sys.executable, str(ROOT / "tests" / "cr_modules" / "minimal.py"), "--port", "{port}"]
TOKEN = "foreign-test-token-5f2c"
# Recommended rules each example leaves out on purpose (the checker warns, exit code 0).
WARNINGS = {"node": set(), "c": set(), "shell": {"R7", "R10", "R12", "R13"}}
wait_for = partial(helpers.wait_for, timeout=30.0)


@pytest.fixture(params=["node", "c", "shell"])
def example(request: pytest.FixtureRequest) -> tuple[str, list[str]]:
    """(language, argv with {port} and {name} for the control room)."""
    lang = request.param
    if lang == "node":
        argv = node_argv("module.js")
    elif lang == "c":
        argv = [str(request.getfixturevalue("c_module"))]
    else:
        missing = [t for t in ("socat", "jq") if shutil.which(t) is None]
        if missing:
            pytest.skip(f"the shell module needs {' and '.join(missing)} (apt-get install ...)")
        argv = [str(EXAMPLES / "shell" / "module.sh")]
    return lang, [*argv, "--port", "{port}", "--name", "{name}"]


def node_argv(script: str) -> list[str]:
    """``node examples/modules/node/SCRIPT``; the test is skipped without node."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed (apt-get install nodejs)")
    return ["node", str(EXAMPLES / "node" / script)]


@pytest.fixture
def mesh(request: pytest.FixtureRequest) -> Callable[..., ControlRoom]:
    """test_control_room's ``room_factory``, with the console (what a user sees) kept in
    ``room.console.stream``."""
    factory = request.getfixturevalue("room_factory")

    def make(body: str, start: bool = True) -> ControlRoom:
        room = factory(body, start=False)
        room.console.stream = io.StringIO()
        if start:
            room.up()
        return room

    return make


def table(name: str, argv: list[str], extra: str = "") -> str:
    return f"""
[modules.{name}]
cmd = {json.dumps(argv)}
restart = "on-failure"
restart_delay_s = 0.1
{extra}
"""


def console(room: ControlRoom) -> str:
    return room.console.stream.getvalue()  # type: ignore[union-attr]


def own_records(room: ControlRoom, module: str, event: str) -> list[dict]:
    """Records the module shipped itself (not its stdout/stderr lines, which the control room
    forwards under ``<module>.stdout``)."""
    return [
        r
        for _, r in list(room.logs)
        if r.get("module") == module and r.get("logger") == module and r.get("event") == event
    ]


# -- the examples --------------------------------------------------------------------------------


def test_example_passes_the_required_rules_and_checks_its_token(example) -> None:
    """With MESH_TOKEN set: every required rule passes (CLI exit 0), the recommended rules it
    leaves out are warnings, a wrong token is refused and nothing is answered before AUTH."""
    lang, argv = example
    port = free_port()
    cmd = [a.replace("{port}", str(port)).replace("{name}", f"{lang}_conf") for a in argv]
    env = {**os.environ, "MESH_TOKEN": TOKEN, "MESH_LOG_SERVER": "none", "MESH_LOG_CONSOLE": "0"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_until_up_with_token(port, proc)
        out = subprocess.run(
            [sys.executable, "-m", "shared_utils.conformance", f"127.0.0.1:{port}"]
            + ["--token", TOKEN, "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        results = [json.loads(line) for line in out.stdout.splitlines()]
        warned = {r["rule"] for r in results if not r["ok"]}
        assert warned == WARNINGS[lang], out.stdout
        assert all(r["level"] == "recommended" for r in results if not r["ok"])
        no_token = {r.rule: r for r in run_checks("127.0.0.1", port, rules=["R1", "R14"])}
    finally:
        stop_process_group(proc)
        if proc.stdout:
            proc.stdout.close()
    assert not no_token["R1"].ok
    assert "authentication required" in no_token["R1"].detail
    assert no_token["R14"].ok
    assert "wrong token got an error" in no_token["R14"].detail


def wait_until_up_with_token(port: int, proc: subprocess.Popen, token: str | None = TOKEN) -> None:
    def answers() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        return run_checks("127.0.0.1", port, timeout=1.0, token=token, rules=["R1"])[0].ok

    wait_for(answers, f"module on port {port} answering UP")


def test_control_room_starts_commands_restarts_and_stops_example(mesh, example) -> None:
    lang, argv = example
    room = mesh(table(lang, argv))
    info = room.module_info()[lang]
    assert info["state"] == "ready"
    assert info["protocol"] == "json"
    assert {"ECHO", "UP", "GET_PCOMMS", "CLOSE"} <= set(info["commands"])
    args = {"from": "control room", "n": [1, 2.5, None], "text": "a;b|c \u00e9"}
    assert room.send(lang, "ECHO", args) == args
    with pytest.raises(CommandFailed, match="unknown command 'NOPE'"):
        room.send(lang, "NOPE")  # refused by the control room from the GET_PCOMMS list
    res = _cli("send", lang, "ECHO", '{"via": "cli"}', port=room.server.port)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"via": "cli"}
    wait_for(lambda: own_records(room, lang, "listening"), f"{lang}'s own 'listening' record")

    first = info["pid"]
    os.kill(first, signal.SIGKILL)
    again = wait_for(
        lambda: (i := room.module_info()[lang])["restarts"] == 1 and i["state"] == "ready" and i,
        f"{lang} restarted",
    )
    assert again["pid"] != first
    assert room.send(lang, "ECHO", {"again": True}) == {"again": True}
    wait_for(lambda: len(own_records(room, lang, "listening")) == 2, "records of the second run")
    assert own_records(room, lang, "bad request") == []  # nothing it lacks was sent to it

    pid = again["pid"]
    log_file = Path(room.status()["log_file"])
    steps = room.down()[lang]
    assert steps == ["STOP", "CLOSE"]  # it closed itself: no signal was needed
    assert not pid_alive(pid)
    wait_for(lambda: not group_alive(pid), "no process of the module's group left")
    on_disk = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(r["module"] == lang and r["event"] == "closed" for r in on_disk)


# -- a module with only the required rules -------------------------------------------------------


def test_module_with_only_the_required_rules(mesh) -> None:
    """No HELP, STATUS, STOP, CLOSE, AUTH, SUBSCRIBE: the checker passes it with warnings (fails it
    with --strict); the control room takes its commands from GET_PCOMMS, its status from UP, and
    stops it with a signal without asking first."""
    room = mesh(table("mini", MINIMAL))
    info = room.module_info()["mini"]
    assert (info["state"], info["commands"]) == ("ready", ["ECHO", "UP", "GET_PCOMMS"])
    assert room.send("mini", "ECHO", {"x": [1]}) == {"x": [1]}
    with pytest.raises(CommandFailed, match="Valid commands: ECHO, UP, GET_PCOMMS"):
        room.send("mini", "HELP")
    results = run_checks("127.0.0.1", info["port"], timeout=0.5)
    assert {r.rule for r in results if not r.ok} == {"R7", "R8", "R10", "R12", "R13", "R16"}
    assert failures(results) == []
    assert failures(results, strict=True) == ["R7", "R8", "R10", "R12", "R13", "R16"]
    cli = _cli("check", f"127.0.0.1:{info['port']}", "--timeout", "0.5", port=room.server.port)
    assert cli.returncode == 0, cli.stdout
    assert "R10 WARN" in cli.stdout
    assert "all required rules pass; warnings: R7, R8, R10, R12, R13, R16" in cli.stdout
    strict = subprocess.run(
        [sys.executable, "-m", "shared_utils.conformance", f"127.0.0.1:{info['port']}"]
        + ["--strict", "--rule", "R1", "--rule", "R10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert strict.returncode == 1, strict.stdout
    assert "FAILED: R10" in strict.stdout
    assert room.down()["mini"] == ["SIGTERM"]
    assert not pid_alive(info["pid"])


def checker(port: int, *options: str) -> subprocess.Popen:
    """``python -m shared_utils.conformance 127.0.0.1:PORT OPTIONS``, as a user runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "shared_utils.conformance", f"127.0.0.1:{port}", *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_minimal_node_module_passes_the_required_rules_and_warns_about_the_rest() -> None:
    """examples/modules/node/minimal.js, the smallest module docs/writing-a-module.md starts
    with: the checker passes it (exit 0) and names the recommended rules it leaves out as
    warnings; with --strict those fail it (exit 1)."""
    port = free_port()
    proc = subprocess.Popen(
        [*node_argv("minimal.js"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    missing = "R7, R8, R10, R12, R13, R16"  # HELP, STATUS, STOP/CLOSE, SUBSCRIBE, ';', 1 MiB
    try:
        wait_until_up_with_token(port, proc, token=None)
        runs = [checker(port, "--timeout", "0.5", *strict) for strict in ([], ["--strict"])]
        (plain, _), (strict, _) = (run.communicate(timeout=120) for run in runs)  # side by side
    finally:
        stop_process_group(proc)
        if proc.stdout:
            proc.stdout.close()
    assert runs[0].returncode == 0, plain
    assert f"10/16 pass; all required rules pass; warnings: {missing}" in plain
    assert [line for line in plain.splitlines() if " FAIL " in line] == []
    assert runs[1].returncode == 1, strict
    assert f"10/16 pass; FAILED: {missing}" in strict


# -- bad input -------------------------------------------------------------------------------------
BAD = ("never-up", "garbage", "flood", "die")
BROKEN = ("never-up", "garbage", "die")
# What the reports must say: the failure, then the module's own last output line.
REPORTED = [
    "never-up: no answer to UP on 127.0.0.1:",
    "minimal: listening on",
    "(never-up)",
    "garbage: no answer to UP on 127.0.0.1:",
    "(garbage)",
    "die: exited with code 3 before it was ready",
    "cannot open /dev/fake_amplifier",
]


def test_misbehaving_modules_at_start_are_reported_with_their_output(mesh) -> None:
    """At `up`, a module that never answers UP, answers garbage or dies fails the start with its
    last output lines (all problems at once), and nothing is left running."""
    body = "".join(table(b, [*MINIMAL, "--bad", b], "ready_timeout_s = 1.5") for b in BROKEN)
    room = mesh('[modules.echo]\nmodule = "tests.cr_modules.echo"\n' + body, start=False)
    with pytest.raises(StartError) as info:
        room.up()
    assert [part for part in REPORTED if part not in str(info.value)] == []
    for h in room.supervisor.handles.values():
        assert h.pid is None or not pid_alive(h.pid), h.name


def test_misbehaving_modules_after_a_restart_leave_the_mesh_running(mesh, tmp_path: Path) -> None:
    """Healthy at first, broken when the supervisor restarts them after kill -9: each is reported
    with its last output lines and given up after max_restarts; the flooding one comes back (its
    50 MB go to the tail, a count goes to the log); the echo module never notices."""
    body = '[modules.echo]\nmodule = "tests.cr_modules.echo"\n' + "".join(
        table(b, [*MINIMAL, "--bad", b, "--bad-after", str(tmp_path / b)], "max_restarts = 2")
        + f"ready_timeout_s = {30 if b == 'flood' else 1}\n"  # writing 50 MB takes its time
        for b in BAD
    )
    room = mesh(body)
    echo_pid = room.module_info()["echo"]["pid"]
    for b in BAD:
        os.kill(room.module_info()[b]["pid"], signal.SIGKILL)

    def settled() -> dict | None:
        info = room.module_info()
        assert room.send("echo", "ECHO", {"ping": 1}) == {"ping": 1}  # answers all along
        done = all(info[b]["state"] == "failed" for b in BROKEN)
        return info if done and info["flood"]["state"] == "ready" else None

    info = wait_for(settled, "the broken modules given up, the flooding one back")
    assert [info[b]["restarts"] for b in BROKEN] == [2, 2, 2]
    assert info["flood"]["restarts"] == 1
    assert info["echo"]["pid"] == echo_pid
    assert info["echo"]["restarts"] == 0
    text = console(room)
    assert "restart_failed" in text
    assert [part for part in REPORTED if part not in text] == []
    assert (
        room.supervisor.handles["flood"].output.tail[-1].endswith("(flood)")
    )  # its last line kept
    dropped = [
        r["event"]
        for _, r in list(room.logs)
        if r.get("module") == "flood" and "lines not logged" in str(r.get("event"))
    ]
    assert dropped, "the flood was not summarised in the log"
