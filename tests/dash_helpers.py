"""What the dashboard tests share: Debian's Chromium driven by Playwright, a mesh config, raw
HTTP, and where screenshots go for people to look at.

Browsers cannot be downloaded here, so Playwright (whose pip wheel bundles its driver) launches
the system ``/usr/bin/chromium`` (``apt-get install chromium``; .ci/run does it). The flags keep
it from calling home on a closed network and from needing a sandbox as root.
"""

from __future__ import annotations

import contextlib
import http.client as httpc
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cr_helpers import echo, header

from control_room.config import load_config
from control_room.room import ControlRoom

CHROMIUM = os.environ.get("MESH_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]
ARTIFACTS = (
    Path(
        os.environ.get("MESH_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "closedloop-mesh-tests")
    )
    / "dashboard"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test file (pages are cheap, browsers are not)."""
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under ARTIFACTS and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


def http(
    url: str,
    path: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request (no cookies, no redirects): status, headers, body."""
    host_port = url.split("//", 1)[1].rstrip("/")
    conn = httpc.HTTPConnection(host_port, timeout=10)
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    try:
        conn.request(method, path, body=data, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(4096)
    finally:
        conn.close()


def post_json(url: str, path: str, body: Any, **extra: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "X-Mesh-Dashboard": "1", **extra}
    return http(url, path, "POST", body, headers)


@contextlib.contextmanager
def running_room(tmp: Path, body: str, extra: str = "") -> Iterator[ControlRoom]:
    """A control room (dashboard on a free port) for ``body``, up until the block ends."""
    cfg = tmp / "mesh.toml"
    cfg.write_text(header(tmp, f"dash_{uuid.uuid4().hex[:8]}", extra=extra) + body)
    room = ControlRoom(load_config(cfg))
    room.up()
    try:
        yield room
    finally:
        room.down()


# Two echo modules, the mock EEG streamer and a three-step macro.
MESH = (
    echo("a")
    + echo("b", restart_delay=1.0)
    + """
[modules.mockup_streamer]
module = "services.mockup_streamer"

[macros.demo]
description = "say hello, wait, add"
default_json = { text = "hello", a = 2 }
steps = [
  { label = "hello", send = "a", cmd = "ECHO", kwargs = { text = "$text" } },
  { label = "a moment", wait_s = 0.5 },
  { label = "sum", send = "b", cmd = "ADD", kwargs = { a = "$a", b = 40 } },
]
"""
)
