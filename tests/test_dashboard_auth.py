"""Who gets in: with a mesh token, a browser without it gets 401 and nothing else; commands need
the page's own header; without a token, only loopback host names are served."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cr_helpers import echo
from dash_helpers import browser, http, post_json, running_room, shot  # noqa: F401 - fixture

from control_room.room import ControlRoom

TOKEN = "dash-" + uuid.uuid4().hex


MODULE = echo("secret_module")


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlRoom]:
    tmp = tmp_path_factory.mktemp("dash_auth")
    (tmp / "token").write_text(TOKEN + "\n")
    with running_room(tmp, MODULE, f'token_file = "{tmp / "token"}"') as r:
        yield r


@pytest.fixture(scope="module")
def open_room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlRoom]:
    with running_room(tmp_path_factory.mktemp("dash_open"), MODULE) as r:
        yield r


@pytest.mark.parametrize(
    "path", ["/", "/events", "/api/status", "/api/help/secret_module", "/static/main.js", "/nope"]
)
def test_without_the_token_everything_is_401_and_nothing_else(
    locked: ControlRoom, path: str
) -> None:
    status, headers, body = http(locked.web.url, path)
    assert status == 401
    assert b"secret_module" not in body
    assert b"<script" not in body
    assert b"stylesheet" not in body
    assert "set-cookie" not in headers


def test_commands_without_the_token_are_401_and_not_sent(locked: ControlRoom) -> None:
    status, _, body = post_json(
        locked.web.url, "/api/send", {"module": "secret_module", "cmd": "ECHO", "kwargs": {}}
    )
    assert status == 401
    assert locked.send("secret_module", "HISTORY") == []


def test_a_wrong_token_is_refused(locked: ControlRoom) -> None:
    assert http(locked.web.url, "/?token=wrong")[0] == 401
    status, _, _ = http(locked.web.url, "/api/status", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, body = http(locked.web.url, "/login", "POST", b"token=wrong", form)
    assert status == 401
    assert b"wrong token" in body
    assert "set-cookie" not in headers


def test_the_token_gives_a_strict_httponly_cookie(locked: ControlRoom) -> None:
    status, headers, _ = http(locked.web.url, f"/?token={TOKEN}")
    assert status == 303
    assert headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie  # a value derived from the token, not the token
    value = cookie.split(";", 1)[0]
    status, _, body = http(locked.web.url, "/api/status", headers={"Cookie": value})
    assert status == 200
    assert b"secret_module" in body
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert http(locked.web.url, "/api/status", headers=bearer)[0] == 200


def test_browser_logs_in_with_the_token_form(browser: Any, locked: ControlRoom) -> None:  # noqa: F811
    ctx = browser.new_context()
    page = ctx.new_page()
    resp = page.goto(locked.web.url)
    assert resp.status == 401
    assert page.locator(".card").count() == 0
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector('.card[data-module="secret_module"].s-ok')
    shot(page, "dashboard_after_login")
    ctx.close()


def test_commands_need_the_pages_header_and_same_origin(open_room: ControlRoom) -> None:
    url, body = open_room.web.url, {"module": "secret_module", "cmd": "ECHO", "kwargs": {"x": 1}}
    plain = {"Content-Type": "application/json"}
    assert http(url, "/api/send", "POST", body, plain)[0] == 403  # a form post from another site
    status, _, _ = post_json(url, "/api/send", body, Origin="http://evil.example")
    assert status == 403
    assert open_room.send("secret_module", "HISTORY") == []
    status, _, reply = post_json(url, "/api/send", body)
    assert status == 200
    assert b'"ok":true' in reply


def test_without_a_token_only_loopback_host_names_are_served(open_room: ControlRoom) -> None:
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1
    assert http(open_room.web.url, "/api/status", headers={"Host": "evil.example:80"})[0] == 421
    assert http(open_room.web.url, "/api/status", headers={"Host": "localhost"})[0] == 200
