"""The dashboard's data panels in a real headless Chromium against a real control room: the
Recording panel (the real recorder writing real LSL outlets this test owns) and the central log
(real records through the control room's log receiver).

Recording: file, a growing size and duration, per-stream sample counts; a stream whose outlet
stays alive but stops pushing is marked STALLED (and named in the header), the others are not,
and the mark goes once it pushes again. Log: newest first, filtered by module, level and text.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
import pytest
from cr_helpers import echo
from dash_helpers import browser, running_room, shot  # noqa: F401 - fixture
from helpers import wait_for
from test_dashboard import page  # noqa: F401 - fixture: a page on `room`, no script errors

from control_room.room import ControlRoom
from shared_utils.logging import LogShipper, encode_frame, wire_record

pytestmark = pytest.mark.timeout(120)
MESH = (
    echo("a")
    + echo("b")
    + """
[modules.recorder]
module = "services.recorder"
"""
)
# What the Recording panel shows, read from the page: the file line, "REC mm:ss  size",
# and each stream's row (name, samples, mark).
READ_RECORDING = """() => {
  const box = document.querySelector('#recording');
  const big = box.querySelector('.recbig');
  const rows = [...box.querySelectorAll('#rec-streams tr[data-stream]')];
  return {
    file: (box.querySelector('.recbig + div') || {}).textContent || null,
    big: big ? big.textContent : null,
    streams: Object.fromEntries(rows.map((r) => [r.dataset.stream, {
      samples: Number(r.cells[1].textContent), mark: r.cells[2].textContent,
      bad: r.classList.contains('bad')}])),
    notice: document.querySelector('#notice').textContent,
  };
}"""
UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlRoom]:
    tmp = tmp_path_factory.mktemp("dash_data")
    with running_room(tmp, MESH, extra=f'data_dir = "{tmp / "data"}"') as r:
        yield r


class Outlet:
    """A real LSL outlet pushing at its nominal rate from a thread, until ``pause``: then it
    stays alive (the recorder keeps it, no LOST) but sends nothing until ``resume``."""

    def __init__(self, name: str, channels: int, srate: float) -> None:
        info = pylsl.StreamInfo(name, "EEG", channels, srate, "float32", f"test-{name}")
        self.outlet = pylsl.StreamOutlet(info)
        self.channels, self.srate = channels, srate
        self.pushing = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"push-{name}", daemon=True)
        self.resume()
        self.thread.start()

    def resume(self) -> None:
        self.t0, self.sent = time.monotonic(), 0  # pace from now: no burst after a pause
        self.pushing.set()

    def pause(self) -> None:
        self.pushing.clear()

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        while not self.stop.wait(0.02):
            if not self.pushing.is_set():
                continue
            n = int((time.monotonic() - self.t0) * self.srate) - self.sent
            if n > 0:
                self.outlet.push_chunk(rng.normal(size=(n, self.channels)).astype(np.float32))
                self.sent += n


@contextlib.contextmanager
def outlets(*specs: tuple[str, int, float]) -> Iterator[list[Outlet]]:
    made = [Outlet(*s) for s in specs]
    try:
        yield made
    finally:
        for o in made:
            o.stop.set()
            o.thread.join(2)
            del o.outlet  # its only reference: the outlet closes now


def panel(pg: Any) -> dict[str, Any]:
    return pg.evaluate(READ_RECORDING)


def size_and_seconds(big: str) -> tuple[float, int]:
    """``"REC 00:07  21.4 kB"`` -> (21400.0, 7)."""
    m = re.fullmatch(r"REC (?:(\d+):)?(\d\d):(\d\d)\s+([\d.]+) (B|kB|MB|GB)", big.strip())
    assert m, f"unexpected recording line {big!r}"
    h, mm, ss, size, unit = m.groups()
    return float(size) * UNITS[unit], int(h or 0) * 3600 + int(mm) * 60 + int(ss)


def wait_panel(pg: Any, what: str, pred: Any, timeout: float = 20.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        p = panel(pg)
        return p if pred(p) else None

    return wait_for(check, what, timeout, every=0.1)


def test_recording_panel_counts_and_flags_a_stalled_stream(
    page: Any,  # noqa: F811
    room: ControlRoom,
) -> None:
    tag = uuid.uuid4().hex[:8]
    eeg, aux = f"dash_rec_{tag}_eeg", f"dash_rec_{tag}_aux"
    with outlets((eeg, 8, 250.0), (aux, 2, 100.0)) as (eeg_out, _):
        started = room.send(
            "recorder", "START", {"file": f"dash/rec_{tag}.xdf", "streams": [eeg, aux]}
        )
        path = Path(started["file"])
        try:
            first = wait_panel(
                page, "both streams counting",
                lambda p: all(p["streams"].get(s, {}).get("samples", 0) > 0 for s in (eeg, aux)),
            )  # fmt: skip
            assert first["file"] == str(path)
            size0, secs0 = size_and_seconds(first["big"])
            later = wait_panel(
                page, "size, duration and counts growing",
                lambda p: size_and_seconds(p["big"])[0] > size0
                and size_and_seconds(p["big"])[1] > secs0
                and all(p["streams"][s]["samples"] > first["streams"][s]["samples"] for s in (eeg, aux)),
            )  # fmt: skip
            assert all(later["streams"][s]["mark"] == "ok" for s in (eeg, aux)), later
            assert "REC" in page.inner_text("#rec-big")
            assert page.inner_text("#rec-module") == "recorder"
            shot(page, "dashboard_recording")

            eeg_out.pause()  # the outlet stays: a stall, not a lost stream
            stalled = wait_panel(page, "eeg marked STALLED", lambda p: p["streams"][eeg]["bad"])
            assert stalled["streams"][eeg]["mark"] == "STALLED"
            assert not stalled["streams"][aux]["bad"]
            assert stalled["streams"][aux]["mark"] == "ok"
            assert f"recording: {eeg} stalled" in stalled["notice"]
            assert aux not in stalled["notice"]
            st = room.send("recorder", "STATUS")
            assert st["lost"] == []
            shot(page, "dashboard_recording_stalled")

            eeg_out.resume()
            again = wait_panel(page, "the stall mark gone", lambda p: not p["streams"][eeg]["bad"])
            assert re.fullmatch(r"\d+ gaps", again["streams"][eeg]["mark"])  # the pause
            assert "stalled" not in again["notice"]
        finally:
            stop = room.send("recorder", "STOP")
    page.wait_for_function(
        "document.querySelector('#recording').textContent.includes('not recording')"
    )
    assert f"last file: {path}" in page.inner_text("#recording")
    assert stop["counts"][eeg] > 0
    assert path.exists()


def ship(port: int, records: list[tuple[str, int, str]]) -> None:
    """Send ``(module, levelno, event)`` records to the control room's log receiver, in order,
    in the log wire format, as a module's shipper does."""
    shipper = LogShipper(("127.0.0.1", port), module="test")
    try:
        for module, levelno, event in records:
            rec = wire_record(
                module=module, logger=f"{module}.test", levelno=levelno, event=event, kv={},
                created=time.time(),
            )  # fmt: skip
            assert shipper.submit(encode_frame(rec))
    finally:
        shipper.close(5)  # sends what is queued first
    assert (shipper.sent, shipper.dropped) == (len(records), 0)


def bad_request(port: int, line: str) -> None:
    """One malformed command line straight to a module: it refuses it and logs a warning."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(line.encode() + b"\n")
        assert b"not valid JSON" in sock.recv(4096)


def shown(pg: Any, tag: str) -> list[list[str]]:
    """The log lines holding ``tag``, top to bottom: [module, level, text]."""
    return pg.evaluate(
        """(tag) => [...document.querySelectorAll('#log li')]
             .filter((li) => li.textContent.includes(tag))
             .map((li) => [li.dataset.module, li.dataset.level, li.textContent])""",
        tag,
    )


def filtered(pg: Any, tag: str, module: str = "", level: int = 20, text: str = "") -> list[str]:
    pg.select_option("#log-module", module)
    pg.select_option("#log-level", str(level))
    pg.fill("#log-text", text)
    want = f"{module or 'all modules'} {level} {text!r}"
    pg.wait_for_function(  # the text filter applies 200 ms after typing
        """([m, l, t]) => document.querySelector('#log-module').value === m
             && document.querySelector('#log-level').value === l
             && [...document.querySelectorAll('#log li')].every((li) =>
                  (!m || li.dataset.module === m) && li.textContent.toLowerCase().includes(t))""",
        arg=[module, str(level), text.lower()],
        timeout=10_000,
    )
    got = shown(pg, tag)
    assert got, f"nothing shown for {want}"
    return [f"{m} {lvl} " + label(t, tag) for m, lvl, t in got]


def label(text: str, tag: str) -> str:
    """``<tag>-N`` for the records this test shipped, ``bad-request`` for module b's own."""
    m = re.search(rf"{tag}-\d", text)
    return m.group(0) if m else "bad-request"


def test_log_panel_newest_first_filtered_by_module_and_level(
    page: Any,  # noqa: F811
    room: ControlRoom,
) -> None:
    tag = "L" + uuid.uuid4().hex[:8]
    bad_request(room.handle("b").port, f"FORTY_{tag}|{{not json")  # b logs a warning itself
    wait_for(
        lambda: any(tag in str(r.get("kv")) for r in room.get_logs(module="b")["records"]),
        "module b's warning in the central log",
    )
    ship(room.receiver.port, [
        ("a", logging.INFO, f"{tag}-1"), ("b", logging.INFO, f"{tag}-2"),
        ("a", logging.ERROR, f"{tag}-3"), ("a", logging.DEBUG, f"{tag}-4"),
        ("b", logging.ERROR, f"{tag}-5"), ("a", logging.WARNING, f"{tag}-6 needle"),
    ])  # fmt: skip
    page.wait_for_function(
        "(tag) => document.querySelector('#log').textContent.includes(tag + '-6')", arg=tag
    )
    # the module's own warning: "bad request  error=payload of FORTY_<tag> is not valid JSON ..."
    b_warn = shown(page, f"FORTY_{tag}")
    assert len(b_warn) == 1
    assert b_warn[0][:2] == ["b", "warning"]
    assert "bad request" in b_warn[0][2]
    bw = "b warning bad-request"

    assert filtered(page, tag) == [  # default: every module, info and up, newest first
        f"a warning {tag}-6", f"b error {tag}-5", f"a error {tag}-3", f"b info {tag}-2",
        f"a info {tag}-1", bw,
    ]  # fmt: skip
    assert filtered(page, tag, level=0) == [
        f"a warning {tag}-6", f"b error {tag}-5", f"a debug {tag}-4", f"a error {tag}-3",
        f"b info {tag}-2", f"a info {tag}-1", bw,
    ]  # fmt: skip
    assert filtered(page, tag, module="a", level=0) == [
        f"a warning {tag}-6", f"a debug {tag}-4", f"a error {tag}-3", f"a info {tag}-1",
    ]  # fmt: skip
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header back on top of the shot
    shot(page, "dashboard_log_module_a")
    assert filtered(page, tag, module="a", level=30) == [f"a warning {tag}-6", f"a error {tag}-3"]
    assert filtered(page, tag, module="b", level=30) == [f"b error {tag}-5", bw]
    assert filtered(page, tag, level=40) == [f"b error {tag}-5", f"a error {tag}-3"]
    assert filtered(page, tag, level=0, text="NEEDLE") == [f"a warning {tag}-6"]
    assert re.match(r"\d+ shown of \d+", page.inner_text("#log-count"))
