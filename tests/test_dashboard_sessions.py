"""The dashboard's Session panel in a real headless Chromium against a real control room: the
real recorder (the main sync, which numbers the session and owns the folder) and an echo module.

Started and stopped from the page, through the same functions as SESSION_START / SESSION_STOP;
the panel follows each step as the control room pushes it, a page opened mid-session shows the
session from its first snapshot, and bad input is refused in the control room's own words.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cr_helpers import echo
from dash_helpers import browser, http, post_json, running_room, shot  # noqa: F401 - fixture

from control_room.room import ControlRoom

pytestmark = pytest.mark.timeout(180)
TODAY = _dt.date.today().isoformat()
MESH = (
    echo("a")
    + """
[modules.recorder]
module = "services.recorder"

[session]
timeouts = { init = 10, start = 10, end = 10 }
"""
)


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlRoom]:
    tmp = tmp_path_factory.mktemp("dash_sessions")
    with running_room(tmp, MESH, extra=f'data_dir = "{tmp / "data"}"') as r:
        yield r


@pytest.fixture
def data(room: ControlRoom) -> Path:
    return Path(room.sessions.data_dir)


def open_page(browser: Any, room: ControlRoom, errors: list[str]) -> tuple[Any, Any]:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(room.web.url)
    pg.wait_for_selector(".card")
    return ctx, pg


@pytest.fixture
def page(browser: Any, room: ControlRoom) -> Iterator[Any]:  # noqa: F811
    errors: list[str] = []
    ctx, pg = open_page(browser, room, errors)
    yield pg
    ctx.close()
    assert not errors, f"script errors in the page: {errors}"


def notice_says(pg: Any, text: str) -> None:
    pg.wait_for_function(f"document.querySelector('#notice').textContent.includes({text!r})")


def test_an_empty_subject_is_refused_in_the_control_rooms_words(
    page: Any, room: ControlRoom
) -> None:
    page.wait_for_selector("#session p.muted")  # "no session yet"
    page.click("#session-start")
    notice_says(page, "subject must be letters, digits")
    assert "bad" in page.get_attribute("#session-subject", "class")
    assert room.sessions.run is None


def test_wrong_types_are_refused_and_the_server_keeps_running(room: ControlRoom) -> None:
    url = room.web.url
    cases = [
        ("/api/session_start", {"subject": 5}, "argument 'subject' must be str, got integer 5"),
        ("/api/session_start", {"subject": "m", "procedures": "a,b"}, "'procedures' must be list"),
        ("/api/session_start", {"subject": "m", "subjekt": "m"}, "unknown argument 'subjekt'"),
        ("/api/session_start", {}, "missing required argument subject"),
        ("/api/session_stop", {"interrupt": "yes"}, "'interrupt' must be bool, got string"),
        ("/api/session_stop", {}, "no session is running"),
        ("/api/session_start", [1], "the body must be a JSON object"),
    ]
    for path, body, error in cases:
        _, _, raw = post_json(url, path, body)
        reply = json.loads(raw)
        assert reply["ok"] is False, (path, body, reply)
        assert error in reply["error"], (path, body, reply)
    status, _, _ = http(url, "/api/status")
    assert status == 200
    assert room.sessions.run is None


def test_start_and_stop_from_the_page(
    page: Any,
    browser: Any,  # noqa: F811
    room: ControlRoom,
    data: Path,
) -> None:
    page.fill("#session-subject", "mouse07")
    page.fill("#session-project", "dashproject")
    page.fill("#session-procedures", "Behavior training/tasks, Imaging")
    page.click("#session-start")
    page.wait_for_selector('#session-state[data-status="running"]', timeout=60_000)
    ref = f"{TODAY}_1_mouse07"
    folder = data / "mouse07" / TODAY / "001"
    assert page.inner_text("#session-ref") == ref
    assert page.inner_text("#session-folder") == str(folder)
    assert "s-ok" in page.get_attribute("#session-state", "class")
    page.wait_for_selector('#session-parts tr[data-part="recorder"] .badge[data-status="running"]')
    assert "recorder" in page.inner_text("#session dl")  # the main sync
    meta = json.loads((folder / "session.json").read_text())
    assert meta["status"] == "running"
    assert meta["started_by"] == "api"
    assert meta["project"] == "dashproject"
    assert meta["procedures"] == ["Behavior training/tasks", "Imaging"]
    assert (folder / f"{ref}.xdf").exists()

    errors: list[str] = []  # a page opened mid-session shows it from its first snapshot
    ctx, late = open_page(browser, room, errors)
    late.wait_for_selector('#session-state[data-status="running"]')
    assert late.inner_text("#session-ref") == ref
    ctx.close()
    assert not errors

    shot(page, "dashboard_session_running")
    page.click("#session-stop")
    page.wait_for_selector('#session-state[data-status="ended"]', timeout=60_000)
    page.wait_for_function(
        "document.querySelector('#session-state').textContent.includes('last session')"
    )
    assert "s-off" in page.get_attribute("#session-state", "class")
    notice_says(page, f"session {ref} ended")
    assert json.loads((folder / "session.json").read_text())["status"] == "ended"
    assert room.sessions.run is None


def test_interrupt_checkbox_interrupts(page: Any, room: ControlRoom, data: Path) -> None:
    page.fill("#session-subject", "mouse08")
    page.click("#session-start")
    page.wait_for_selector('#session-state[data-status="running"]', timeout=60_000)
    ref = page.inner_text("#session-ref")
    assert ref == f"{TODAY}_1_mouse08"
    page.check("#session-interrupt")
    page.click("#session-stop")
    page.wait_for_selector('#session-state[data-status="interrupted"]', timeout=60_000)
    assert "s-bad" in page.get_attribute("#session-state", "class")
    assert "interrupted: by api" in page.inner_text("#session dl")
    page.wait_for_function("!document.querySelector('#session-interrupt').checked")  # once replied
    meta = json.loads((data / "mouse08" / TODAY / "001" / "session.json").read_text())
    assert meta["status"] == "interrupted"
    assert meta["interrupted"]["error"] == "interrupted"
    shot(page, "dashboard_session_interrupted")
