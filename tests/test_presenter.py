"""Presenter end to end: real PsychoPy windows under Xvfb, real LSL, the module as a subprocess.

One presenter process (and its PsychoPy child) is shared by the module, since importing PsychoPy
takes seconds; tests that break things (a display that does not exist) start their own. With no
``$DISPLAY`` the tests start Xvfb, and they fail (not skip) when no display can be had.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
import pytest
from conftest import ROOT, free_port, stop_process_group, wait_until_up
from helpers import wait_for
from PIL import Image

from services.presenter.block import Block, BlockSpec
from services.presenter.feedback import Resolver
from services.presenter.stats import FrameStats
from shared_utils.client import ModuleClient
from shared_utils.errors import CommandError, CommandFailed

EXAMPLE = ROOT / "examples" / "psychopy_experiment"
SIZE = (320, 240)
GREY = np.array([128, 128, 128])


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example experiment folder, so data files land in a temporary folder."""
    root = tmp_path_factory.mktemp("experiments")
    shutil.copytree(
        EXAMPLE,
        root / "psychopy_experiment",
        ignore=shutil.ignore_patterns("data", "__pycache__", "*_compiled.py"),
    )
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The presenter's data folder (--data-dir): screenshots land here."""
    return tmp_path_factory.mktemp("presenter_data")


@pytest.fixture(scope="module")
def presenter(
    display: str, experiments: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One presenter module (a real subprocess) with an open window, shared by this module."""
    marker = f"presenter_test_{uuid.uuid4().hex[:8]}"
    port = free_port()
    # Output to a file, not an unread pipe: a full pipe would block the server and its child.
    log = open(tmp_path_factory.mktemp("presenter_log") / "presenter.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.presenter",
            "--port",
            str(port),
            "--size",
            f"{SIZE[0]}x{SIZE[1]}",
            "--marker-stream",
            marker,
            "--experiments-dir",
            str(experiments),
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "DISPLAY": display},
    )
    try:
        wait_until_up(port, proc)
        with ModuleClient("127.0.0.1", port, timeout=60) as c:
            c.send("OPEN")
        found = pylsl.resolve_byprop("name", marker, 1, 10.0)
        assert found, f"marker stream {marker} not found"
        inlet = pylsl.StreamInlet(found[0])
        inlet.open_stream(10.0)
        yield {"port": port, "proc": proc, "inlet": inlet, "marker": marker, "data": data_dir}
    finally:
        stop_process_group(proc)
        log.close()


@pytest.fixture
def client(presenter: dict[str, Any]) -> Iterator[ModuleClient]:
    with ModuleClient("127.0.0.1", presenter["port"], timeout=30) as c:
        yield c


# ---- helpers ----------------------------------------------------------------------------------
def drain(inlet: pylsl.StreamInlet) -> None:
    while inlet.pull_chunk(timeout=0.2)[0]:
        pass


def markers_until(
    inlet: pylsl.StreamInlet, done: Callable[[list[str]], bool], limit_s: float = 20.0
) -> tuple[list[str], list[float]]:
    """Collect markers until ``done(markers)``; gives up after ``limit_s`` (test then fails)."""
    names: list[str] = []
    stamps: list[float] = []
    end = time.monotonic() + limit_s
    while time.monotonic() < end and not done(names):
        samples, ts = inlet.pull_chunk(timeout=0.2)
        names += [s[0] for s in samples]
        stamps += list(ts)
    return names, stamps


def wait_status(
    c: ModuleClient, pred: Callable[[dict[str, Any]], bool], limit_s: float = 20.0
) -> dict[str, Any]:
    end = time.monotonic() + limit_s
    st = c.send("STATUS")
    while not pred(st) and time.monotonic() < end:
        time.sleep(0.05)
        st = c.send("STATUS")
    return st


def shot(c: ModuleClient, tmp_path: Path, name: str = "shot.png") -> np.ndarray:
    """A screenshot, named relative to the data folder (the test's own subfolder)."""
    reply = c.send("SCREENSHOT", file=f"{tmp_path.name}/{name}", overwrite=True)
    assert reply["size"] == list(SIZE)
    assert Path(reply["file"]).parent.name == tmp_path.name
    return np.asarray(Image.open(reply["file"]).convert("RGB")).astype(int)


def bright(img: np.ndarray) -> np.ndarray:
    return img.min(axis=2) > 220


# ---- pure logic ---------------------------------------------------------------------------------
def test_block_schedule_is_balanced_and_pause_freezes_time() -> None:
    spec = BlockSpec(n_trials=4, cues=["a", "b"], cue_s=1, stimulus_s=2, iti_s=1, seed=3)
    spec.validate()
    b = Block(1, spec)
    assert sorted(b.cues) == ["a", "a", "b", "b"]
    assert b.advance(0.0) == ("cue", b.cues[0], b.cues[0])
    assert b.advance(0.5) is None
    b.pause(0.5)
    b.resume(10.5)  # 10 s paused: the cue still has 0.5 s left
    assert b.advance(10.9) is None
    assert b.advance(11.0)[0] == "stimulus"
    with pytest.raises(CommandError, match="n_trials"):
        BlockSpec(n_trials=0).validate()
    with pytest.raises(CommandError, match="template"):
        BlockSpec(cue_text="{nope}").validate()


def test_frame_stats_count_dropped_frames() -> None:
    fs = FrameStats(refresh_hz=100.0)
    for t in [0.0, 0.01, 0.02, 0.05, 0.06]:
        fs.add(t)
    s = fs.summary()
    assert s["n_frames"] == 5
    assert s["dropped_frames"] == 1
    assert s["frame_ms_median"] == pytest.approx(10.0)


def test_feedback_source_scales_the_newest_sample_and_resolver_times_out(lsl_name: str) -> None:
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo(lsl_name, "Decoder", 2, 0.0, "float32", lsl_name))
    r = Resolver()
    r.start("a", lsl_name, 1, vmin=-1.0, vmax=1.0, timeout=10.0)
    r.start("b", f"absent_{lsl_name}", 0, vmin=0.0, vmax=1.0, timeout=0.2)
    r.start("c", lsl_name, 5, vmin=0.0, vmax=1.0, timeout=10.0)
    done: dict[str, tuple[Any, Any]] = {}
    end = time.monotonic() + 20
    while len(done) < 3 and time.monotonic() < end:
        done.update({k: (src, err) for k, src, err in r.poll()})
        time.sleep(0.02)
    assert "no LSL stream named" in done["b"][1]
    assert "channel 5 does not exist" in done["c"][1]
    src = done["a"][0]
    try:
        end = time.monotonic() + 10
        while src.samples == 0 and time.monotonic() < end:
            outlet.push_chunk([[9.0, -0.5], [9.0, 0.5]])
            time.sleep(0.05)
            src.update()
        assert src.raw == pytest.approx(0.5)
        assert src.value == pytest.approx(0.75)
        with pytest.raises(ValueError, match="vmax must differ"):
            r.start("d", lsl_name, 0, vmin=1.0, vmax=1.0, timeout=1.0)
    finally:
        src.close()


# ---- window, text, screenshot, markers ----------------------------------------------------------
def test_text_is_drawn_centred_and_marker_is_stamped_at_flip(
    client: ModuleClient, presenter: dict[str, Any], tmp_path: Path
) -> None:
    inlet = presenter["inlet"]
    drain(inlet)
    reply = client.send("SHOW_TEXT", text="HELLO", height=0.25)
    assert reply["marker"] == "text:HELLO"
    assert reply["onset"] <= pylsl.local_clock()
    names, stamps = markers_until(inlet, lambda m: "text:HELLO" in m)
    assert names == ["text:HELLO"]
    assert stamps[0] == pytest.approx(reply["onset"], abs=1e-6)

    img = shot(client, tmp_path)
    mask = bright(img)
    assert mask.sum() > 100, "no white text pixels in the screenshot"
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() - SIZE[0] / 2) < SIZE[0] * 0.1
    assert abs(ys.mean() - SIZE[1] / 2) < SIZE[1] * 0.1
    assert np.abs(img[5, 5] - GREY).max() < 8, "background is not grey"
    st = client.send("STATUS")
    assert st["stimulus"]["kind"] == "text"
    assert st["stimulus"]["label"] == "HELLO"


def test_colour_fixation_and_clear_are_really_drawn(client: ModuleClient, tmp_path: Path) -> None:
    client.send("SHOW_TEXT", text="RED", color="red", height=0.3)
    img = shot(client, tmp_path, "red.png")
    red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    assert red.sum() > 100

    client.send("FIXATION", size=0.3)
    img = shot(client, tmp_path, "fix.png")
    cy, cx = SIZE[1] // 2, SIZE[0] // 2
    assert bright(img)[cy - 2 : cy + 3, cx - 2 : cx + 3].all(), "no cross at the centre"
    assert not bright(img)[cy - 30, cx - 30], "cross arms should not fill the corners"

    client.send("CLEAR")
    img = shot(client, tmp_path, "clear.png")
    assert np.abs(img - GREY).max() < 8, "CLEAR left something on screen"


def test_show_image(client: ModuleClient, tmp_path: Path, experiments: Path) -> None:
    png = experiments / "blue.png"  # images are read from the experiments folder
    Image.new("RGB", (64, 64), (0, 0, 255)).save(png)
    reply = client.send("SHOW_IMAGE", file="blue.png", size=[0.5, 0.5])
    assert reply["marker"] == "image:blue.png"
    img = shot(client, tmp_path)
    assert (img[SIZE[1] // 2, SIZE[0] // 2] == [0, 0, 255]).all()


def test_bad_input_gets_clear_errors(client: ModuleClient, experiments: Path) -> None:
    with pytest.raises(CommandFailed, match="unknown colour 'blurple'"):
        client.send("SHOW_TEXT", text="x", color="blurple")
    with pytest.raises(CommandFailed, match="image file not found"):
        client.send("SHOW_IMAGE", file="missing.png")
    (experiments / "not_an_image.png").write_text("hello")
    with pytest.raises(CommandFailed, match="cannot load image"):
        client.send("SHOW_IMAGE", file="not_an_image.png")
    with pytest.raises(CommandFailed, match="leads outside the data folder"):
        client.send("SCREENSHOT", file="../x.png")
    with pytest.raises(CommandFailed, match="leads outside the experiments folder"):
        client.send("RUN_EXPERIMENT", file="../../etc/passwd")
    with pytest.raises(CommandFailed, match="no LSL stream named"):
        client.send("FEEDBACK", stream=f"absent_{uuid.uuid4().hex[:6]}", timeout=0.5)
    with pytest.raises(CommandFailed, match=r"n_trials must be an integer in 1\.\.10000"):
        client.send("RUN_BLOCK", n_trials=0)
    with pytest.raises(CommandFailed, match="cues must be a non-empty list"):
        client.send("RUN_BLOCK", cues=[])
    with pytest.raises(CommandFailed, match="nothing to pause"):
        client.send("PAUSE")
    assert client.send("UP") is True
    assert client.send("STATUS")["child_alive"] is True


# ---- blocks and feedback ----------------------------------------------------------------------
def test_run_block_returns_at_once_and_sends_every_onset(
    client: ModuleClient, presenter: dict[str, Any]
) -> None:
    inlet = presenter["inlet"]
    drain(inlet)
    reply = client.send(
        "RUN_BLOCK",
        n_trials=2,
        cues=["left", "right"],
        cue_s=0.2,
        stimulus_s=0.3,
        iti_s=0.1,
        seed=1,
    )
    block = reply["block"]
    first, second = reply["trials"]
    assert sorted(reply["trials"]) == ["left", "right"]
    assert client.send("STATUS")["block"]["state"] == "running"
    names, stamps = markers_until(inlet, lambda m: f"block_end:{block}" in m)
    assert names == [
        f"block_start:{block}",
        f"cue:{first}",
        f"stimulus:{first}",
        "iti",
        f"cue:{second}",
        f"stimulus:{second}",
        "iti",
        f"block_end:{block}",
    ]
    assert stamps == sorted(stamps)
    st = wait_status(client, lambda s: s["block"]["state"] == "done")
    assert st["block"]["trial"] == 2


def test_pause_resume_stop_a_block(client: ModuleClient, presenter: dict[str, Any]) -> None:
    inlet = presenter["inlet"]
    client.send("RUN_BLOCK", n_trials=3, cue_s=5.0, stimulus_s=5.0, iti_s=5.0)
    wait_status(client, lambda s: s["block"]["phase"] == "cue")
    assert client.send("PAUSE")["paused"] is True
    before = client.send("STATUS")
    assert before["block"]["state"] == "paused"
    time.sleep(0.3)
    after = client.send("STATUS")
    assert after["block"] == before["block"]
    assert after["n_frames"] > before["n_frames"], "the display must keep refreshing when paused"
    assert client.send("RESUME")["resumed"] is True
    assert client.send("STATUS")["block"]["state"] == "running"
    drain(inlet)
    assert client.send("STOP")["stopped"] == ["block"]
    names, _ = markers_until(inlet, lambda m: "stop" in m)
    assert "stop" in names
    assert client.send("STATUS")["block"]["state"] == "stopped"


def test_feedback_bar_follows_the_decoder_stream(
    client: ModuleClient, lsl_name: str, tmp_path: Path
) -> None:
    info = pylsl.StreamInfo(lsl_name, "Decoder", 1, 0.0, "float32", f"src_{lsl_name}")
    outlet = pylsl.StreamOutlet(info)
    try:
        reply = client.send("FEEDBACK", stream=lsl_name, channel=0, vmin=0.0, vmax=1.0)
        assert reply["marker"] == f"feedback_start:{lsl_name}"
        heights = {}
        for v in (0.9, 0.2):
            end = time.monotonic() + 20
            st = client.send("STATUS")
            while time.monotonic() < end and st["feedback"]["raw"] != pytest.approx(v):
                outlet.push_sample([v])
                time.sleep(0.05)
                st = client.send("STATUS")
            assert st["feedback"]["value"] == pytest.approx(v, abs=1e-6)
            img = shot(client, tmp_path, f"fb_{v}.png")
            green = (img[..., 1] > 150) & (img[..., 0] < 120) & (img[..., 2] < 120)
            rows = np.nonzero(green.any(axis=1))[0]
            heights[v] = len(rows)
        assert heights[0.9] > 3 * heights[0.2] > 0, heights
    finally:
        client.send("STOP")
        del outlet


def test_photodiode_patch_toggles_at_each_onset(client: ModuleClient, tmp_path: Path) -> None:
    client.send("CLOSE_WINDOW")
    assert client.send("STATUS")["window_open"] is False
    with pytest.raises(CommandFailed, match="send OPEN first"):
        client.send("SHOW_TEXT", text="x")
    client.send("OPEN", photodiode="top_right", photodiode_size=40)
    try:
        client.send("SHOW_TEXT", text="A")
        img = shot(client, tmp_path, "pd1.png")
        assert bright(img)[:40, -40:].all(), "patch should be white after the first onset"
        assert np.abs(img[-5, 5] - GREY).max() < 8, "only the chosen corner has a patch"
        client.send("CLEAR")
        img = shot(client, tmp_path, "pd2.png")
        assert (img[:40, -40:].max(axis=2) < 10).all(), "patch should be black after the next"
    finally:
        client.send("CLOSE_WINDOW")
        client.send("OPEN", photodiode="off")


# ---- Builder experiments ----------------------------------------------------------------------
def test_run_experiment_saves_its_data_and_sends_markers(
    client: ModuleClient, presenter: dict[str, Any], experiments: Path
) -> None:
    inlet = presenter["inlet"]
    drain(inlet)
    reply = client.send(
        "RUN_EXPERIMENT",
        file="psychopy_experiment/count_trials.py",
        exp_info={"participant": "p01", "n_trials": "3"},
    )
    data_file = Path(reply["data_file"])
    assert data_file.parent == experiments / "psychopy_experiment" / "data"
    st = wait_status(client, lambda s: (s["experiment"] or {}).get("state") == "finished", 60)
    assert st["experiment"]["state"] == "finished", st["experiment"]
    rows = list(csv.DictReader(open(data_file.with_suffix(data_file.suffix + ".csv"))))
    assert [r["participant"] for r in rows if r.get("trials.thisN")] == ["p01"] * 3
    names, _ = markers_until(inlet, lambda m: any(n.startswith("experiment_end") for n in m))
    assert names == [
        "experiment_start:count_trials",
        "exp:word",
        "exp:word",
        "exp:word",
        "experiment_end:count_trials:finished",
    ]
    assert client.send("SHOW_TEXT", text="back")["marker"] == "text:back"


def test_psyexp_experiment_pause_resume_stop(client: ModuleClient, experiments: Path) -> None:
    reply = client.send(
        "RUN_EXPERIMENT",
        file="psychopy_experiment/count_trials.psyexp",
        exp_info={"participant": "p02", "n_trials": "500"},
    )
    wait_status(client, lambda s: (s["experiment"] or {}).get("state") == "running")
    assert client.send("PAUSE")["paused"] is True
    with pytest.raises(CommandFailed, match="busy"):
        client.send("SHOW_TEXT", text="no")
    assert client.send("STATUS")["experiment"]["state"] == "paused"
    assert client.send("RESUME")["resumed"] is True
    assert client.send("STOP")["stopped"] is True
    st = wait_status(
        client, lambda s: s["experiment"]["state"] not in ("running", "paused", "stopping")
    )
    assert st["experiment"]["state"] == "stopped"
    csv_file = Path(reply["data_file"] + ".csv")
    n_rows = sum(1 for _ in open(csv_file)) - 1
    assert 0 < n_rows < 500, "stopped early, and the trials so far were saved"


# ---- failures -----------------------------------------------------------------------------------
def test_window_that_cannot_open_is_a_clear_error(
    module_process: Callable[..., tuple[subprocess.Popen, int]],
) -> None:
    _, port = module_process("services.presenter", "--size", "200x200", env={"DISPLAY": ":4999"})
    with ModuleClient("127.0.0.1", port, timeout=60) as c:
        with pytest.raises(CommandFailed, match=r"cannot open a window \(DISPLAY=':4999'"):
            c.send("OPEN")
        st = c.send("STATUS")
        assert st["child_alive"] is True
        assert st["window_open"] is False


def test_a_stuck_child_never_hangs_the_server(client: ModuleClient, tmp_path: Path) -> None:
    pid = client.send("STATUS")["child_pid"]
    os.kill(pid, signal.SIGSTOP)  # frozen child: alive but never answers
    try:
        with pytest.raises(CommandFailed, match="did not answer show_text"):
            client.send("SHOW_TEXT", text="frozen")
        st = client.send("STATUS")  # answered from the cache, not by the child
        assert st["child_alive"] is True
        assert st["child_pid"] == pid
        reply = client.send("OPEN", restart=True)
    finally:
        if _exists(pid):
            os.kill(pid, signal.SIGCONT)
    assert reply["child_started"] is True
    assert reply["child_pid"] != pid
    client.send("SHOW_TEXT", text="thawed", height=0.25)
    assert bright(shot(client, tmp_path)).sum() > 100


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_child_death_is_reported_and_open_brings_it_back(
    client: ModuleClient, tmp_path: Path
) -> None:
    before = client.send("STATUS")
    pid = before["child_pid"]
    os.kill(pid, signal.SIGKILL)
    st = wait_status(client, lambda s: not s["child_alive"])
    assert st["child_alive"] is False
    assert st["child_exit_code"] == -signal.SIGKILL
    with pytest.raises(CommandFailed, match="presenter child died"):
        client.send("SHOW_TEXT", text="x")
    reply = client.send("OPEN")
    assert reply["child_started"] is True
    assert reply["child_pid"] != pid
    st = client.send("STATUS")
    assert st["child_alive"] is True
    assert st["child_restarts"] == before["child_restarts"] + 1
    client.send("SHOW_TEXT", text="again", height=0.25)
    assert bright(shot(client, tmp_path)).sum() > 100


def test_a_stop_we_asked_for_is_info_and_a_death_is_a_warning(lsl_name: str) -> None:
    """At the end of every clean run the child is shut down on purpose: that is not a warning
    (it was one, and `make run` ended with "presenter WARNING child exited"); a child that dies
    unasked still is."""
    from structlog.testing import capture_logs

    from services.presenter.link import ChildLink

    def ended() -> list[tuple[str, str]]:
        return [(r["event"], r["log_level"]) for r in logs if r["event"].startswith("child ")]

    link = ChildLink(marker_stream=lsl_name)
    with capture_logs() as logs:
        link.start()
        link.wait_ready(30)
        link.stop()
        wait_for(lambda: ("child stopped", "info") in ended(), what="the stop logged")
        link.start()
        link.wait_ready(30)
        link.kill()
        wait_for(lambda: ("child exited", "warning") in ended(), what="the death logged")
    assert ("child exited", "warning") not in ended()[:2], ended()
