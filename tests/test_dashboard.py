"""The dashboard in a real headless Chromium against a real control room and real modules.

One control room (two echo modules and the mock EEG streamer) serves every test of this file;
the tests leave it as they found it (a killed module is back before the next test starts).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from dash_helpers import MESH, browser, running_room, shot  # noqa: F401 - fixture

from control_room.room import ControlRoom

pytestmark = pytest.mark.timeout(120)
RED = ["crashed", "restarting", "failed", "unresponsive"]


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlRoom]:
    with running_room(tmp_path_factory.mktemp("dash"), MESH) as r:
        yield r


@pytest.fixture
def page(browser: Any, room: ControlRoom) -> Iterator[Any]:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(room.web.url)
    pg.wait_for_selector(".card")
    yield pg
    ctx.close()
    assert not errors, f"script errors in the page: {errors}"


def card_state(pg: Any, module: str) -> str:
    return pg.get_attribute(f'.card[data-module="{module}"]', "data-state")


def open_command(pg: Any, module: str, cmd: str) -> Any:
    pg.select_option("#cmd-module", module)
    pg.wait_for_selector(f'#commands[data-module="{module}"] details[data-cmd="{cmd}"]')
    det = pg.locator(f'#commands details[data-cmd="{cmd}"]')
    det.locator("summary").click()
    return det


def test_page_loads_with_every_module_green(page: Any, room: ControlRoom) -> None:
    page.wait_for_function("document.querySelectorAll('.card.s-ok').length === 3")
    names = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.module)")
    assert names == ["a", "b", "mockup_streamer"]
    text = page.inner_text('.card[data-module="a"]')
    assert str(room.handle("a").pid) in text
    assert "ms" in text
    assert page.get_attribute("#conn", "class") == "dot live"
    shot(page, "dashboard_loaded")


def test_tablet_layout_fits_without_sideways_scroll(browser: Any, room: ControlRoom) -> None:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 768, "height": 1024}, has_touch=True)
    pg = ctx.new_page()
    pg.goto(room.web.url)
    pg.wait_for_function("document.querySelectorAll('.card.s-ok').length === 3")
    assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(pg, "dashboard_tablet")
    ctx.close()


def test_command_form_sends_and_shows_the_reply(page: Any, room: ControlRoom) -> None:
    det = open_command(page, "b", "ADD")
    assert det.locator('input[name="a"]').get_attribute("placeholder") == "required"
    assert det.locator('input[name="b"]').get_attribute("placeholder") == "2"  # the default
    det.locator('input[name="a"]').fill("40")
    det.locator("button[type=submit]").click()
    reply = det.locator("pre.reply.ok")
    reply.wait_for()
    assert reply.inner_text() == "42"
    # the command went through the control room: published with the dashboard as its source
    page.wait_for_function(
        "[...document.querySelectorAll('#activity li')].some(l => l.textContent.includes('web -> b ADD'))"
    )


def test_wrong_type_is_refused_with_the_modules_own_words(page: Any) -> None:
    det = open_command(page, "b", "ADD")
    det.locator('input[name="a"]').fill("forty")
    det.locator("button[type=submit]").click()
    err = det.locator(".fielderr")
    err.wait_for()
    assert "argument 'a' must be int, got string 'forty'" in err.inner_text()
    assert "bad" in det.locator('input[name="a"]').get_attribute("class")
    assert "must be int" in det.locator("pre.reply.bad").inner_text()


def test_module_without_help_gets_a_free_form_field(page: Any) -> None:
    det = open_command(page, "a", "ECHO")  # ECHO takes any argument: a JSON field for them
    det.locator('textarea[name="__extra"]').fill('{"x": [1, 2]}')
    det.locator("button[type=submit]").click()
    det.locator("pre.reply.ok").wait_for()
    assert '"x"' in det.locator("pre.reply.ok").inner_text()
    free = page.locator("#commands details").last
    free.locator("summary").click()
    free.locator('input[name="__cmd"]').fill("HISTORY")
    free.locator("button[type=submit]").click()
    free.locator("pre.reply.ok").wait_for()


def test_running_a_macro_shows_its_steps(page: Any, room: ControlRoom) -> None:
    box = page.locator('.macro:has(button[data-macro="demo"])')
    box.locator("summary").click()
    box.locator('input[name="a"]').fill("2")
    box.locator("button.run").click()
    page.wait_for_selector('#macro-state[data-state="running"]')
    page.wait_for_selector('#macro-state[data-state="done"]', timeout=20_000)
    steps = page.locator("#macro-steps li")
    assert steps.count() == 3
    assert all("ok" in t for t in steps.all_inner_texts())
    assert "(3/3)" in page.inner_text("#macro-state")
    assert room.last_reports["demo"]["steps"][2]["result"] == 42


def test_live_plot_draws_64_channels_at_1khz(page: Any, room: ControlRoom) -> None:
    room.send("mockup_streamer", "START", {"stream": "dash_eeg", "channels": 64, "srate": 1000})
    try:
        page.wait_for_selector(
            '#plot-stream option[value="dash_eeg"]', state="attached", timeout=15_000
        )
        page.select_option("#plot-stream", "dash_eeg")
        page.wait_for_function("window.dashStats.draws > 30", timeout=15_000)
        assert "64 ch" in page.inner_text("#plot-info")
        inked = page.evaluate(
            """() => {
              const c = document.querySelector('#plot canvas');
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let n = 0;
              for (let i = 0; i < d.length; i += 4) if (d[i+3] > 0 && d[i] < 160) n++;
              return n;
            }"""
        )
        assert inked > 5000, f"only {inked} dark pixels: the traces were not drawn"
        row = page.locator('#streams tr[data-stream="dash_eeg"]')
        row.wait_for()
        page.wait_for_function(
            "(() => { const r = document.querySelector('#streams tr[data-stream=\"dash_eeg\"]');"
            " return r && /1000\\.0\\s+\\d/.test(r.innerText.replace(/\\t/g, ' ')); })()",
            timeout=10_000,
        )  # nominal and measured rate
        shot(page, "dashboard_live_plot")
    finally:
        room.send("mockup_streamer", "STOP", {})


def test_killed_module_turns_red_then_green_after_its_restart(page: Any, room: ControlRoom) -> None:
    page.wait_for_function("document.querySelectorAll('.card.s-ok').length === 3")
    pid = room.handle("b").pid
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    page.wait_for_function(
        f"{RED}.includes(document.querySelector('.card[data-module=\"b\"]').dataset.state)",
        timeout=2000,
    )
    red_s = time.monotonic() - t0
    assert "s-bad" in page.get_attribute('.card[data-module="b"]', "class")
    shot(page, "dashboard_module_down")
    page.wait_for_selector('.card[data-module="b"].s-ok', timeout=30_000)
    assert room.handle("b").pid != pid
    assert red_s < 2.0


def test_dropped_event_connection_reconnects_and_says_so(page: Any, room: ControlRoom) -> None:
    room.web.drop_pages()
    page.wait_for_function("document.querySelector('#notice').textContent.includes('lost')")
    assert page.get_attribute("#conn", "class") == "dot down"
    page.wait_for_function("document.querySelector('#notice').textContent.includes('restored')")
    assert page.get_attribute("#conn", "class") == "dot live"
    # and events flow again on the new connection
    room.send("a", "ECHO", {"after": "reconnect"}, source="api")
    page.wait_for_function(
        "[...document.querySelectorAll('#activity li')].some(l => l.textContent.includes('api -> a ECHO'))"
    )


def test_bpod_trials_and_decoder_output_appear_as_they_happen(page: Any) -> None:
    """Real LSL outlets with the default mesh's names: the Bpod's markers, the decoder's output."""
    import threading

    import pylsl

    def outlet(name: str, kind: str, labels: list[str], fmt: int) -> Any:
        info = pylsl.StreamInfo(name, kind, len(labels), 0, fmt, f"test-{name}-{uuid.uuid4().hex}")
        chans = info.desc().append_child("channels")
        for lab in labels:
            chans.append_child("channel").append_child_value("label", lab)
        return pylsl.StreamOutlet(info)

    bpod = outlet("bpod_events", "Markers", ["event"], pylsl.cf_string)
    dec = outlet("decoder_output", "Control", ["p_high", "p_low", "control"], pylsl.cf_float32)
    stop = threading.Event()

    def decode() -> None:
        i = 0
        while not stop.wait(0.05):
            p = 0.5 + 0.45 * ((i // 20) % 2 * 2 - 1)  # 0.95 / 0.05 every second
            dec.push_sample([p, 1 - p, float(p > 0.6)])
            i += 1

    threading.Thread(target=decode, daemon=True).start()
    try:
        deadline = time.monotonic() + 20
        while not bpod.have_consumers():  # the dashboard's trial feed has connected
            assert time.monotonic() < deadline, "the dashboard never opened bpod_events"
            time.sleep(0.05)
        t = pylsl.local_clock()
        for k, m in enumerate(
            ["trial_start:1", "state:WaitForDecoder", "event:SoftCode1", "state:Reward",
             "state:ITI", "trial_end:1", "trial_start:2", "state:WaitForDecoder"]
        ):  # fmt: skip
            bpod.push_sample([m], t + 0.1 * k)
        page.wait_for_selector('#trials li[data-trial="1"]', timeout=10_000)
        text = page.inner_text('#trials li[data-trial="1"]')
        assert "Reward" in text
        assert "WaitForDecoder" in text
        assert "ITI" in text
        page.wait_for_function("document.querySelector('#trial-big span').textContent === '2'")
        assert "WaitForDecoder" in page.inner_text("#trial-state")
        page.wait_for_selector("#decoder canvas", timeout=15_000)
        page.wait_for_function(
            "document.querySelector('#decoder-info').textContent.includes('on 0.60 / off 0.40')"
        )
        shot(page, "dashboard_trials_decoder")
    finally:
        stop.set()
