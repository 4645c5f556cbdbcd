"""DefaultServer over real sockets: built-ins, tasks, concurrency, auth, bad input, process exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from wire_helpers import Wire, pid_alive, pid_gone, wait_for

from shared_utils.errors import CommandError
from shared_utils.protocol import MAX_LINE_BYTES
from shared_utils.server import DefaultServer, is_loopback

# A child that starts a grandchild in the same process group; both ignore SIGTERM when asked,
# print their pids and then wait to be killed.
FAMILY = r"""
import os, signal, subprocess, sys, time
ignore = sys.argv[1] == "ignore"
if ignore:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(600)"
g = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
g.stdout.readline()
with open(sys.argv[2], "w") as f:
    f.write(f"{os.getpid()} {g.pid}")
time.sleep(600)
"""


class Core:
    """Commands for the in-process server tests."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.stopped_by_module = 0

    def start(self, channels: int = 8, srate: float = 500.0, stream: str = "mock_eeg") -> dict:
        """Start streaming synthetic EEG."""
        if channels < 1:
            raise CommandError(f"channels must be >= 1, got {channels}")
        return {"stream": stream, "channels": channels, "srate": srate}

    def fit(self, xdf: str, note: str | None = None) -> str:
        """Fit a model to a recording."""
        return xdf

    def boom(self) -> None:
        """Raise on purpose."""
        raise ValueError("kaput")

    def block(self) -> str:
        """Block this connection until the test releases it."""
        self.entered.set()
        self.release.wait(30)
        return "released"

    def nan(self) -> list:
        """Return values JSON cannot hold."""
        return [float("nan"), float("inf")]

    def loop_thread(self) -> tuple[threading.Thread, threading.Event]:
        """Dareplane convention: return (thread, stop_event)."""
        ev = threading.Event()
        return threading.Thread(target=ev.wait, daemon=True), ev

    def status(self) -> dict:
        """Module state merged into STATUS."""
        return {"state": "IDLE", "module": "ignored"}

    def stop(self) -> dict:
        """Module's own STOP, run before the tracked tasks are stopped."""
        self.stopped_by_module += 1
        return {"module_stopped": True}


@pytest.fixture
def core() -> Core:
    return Core()


@pytest.fixture
def server(make_server: Callable[..., DefaultServer], core: Core) -> DefaultServer:
    return make_server(
        {
            "START": core.start,
            "FIT": core.fit,
            "BOOM": core.boom,
            "BLOCK": core.block,
            "NAN": core.nan,
            "LOOP": core.loop_thread,
        }
    )


# -- built-ins --------------------------------------------------------------------------------
def test_up_and_get_pcomms_in_newline_mode(server: DefaultServer) -> None:
    """UP is true; GET_PCOMMS lists own commands, then Dareplane's built-ins, then ours."""
    with Wire(server.port) as w:
        assert w.cmd("UP") == {"ok": True, "cmd": "UP", "result": True}
        names = w.cmd("GET_PCOMMS")["result"]
    assert names == [
        *["START", "FIT", "BOOM", "BLOCK", "NAN", "LOOP"],
        *["STOP", "CLOSE", "GET_PCOMMS", "UP", "HELP", "STATUS", "AUTH", "SUBSCRIBE"],
        *["EXPINFO", "EXPINIT", "EXPSTART", "EXPSTATUS", "EXPEND", "EXPINTERRUPT", "EXPCLEANUP"],
    ]


def test_semicolon_mode_replies_like_dareplane(server: DefaultServer) -> None:
    """UP; -> 1, GET_PCOMMS; -> A|B|..., errors and other commands produce no bytes."""
    with Wire(server.port) as w:
        w.send(b"UP;")
        assert w.read_exact(1) == b"1"
        w.send(b"NOPE;START|[1];START;BOOM;GET_PCOMMS;")
        expected = "|".join(server.pcommands).encode()
        assert w.read_exact(len(expected)) == expected
        w.send(b"UP;UP;")
        assert w.read_exact(2) == b"11"


def test_help_lists_arguments_defaults_and_docs(server: DefaultServer) -> None:
    """HELP comes from the signatures; HELP|{"command": ...} returns one entry."""
    with Wire(server.port) as w:
        helped = w.cmd("HELP")["result"]
        one = w.cmd("HELP", command="start")["result"]
    assert helped["module"] == "test_module"
    assert [c["name"] for c in helped["commands"]] == server.pcommands
    assert one["doc"] == "Start streaming synthetic EEG."
    assert one["kwargs"][0] == {"name": "channels", "type": "int", "required": False, "default": 8}
    fit = next(c for c in helped["commands"] if c["name"] == "FIT")
    assert fit["kwargs"][0] == {"name": "xdf", "type": "str", "required": True}
    assert fit["kwargs"][1]["type"] == "str or null"
    stop = next(c for c in helped["commands"] if c["name"] == "STOP")
    assert [k["name"] for k in stop["kwargs"]] == ["task"]


def test_status_reports_module_version_uptime_tasks(server: DefaultServer) -> None:
    """STATUS carries the documented fields and lists running tasks with their ids."""
    with Wire(server.port) as w:
        task = w.cmd("LOOP")["result"]
        status = w.cmd("STATUS")["result"]
    assert status["module"] == "test_module"
    assert status["pid"] == os.getpid()
    assert isinstance(status["version"], str)
    assert status["uptime_s"] >= 0
    assert status["connections"] >= 1
    assert [t["id"] for t in status["tasks"]] == [task["task"]]
    assert status["tasks"][0]["kind"] == "thread"
    assert status["tasks"][0]["alive"] is True


def test_module_status_and_stop_are_merged(make_server: Callable[..., DefaultServer]) -> None:
    """A module's own STATUS fields join the built-in ones; its STOP runs, then tasks stop."""
    core = Core()
    s = make_server({"STATUS": core.status, "STOP": core.stop, "LOOP": core.loop_thread})
    with Wire(s.port) as w:
        status = w.cmd("STATUS")["result"]
        assert status["state"] == "IDLE"
        assert status["module"] == "test_module"
        tid = w.cmd("LOOP")["result"]["task"]
        stopped = w.cmd("STOP")["result"]
    assert stopped["module_stopped"] is True
    assert core.stopped_by_module == 1
    assert stopped["stopped_tasks"] == [{"id": tid, "name": "LOOP", "outcome": "stopped"}]


def test_case_insensitive_names_and_pipelined_order(server: DefaultServer) -> None:
    """'up' resolves to UP; many commands in one write are answered in order."""
    with Wire(server.port) as w:
        w.send(b'up\nSTART|{}\nNOPE\nget_pcomms\n{"id": 5, "cmd": "Up"}\n')
        got = [w.reply() for _ in range(5)]
    assert [r["cmd"] for r in got] == ["UP", "START", "NOPE", "GET_PCOMMS", "UP"]
    assert got[4]["id"] == 5
    assert [r["ok"] for r in got] == [True, True, False, True, True]


def test_non_finite_results_arrive_as_null(server: DefaultServer) -> None:
    """NaN and inf are sent as null."""
    with Wire(server.port) as w:
        assert w.cmd("NAN")["result"] == [None, None]


# -- tasks ------------------------------------------------------------------------------------
def test_task_ids_and_stop_one_task(make_server: Callable[..., DefaultServer]) -> None:
    """start_thread tasks get ids; STOP|{"task": id} stops only that one."""
    holder: dict[str, DefaultServer] = {}

    def run() -> Any:
        """Start a background loop."""
        return holder["s"].tasks.start_thread(lambda ev: ev.wait(), name="RUN")

    s = holder["s"] = make_server({"RUN": run})
    with Wire(s.port) as w:
        a = w.cmd("RUN")["result"]
        b = w.cmd("RUN")["result"]
        assert a["name"] == "RUN"
        assert b["task"] == a["task"] + 1
        stopped = w.cmd("STOP", task=a["task"])["result"]
        assert stopped == {"id": a["task"], "name": "RUN", "outcome": "stopped"}
        assert [t["id"] for t in w.cmd("STATUS")["result"]["tasks"]] == [b["task"]]
        err = w.cmd("STOP", task=999)
        assert err["ok"] is False
        assert f"no task 999; running tasks: [{b['task']}]" in err["error"]
        assert w.cmd("STOP")["result"]["stopped_tasks"][0]["id"] == b["task"]
        assert w.cmd("STATUS")["result"]["tasks"] == []


def test_thread_event_pair_is_tracked_and_stopped(server: DefaultServer) -> None:
    """A (Thread, Event) return is started if needed, gets an id, and STOP sets its event."""
    with Wire(server.port) as w:
        task = w.cmd("LOOP")["result"]
        t = server.tasks.get(task["task"])
        assert t is not None
        assert t.thread is not None
        assert t.thread.is_alive()
        w.cmd("STOP")
    assert t.stop_event.is_set()
    assert not t.thread.is_alive()


def test_stuck_thread_stop_escalates_and_ends(make_server: Callable[..., DefaultServer]) -> None:
    """A thread that ignores its event does not hang STOP: the reply says it is still running."""
    gate = threading.Event()

    def stuck() -> tuple[threading.Thread, threading.Event]:
        """A thread that ignores its stop event."""
        return threading.Thread(target=gate.wait, daemon=True), threading.Event()

    s = make_server({"STUCK": stuck})
    with Wire(s.port) as w:
        w.cmd("STUCK")
        outcome = w.cmd("STOP")["result"]["stopped_tasks"][0]["outcome"]
    gate.set()
    assert outcome.startswith("still running after 0.5 s")


def _spawn_family(tmp_path: Any, mode: str) -> tuple[subprocess.Popen, str]:
    pids = tmp_path / f"pids_{mode}"
    proc = subprocess.Popen([sys.executable, "-c", FAMILY, mode, str(pids)], start_new_session=True)
    return proc, str(pids)


@pytest.mark.parametrize(("mode", "outcome"), [("ignore", "killed"), ("default", "terminated")])
def test_popen_task_group_gets_sigterm_then_sigkill(
    make_server: Callable[..., DefaultServer], tmp_path: Any, mode: str, outcome: str
) -> None:
    """A returned Popen is tracked; STOP ends the child's whole group, escalating to SIGKILL."""
    made: dict[str, Any] = {}

    def spawn() -> subprocess.Popen:
        """Start a child that has a grandchild ignoring SIGTERM."""
        made["proc"], made["pids"] = _spawn_family(tmp_path, mode)
        return made["proc"]

    s = make_server({"SPAWN": spawn})
    with Wire(s.port) as w:
        reply = w.cmd("SPAWN")["result"]
        assert reply["pid"] == made["proc"].pid
        assert reply["name"] == "SPAWN"
        wait_for(
            lambda: os.path.exists(made["pids"]) and os.path.getsize(made["pids"]) > 0,
            "the child to report its pids",
        )
        child, grandchild = map(int, open(made["pids"]).read().split())
        assert pid_alive(grandchild)
        stopped = w.cmd("STOP", task=reply["task"])["result"]
    assert stopped["outcome"] == outcome
    assert made["proc"].returncode == (-signal.SIGKILL if mode == "ignore" else -signal.SIGTERM)
    wait_for(lambda: pid_gone(grandchild), "the grandchild to be killed with its group")
    assert pid_gone(child)


# -- concurrency ------------------------------------------------------------------------------
def test_64_clients_at_once(server: DefaultServer) -> None:
    """64 connections open together; each one's UP and a command are answered."""
    wires = [Wire(server.port) for _ in range(64)]
    try:
        for i, w in enumerate(wires):
            w.send(f'UP\nSTART|{{"channels": {i + 1}}}\n'.encode())
        for i, w in enumerate(wires):
            assert w.reply()["result"] is True
            assert w.reply()["result"]["channels"] == i + 1
    finally:
        for w in wires:
            w.close()


def test_slow_command_does_not_block_up_elsewhere(server: DefaultServer, core: Core) -> None:
    """While BLOCK holds one connection, another connection's UP is answered."""
    with Wire(server.port) as a, Wire(server.port) as b:
        a.send(b"BLOCK\n")
        assert core.entered.wait(20), "BLOCK never started"
        assert b.cmd("UP")["result"] is True
        assert b.cmd("STATUS")["ok"] is True
        assert not core.release.is_set()  # a's command is still running
        core.release.set()
        assert a.reply()["result"] == "released"


# -- auth -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ip", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.20", False),
        ("::", False),
        ("lab-pc.local", False),
    ],
)
def test_is_loopback(ip: str, loopback: bool) -> None:
    """Any 127/8 address, ::1 and localhost count as loopback; names and wildcards do not."""
    assert is_loopback(ip) is loopback


def test_binding_beyond_loopback_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """0.0.0.0 without a token refuses to start, naming the fix."""
    monkeypatch.delenv("MESH_TOKEN", raising=False)
    s = DefaultServer(0, ip="0.0.0.0", name="x")
    assert s.requires_auth
    with pytest.raises(RuntimeError, match="needs a token"):
        s.init_server()


def test_other_loopback_address_needs_no_token(make_server: Callable[..., DefaultServer]) -> None:
    """127.0.0.2 is loopback: served without AUTH."""
    s = make_server(ip="127.0.0.2")
    with Wire(s.port, host="127.0.0.2") as w:
        assert w.cmd("UP")["result"] is True


def test_auth_required_until_the_right_token(
    make_server: Callable[..., DefaultServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With AUTH required, everything but AUTH is refused until the token matches."""
    monkeypatch.setenv("MESH_TOKEN", "s3cret")
    s = make_server(require_auth=True)
    assert s.token == "s3cret"
    with Wire(s.port) as w:
        for line in ("UP", "GET_PCOMMS", "NOPE", "STOP"):
            r = w.cmd(line)
            assert r["ok"] is False
            assert r["error"].startswith("authentication required")
        assert w.cmd("AUTH", token="wrong")["error"] == "AUTH: wrong token"
        assert w.cmd("UP")["ok"] is False
        assert w.cmd("auth", token="s3cret")["result"] is True
        assert w.cmd("UP")["result"] is True
    with Wire(s.port) as other:  # authentication is per connection
        assert other.cmd("UP")["ok"] is False


# -- bad input --------------------------------------------------------------------------------
MALFORMED = [
    (b"STRAT", "unknown command 'STRAT'. Did you mean START?"),
    (b"STRAT", "Valid commands: START, FIT, BOOM"),
    (b"START|{bad json", "payload of START is not valid JSON"),
    (b"START|[1, 2]", "payload of START must be a JSON object, got list"),
    (b'START|{"chanels": 8}', "START: unknown argument 'chanels' (did you mean 'channels'?)"),
    (b'START|{"chanels": 8}', "valid arguments: channels, srate, stream"),
    (b"FIT", "FIT: missing required argument xdf"),
    (b'START|{"channels": "8"}', "START: argument 'channels' must be int, got string '8'"),
    (b'START|{"channels": true}', "argument 'channels' must be int, got boolean True"),
    (b'START|{"srate": "fast"}', "argument 'srate' must be float, got string"),
    (b'START|{"channels": 0}', "channels must be >= 1, got 0"),
    (b"BOOM", "BOOM raised ValueError: kaput (traceback in the module log)"),
    (b"ST\xffART", "command is not valid UTF-8 (byte 2)"),
    (b"\x00\x01\x02", "unknown command"),
    (b'{"id": 3}', "a JSON request needs a non-empty string 'cmd'"),
    (b'{"cmd": "UP", "kwargs": 5}', "'kwargs' must be a JSON object, got int"),
    (b'UP|{"x": 1}', "UP: unknown argument 'x'"),
    (b'STOP|{"task": "one"}', "argument 'task' must be an integer task id"),
    (b'STOP|{"tsk": 1}', "STOP: unknown argument 'tsk'; valid arguments: task"),
    (b'HELP|{"command": "NOPE"}', "unknown command 'NOPE'"),
    (b'STATUS|{"verbose": true}', "STATUS takes none"),
    (b"|", "empty command name"),
]


@pytest.mark.parametrize(("line", "error"), MALFORMED)
def test_malformed_input_gets_a_named_error_then_next_command_works(
    server: DefaultServer, line: bytes, error: str
) -> None:
    """Each bad input is answered with ok false and a specific message; UP still works after."""
    with Wire(server.port) as w:
        w.send(line + b"\n")
        reply = w.reply()
        assert reply["ok"] is False, reply
        assert error in reply["error"], reply["error"]
        assert "result" not in reply
        assert w.cmd("UP")["result"] is True


def test_over_long_line_error_then_close(server: DefaultServer) -> None:
    """Over 1 MiB: commands before it are answered, then the error, then the connection closes."""
    with Wire(server.port) as w:
        w.send(b"UP\n" + b"z" * (MAX_LINE_BYTES + 10))
        rest = w.read_until_closed().split(b"\n")
    assert json.loads(rest[0])["cmd"] == "UP"
    err = json.loads(rest[1])
    assert err["ok"] is False
    assert "longer than 1048576 bytes" in err["error"]
    assert rest[2:] == [b""]
    with Wire(server.port) as w:
        assert w.cmd("UP")["result"] is True


def test_client_disconnect_mid_command_leaves_server_serving(server: DefaultServer) -> None:
    """Abrupt disconnects (RST, half commands) do not affect other clients."""
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b'START|{"channels": ')
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    with Wire(server.port) as w:
        assert w.cmd("UP")["result"] is True


# -- events -----------------------------------------------------------------------------------
def test_events_go_to_subscribers_and_callbacks_to_semicolon_clients(server: DefaultServer) -> None:
    """send_event reaches SUBSCRIBEd newline clients; callbacks use target|CMD|json on ; clients."""
    with Wire(server.port) as sub, Wire(server.port) as plain, Wire(server.port) as dp:
        assert sub.cmd("SUBSCRIBE")["result"] is True
        assert plain.cmd("UP")["result"] is True
        dp.send(b"UP;")
        assert dp.read_exact(1) == b"1"
        n = server.send_callback("bpod", "SOFT_CODE", code=1)
        assert n == 2
        event = sub.reply()
        assert event == {
            "event": "callback",
            "module": "test_module",
            "target": "bpod",
            "cmd": "SOFT_CODE",
            "kwargs": {"code": 1},
        }
        raw = b'bpod|SOFT_CODE|{"code": 1}'
        assert dp.read_exact(len(raw)) == raw
        assert plain.cmd("UP") == {"ok": True, "cmd": "UP", "result": True}  # no event first


# -- whole process ----------------------------------------------------------------------------
def test_close_exits_the_process_cleanly(module_process: Callable[..., Any]) -> None:
    """CLOSE replies, runs the module's CLOSE hook, and the process exits with code 0."""
    proc, port = module_process("tests.sample_module")
    with Wire(port) as w:
        reply = w.cmd("CLOSE")
        assert reply["ok"] is True
        assert reply["result"]["closing"] == "sample"
        assert w.read_until_closed() == b""
    assert proc.wait(20) == 0
    assert "close hook ran" in proc.stdout.read()


def test_sigterm_exits_the_process_cleanly(module_process: Callable[..., Any]) -> None:
    """SIGTERM shuts the module down through the same path as CLOSE (exit code 0, hook ran)."""
    proc, port = module_process("tests.sample_module")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert "close hook ran" in proc.stdout.read()


def test_main_thread_task_runs_on_the_main_thread(module_process: Callable[..., Any]) -> None:
    """run_on_main_thread work executes on the process's main thread while commands are served."""
    proc, port = module_process("tests.sample_module")
    with Wire(port) as w:
        task = w.cmd("ON_MAIN")["result"]
        assert task["name"] == "on_main"
        assert isinstance(task["task"], int)
        result = w.cmd("MAIN_RESULT")["result"]
    assert result == {"on_main": True, "thread": "MainThread"}


def test_close_stops_tasks_of_the_process(
    module_process: Callable[..., Any], tmp_path: Any
) -> None:
    """CLOSE stops a running child process group before the module exits."""
    proc, port = module_process("tests.sample_module")
    pids = tmp_path / "pids"
    with Wire(port) as w:
        w.cmd("SPAWN", argv=["-c", FAMILY, "ignore", str(pids)])
        wait_for(lambda: pids.exists() and pids.stat().st_size > 0, "child pids")
        child, grandchild = map(int, pids.read_text().split())
        stopped = w.cmd("CLOSE")["result"]["stopped_tasks"]
    assert stopped[0]["outcome"] == "killed"
    assert proc.wait(20) == 0
    wait_for(lambda: pid_gone(grandchild) and pid_gone(child), "the task's process group to end")


def test_connection_cap_refuses_politely(make_server: Callable[..., DefaultServer]) -> None:
    """Beyond max_connections a new connection gets an error line and is closed; others go on."""
    s = make_server(max_connections=3)
    wires = [Wire(s.port) for _ in range(3)]
    for w in wires:
        assert w.cmd("UP")["result"] is True
    with Wire(s.port) as extra:
        refused = json.loads(extra.read_until_closed())
    assert refused["ok"] is False
    assert "server full: 3 connections open" in refused["error"]
    wires.pop().close()
    wait_for(
        lambda: wires[0].cmd("STATUS")["result"]["connections"] == 2,
        "the closed connection to free its slot",
    )
    with Wire(s.port) as again:
        assert again.cmd("UP")["result"] is True
    for w in wires:
        assert w.cmd("UP")["result"] is True
        w.close()


def test_health_checks_then_commands_keep_their_order(server: DefaultServer, core: Core) -> None:
    """UPs answered on the I/O thread never overtake a command sent before them."""
    with Wire(server.port) as w:
        w.send(b"UP\n")
        assert w.reply()["cmd"] == "UP"
        w.send(b"UP\nUP\nBLOCK\nUP\nSTART\nUP\n")
        assert [w.reply()["cmd"] for _ in range(2)] == ["UP", "UP"]
        assert core.entered.wait(20), "BLOCK never started"
        w.send(b"UP\n")  # arrives while BLOCK runs: must wait for it
        core.release.set()
        assert [w.reply()["cmd"] for _ in range(5)] == ["BLOCK", "UP", "START", "UP", "UP"]


def test_client_that_never_reads_does_not_stall_others(server: DefaultServer) -> None:
    """A client flooding UPs without reading replies gets its own thread; others are served."""
    flood = socket.create_connection(("127.0.0.1", server.port))
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    me = flood.getsockname()

    def push() -> None:
        try:
            flood.sendall(b"UP\n" * 300_000)  # ~12 MB of replies nobody reads
        except OSError:
            pass

    t = threading.Thread(target=push, daemon=True)
    t.start()
    try:
        wait_for(
            lambda: any(th.name == f"conn-{me}" for th in threading.enumerate()),
            "the flooding connection to be handed to its own thread",
        )
        for _ in range(3):
            with Wire(server.port) as w:
                assert w.cmd("UP")["result"] is True
                assert w.cmd("GET_PCOMMS")["ok"] is True
    finally:
        flood.close()
        t.join(20)
