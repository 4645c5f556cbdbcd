"""Sessions when things go wrong (issue 14, "Bad input"): a participant that never answers, two
(or no) main syncs, a module that misses EXPEND, a module that dies mid-session, the control room
going down mid-session, foreign modules, and config mistakes. Each gives a clear error that names
who and which message, the session folder stays complete up to that point, and nothing is left
running without the user being told."""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import pyxdf
from conftest import ROOT, free_port
from cr_helpers import echo, wait_for

from control_room.config import ConfigError, parse_config
from control_room.macros import MacroError
from control_room.room import ControlRoom
from control_room.session import SessionError
from shared_utils.session_layout import next_exp_ref

TODAY = _dt.date.today().isoformat()
EXP = "tests.cr_modules.exp_module"
MINIMAL = [sys.executable, str(ROOT / "tests" / "cr_modules" / "minimal.py"), "--port", "{port}"]
FAST = """
[session]
main_sync = "control_room"
timeouts = { init = 1.0, end = 1.0, interrupt = 1.0, cleanup = 1.0, start = 2.0 }
status_every_s = 0.3
"""


def exp(name: str, *args: str, more: str = "") -> str:
    argv = ", ".join(json.dumps(a) for a in ("--name", name, *args))
    return f'\n[modules.{name}]\nmodule = "{EXP}"\nargs = [{argv}]\nstop_timeout_s = 1.0\n{more}\n'


def messages(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(x)["msg"] for x in path.read_text().splitlines()]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def room_with(room_factory: Callable[..., ControlRoom], data: Path) -> Callable[[str], ControlRoom]:
    return lambda body: room_factory(body, extra=f'data_dir = "{data}"')


def test_a_module_that_never_answers_is_named_and_everyone_is_interrupted(
    room_with: Callable[[str], ControlRoom], data: Path, tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    room = room_with(exp("good", "--record", str(good)) + exp("slow", "--hang", "EXPINIT") + FAST)
    port = room.handle("slow").port
    with pytest.raises(SessionError) as err:
        room.sessions.start("mouse01")
    text = str(err.value)
    assert f"slow (127.0.0.1:{port}) did not answer EXPINIT within 1 s" in text
    assert "EXPINTERRUPT and EXPCLEANUP" in text
    assert messages(good) == ["EXPINFO", "EXPINIT", "EXPINTERRUPT", "EXPCLEANUP"]
    meta = json.loads((data / "mouse01" / TODAY / "001" / "session.json").read_text())
    assert meta["status"] == "failed"
    assert meta["interrupted"]["error"] == "EXPINIT failed"
    assert any("did not answer EXPINIT" in p for p in meta["problems"])
    assert meta["modules"]["slow"]["error"]
    assert room.sessions.run is None
    assert next_exp_ref(data, "mouse01") == f"{TODAY}_2_mouse01"  # a number is never reused


def test_two_main_syncs_are_an_error_naming_both(
    room_with: Callable[[str], ControlRoom], data: Path
) -> None:
    body = '\n[modules.recorder]\nmodule = "services.recorder"\n' + exp(
        "timeline", "--claim-main-sync"
    )
    room = room_with(body)
    with pytest.raises(SessionError, match="2 participants claim main sync: recorder, timeline"):
        room.sessions.start("mouse01")
    assert not data.exists() or not any(data.rglob("session.json"))  # nothing started


def test_the_configured_main_sync_wins_and_the_recorder_stands_down(
    room_with: Callable[[str], ControlRoom], data: Path
) -> None:
    body = '\n[modules.recorder]\nmodule = "services.recorder"\n' + exp(
        "timeline", "--claim-main-sync"
    )
    room = room_with(body + '\n[session]\nmain_sync = "timeline"\n')
    res = room.sessions.start("mouse01")
    assert res["exp_ref"] == f"{TODAY}_7_mouse01"  # the timeline's number, not the recorder's
    assert list(res["modules"]) == ["timeline", "recorder"]  # the main sync starts first
    room.sessions.stop()
    meta = json.loads((data / "mouse01" / TODAY / "007" / "session.json").read_text())
    assert meta["main_sync"] == "timeline"
    assert meta["modules"]["recorder"]["main_sync"] is False
    assert (data / "mouse01" / TODAY / "007" / f"{TODAY}_7_mouse01.xdf").is_file()


def test_no_main_sync_is_an_error_listing_who_was_asked(
    room_with: Callable[[str], ControlRoom],
) -> None:
    room = room_with(echo("a") + echo("b"))
    with pytest.raises(SessionError, match=r"no participant claims main sync \(asked: a, b\)"):
        room.sessions.start("mouse01")


def test_a_module_that_misses_expend_is_interrupted_and_the_summary_says_so(
    room_with: Callable[[str], ControlRoom], data: Path, tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    room = room_with(exp("good", "--record", str(good)) + exp("stuck", "--hang", "EXPEND") + FAST)
    room.sessions.start("mouse01")
    res = room.sessions.stop()
    assert res["status"] == "interrupted"
    assert res["interrupted"]["error"] == "missed EXPEND"
    assert any("stuck" in p and "did not answer EXPEND within 1 s" in p for p in res["problems"])
    assert res["modules"]["good"]["status"] == "stopped"
    assert messages(good) == ["EXPINFO", "EXPINIT", "EXPSTART", "EXPEND", "EXPCLEANUP"]
    meta = json.loads((data / "mouse01" / TODAY / "001" / "session.json").read_text())
    assert meta["status"] == "interrupted"
    assert meta["end"] is not None


def test_a_module_dying_mid_session_interrupts_it_and_says_so(
    room_with: Callable[[str], ControlRoom], data: Path, lsl_name: str
) -> None:
    body = '\n[modules.recorder]\nmodule = "services.recorder"\n' + echo(
        "victim", "--outlet", lsl_name, restart="no"
    )
    room = room_with(body + "\n[session]\nstatus_every_s = 0.3\n")
    room.sessions.start("mouse01")
    room.send("victim", "CRASH")
    wait_for(lambda: room.sessions.run is None, "the session to be interrupted")
    last = room.sessions.last
    assert last is not None
    assert last["status"] == "interrupted"
    assert last["interrupted"]["error"] == "participant lost"
    assert "victim" in last["interrupted"]["message"]
    assert last["modules"]["victim"]["status"] == "lost"
    assert last["modules"]["recorder"]["status"] == "stopped"
    folder = data / "mouse01" / TODAY / "001"
    meta = json.loads((folder / "session.json").read_text())
    assert [e["module"] for e in meta["events"] if e["what"] == "participant_lost"] == ["victim"]
    pyxdf.load_xdf(str(folder / f"{TODAY}_1_mouse01.xdf"))  # closed with its footers, loadable
    warnings = room.get_logs("control_room", 0, 0)["records"]
    assert any(r.get("event") == "participant lost" for r in warnings)


def test_the_control_room_going_down_interrupts_the_session(
    room_factory: Callable[..., ControlRoom], data: Path, tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    room = room_factory(exp("good", "--record", str(good)) + FAST, extra=f'data_dir = "{data}"')
    room.sessions.start("mouse01")
    room.down()
    assert messages(good)[-2:] == ["EXPINTERRUPT", "EXPCLEANUP"]
    meta = json.loads((data / "mouse01" / TODAY / "001" / "session.json").read_text())
    assert meta["status"] == "interrupted"
    assert meta["interrupted"]["error"] == "shutdown"


MACROS = """
[macros.broken]
[[macros.broken.steps]]
session_start = { subject = "mouse01" }
[[macros.broken.steps]]
send = "good"
cmd = "NOPE"

[macros.other]
[[macros.other.steps]]
send = "good"
cmd = "NOPE"
"""


def test_a_failing_macro_interrupts_the_session_it_started(
    room_with: Callable[[str], ControlRoom],
) -> None:
    room = room_with(exp("good") + MACROS + FAST)
    with pytest.raises(MacroError, match="unknown command 'NOPE'"):
        room.run_macro("broken")
    last = room.sessions.last
    assert last["status"] == "interrupted"
    assert last["interrupted"]["error"] == "macro failed"
    assert "broken" in last["interrupted"]["message"]
    # a macro that did not start the running session leaves it alone
    room.sessions.start("mouse02")
    with pytest.raises(MacroError):
        room.run_macro("other")
    assert room.sessions.run is not None
    assert room.sessions.stop()["status"] == "ended"


def test_foreign_modules_are_always_ready(room_with: Callable[[str], ControlRoom]) -> None:
    body = f"\n[modules.minimal]\ncmd = {json.dumps(MINIMAL)}\n" + exp("mine") + FAST
    room = room_with(body)
    res = room.sessions.start("mouse01")
    assert res["modules"]["minimal"]["kind"] == "foreign"
    assert res["modules"]["minimal"]["status"] == "always ready"
    assert res["modules"]["mine"]["status"] == "running"
    assert room.sessions.stop()["status"] == "ended"


def test_a_rig_that_never_answers_is_named(
    room_with: Callable[[str], ControlRoom], data: Path
) -> None:
    port = free_port()  # nothing listens there (UDP)
    room = room_with(exp("mine") + FAST + f'remote_rigs = {{ ghost = "udp://127.0.0.1:{port}" }}\n')
    t0 = time.monotonic()
    with pytest.raises(
        SessionError, match=rf"ghost \(udp://127.0.0.1:{port}\): no echo of EXPINFO"
    ):
        room.sessions.start("mouse01")
    assert time.monotonic() - t0 < 5
    assert not any(data.rglob("session.json")) if data.exists() else True


def test_bad_subjects_and_references_are_refused(room_with: Callable[[str], ControlRoom]) -> None:
    room = room_with(exp("mine") + FAST)
    for subject in ("../etc", "", "a b"):
        with pytest.raises(SessionError, match="subject must be"):
            room.sessions.start(subject)
    with pytest.raises(SessionError, match="not a session of subject"):
        room.sessions.start("mouse01", exp_ref="2026-01-01_1_rat")
    with pytest.raises(SessionError, match="is not a calendar date"):
        room.sessions.start("mouse01", exp_ref="2026-13-01_1_mouse01")
    with pytest.raises(SessionError, match="no session is running"):
        room.sessions.stop()


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('main_sync = "recordr"', "unknown participant 'recordr'"),
        ('participants = ["a", "nope"]', "unknown participant 'nope'"),
        ('remote_rigs = { cam = "tcp://10.0.0.2:11001" }', "only udp:// is supported"),
        ('remote_rigs = { a = "udp://10.0.0.2" }', "'a' is already a module"),
        ("timeouts = { init = 1, ending = 2 }", "unknown key"),
        ('on_module_lost = "ignore"', "must be one of interrupt, continue"),
        ('iblutil_listen = "udp://host:99999"', "port must be 1-65535"),
    ],
)
def test_session_config_mistakes_name_the_key(table: str, error: str) -> None:
    text = '[modules.a]\nmodule = "x"\n[session]\n' + table + "\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "mesh.toml")
    assert error in str(err.value)
    assert "mesh.toml:" in str(err.value)
    assert "session" in str(err.value)
