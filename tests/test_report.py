"""Session report: figures and one self-contained HTML page from a recording made in the test.

Two kinds of recording: one written here with our XdfWriter, shaped like the default mesh's
(8-channel 250 Hz EEG from the mock streamer's own generator, its state markers, decoder output,
Bpod events, command and presenter markers), where every figure's input is known; and one
recorded by the real modules under a real control room (mock EEG -> decoder -> Bpod soft codes,
presenter feedback, a SCREENSHOT step), which is what `make run` produces.
"""

from __future__ import annotations

import base64
import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import free_port
from PIL import Image

from control_room import cli
from control_room.report import (
    FIGURES,
    ReportResult,
    report_after_run,
    report_paths,
    write_report,
)
from control_room.report import analysis as an
from control_room.report import figures as fg
from control_room.report.session import load_session
from services.mockup_streamer.synth import StateSchedule, SyntheticEEG
from shared_utils.streams.xdf_format import stream_info_xml
from shared_utils.streams.xdf_writer import XdfWriter

T0 = 5000.0  # LSL clock at the first sample
SRATE = 250.0
DURATION_S = 40.0
ONLINE_FROM_S = 20.0
ALL_STREAMS = ("eeg", "truth", "decoder", "bpod", "commands", "presenter")


# -- a recording shaped like the default mesh's --------------------------------------------------


def _channels_xml(labels: list[str], unit: str) -> str:
    chans = "".join(f"<channel><label>{x}</label><unit>{unit}</unit></channel>" for x in labels)
    return f"<channels>{chans}</channels>"


def _markers(w: XdfWriter, sid: int, name: str, items: list[tuple[float, str]], src: str) -> None:
    w.add_stream(
        sid,
        stream_info_xml(name, "Markers", 1, 0.0, "string", source_id=src),
    )
    w.write_clock_offset(sid, T0, 0.0)
    if items:
        items = sorted(items, key=lambda x: x[0])
        w.write_samples(sid, np.array([t for t, _ in items]), [[x] for _, x in items])


def _bpod_items(start: float, end: float, switch_on: list[float]) -> list[tuple[float, str]]:
    """Trials of WaitForDecoder (ends on SoftCode1 or after 6 s) -> Reward 0.2 s -> ITI 0.5 s."""
    items, t, n = [], start, 0
    while t < end - 1.0:
        n += 1
        items += [(t, f"trial_start:{n}"), (t, "state:WaitForDecoder")]
        codes = [s + 0.008 for s in switch_on if t < s + 0.008 < t + 6.0]
        if codes:
            t = codes[0]
            items += [(t, "event:SoftCode1"), (t, "state:Reward"), (t + 0.2, "event:Tup")]
            items += [(t + 0.2, "state:ITI")]
            t += 0.2
        else:
            t += 6.0
            items += [(t, "event:Tup"), (t, "state:ITI")]
        t += 0.5
        items += [(t, "event:Tup"), (t, "state:exit"), (t, f"trial_end:{n}")]
        t += 0.002
    return items


def write_session(path: Path, include: tuple[str, ...] = ALL_STREAMS, empty: tuple = ()) -> Path:
    """Write the recording; streams in ``empty`` get a header but no samples."""
    schedule = StateSchedule(SRATE, period_s=4.0)
    synth = SyntheticEEG(8, SRATE, schedule, seed=7)
    n = int(DURATION_S * SRATE)
    eeg = synth.generate(0, n)
    t_eeg = T0 + np.arange(n) / SRATE
    switches = [(T0 + k / SRATE, state) for k, state in schedule.switches(0, n)]
    # decoder: P(high) follows the truth with the lags a 1 s window gives (0.3 s up, 0.9 s down)
    t_dec = np.arange(T0 + ONLINE_FROM_S, T0 + DURATION_S, 0.1)
    p_high = np.zeros(len(t_dec))
    for t_s, state in switches:
        lag = 0.3 if state == "high" else 0.9
        p_high[t_dec >= t_s + lag] = 0.97 if state == "high" else 0.03
    on = [float(t) for t, a, b in zip(t_dec[1:], p_high[:-1], p_high[1:], strict=True) if a < b]
    cmd = [
        (T0 - 0.5, {"module": "recorder", "cmd": "START", "kwargs": {"file": path.name}}),
        (T0 + 1.0, {"module": "presenter", "cmd": "RUN_BLOCK", "kwargs": {"n_trials": 4}}),
        (T0 + 19.0, {"module": "decoder", "cmd": "START", "kwargs": {
            "output": "decoder_output", "window_s": 1.0, "on_threshold": 0.7, "off_threshold": 0.3,
            "notify": {"on": "SOFT_CODE", "on_kwargs": {"code": 1}}}}),
        (T0 + 19.5, {"module": "presenter", "cmd": "FEEDBACK", "kwargs": {"stream": "decoder_output"}}),
        (T0 + 30.0, {"module": "decoder", "cmd": "SET", "kwargs": {"on_threshold": 0.8}}),
        (T0 + 39.9, {"module": "presenter", "cmd": "STOP", "kwargs": {}}),
    ]  # fmt: skip
    presenter = [(T0 + 1.017, "block_start:1")]
    for i in range(4):
        presenter += [(T0 + 1.017 + 4 * i, f"cue:{'relax' if i % 2 else 'focus'}")]
        presenter += [(T0 + 2.017 + 4 * i, "stimulus:x"), (T0 + 4.017 + 4 * i, "iti")]
    presenter += [(T0 + 19.512, "feedback_start:decoder_output"), (T0 + 39.916, "stop")]
    with XdfWriter(path, overwrite=True) as w:
        if "eeg" in include:
            labels = [f"ch{i + 1}" for i in range(8)]
            w.add_stream(1, stream_info_xml("mock_eeg", "EEG", 8, SRATE, "float32",
                                            desc_xml=_channels_xml(labels, "microvolts")))  # fmt: skip
            w.write_clock_offset(1, T0, 0.0)
            if "eeg" not in empty:
                for a in range(0, n, 2500):
                    w.write_samples(1, t_eeg[a : a + 2500], eeg[a : a + 2500])
        if "truth" in include:
            truth = [(t, s) for t, s in switches] if "truth" not in empty else []
            _markers(w, 2, "mock_eeg_markers", truth, "mock_eeg_markers")
        if "decoder" in include:
            desc = _channels_xml(["p_high", "p_low"], "probability")
            w.add_stream(3, stream_info_xml("decoder_output", "Control", 2, 0.0, "float32",
                                            source_id="decoder:decoder_output", desc_xml=desc))  # fmt: skip
            w.write_clock_offset(3, T0, 0.0)
            if "decoder" not in empty:
                w.write_samples(3, t_dec, np.c_[p_high, 1 - p_high])
        if "bpod" in include:
            items = _bpod_items(T0 + 19.6, T0 + DURATION_S, on) if "bpod" not in empty else []
            _markers(w, 4, "bpod_events", items, "bpod-bpod_events-1")
        if "commands" in include:
            items = [(t, json.dumps({**c, "source": "test"})) for t, c in cmd]
            _markers(w, 5, "control_room_commands", items if "commands" not in empty else [],
                     "control_room-1")  # fmt: skip
        if "presenter" in include:
            _markers(w, 6, "presenter_markers", presenter if "presenter" not in empty else [],
                     "presenter:presenter_markers:1")  # fmt: skip
    return path


def screenshot_png(path: Path) -> Path:
    """A stand-in for the presenter's screenshot: grey window with a green feedback bar."""
    img = np.full((240, 320, 3), 128, np.uint8)
    img[60:220, 150:170] = (50, 205, 50)
    Image.fromarray(img).save(path)
    return path


# -- checks ---------------------------------------------------------------------------------------


def assert_picture(path: Path, size: tuple[int, int] | None = None, colours: int = 10) -> None:
    """The PNG exists, has the expected size, and is not blank (real variance, several colours)."""
    assert path.is_file(), f"{path} missing"
    img = np.asarray(Image.open(path).convert("RGB"))
    if size is not None:
        assert (img.shape[1], img.shape[0]) == size, f"{path.name}: {img.shape[1::-1]} != {size}"
    assert img.std() > 5.0, f"{path.name} is blank (pixel sd {img.std():.2f})"
    rgb = img.astype(np.int32)
    n = len(np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]))
    assert n >= colours, f"{path.name} has {n} colours"


def figure_width() -> int:
    return int(fg.WIDTH_IN * fg.DPI)


def assert_report(res: ReportResult, skipped: set[str]) -> str:
    """Every figure written and embedded in the page; exactly ``skipped`` are placeholders."""
    assert set(res.figures) == set(FIGURES)
    assert set(res.skipped) == skipped, res.skipped
    html = res.html.read_text()
    assert "<script" not in html
    assert 'src="http' not in html
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == len(FIGURES)
    for name, path in res.figures.items():
        assert base64.b64encode(path.read_bytes()).decode() in embedded, f"{name} not embedded"
        if name != "presenter_screenshot" or name in skipped:
            assert_picture(path)
            assert Image.open(path).size[0] == figure_width()
    section = html.split("<h2>Skipped</h2>", 1)[1].split("<h2", 1)[0]
    for name in skipped:
        assert FIGURES[name][0] in section, f"{name} not listed as skipped"
        assert res.skipped[name] in unescape(html)
    if not skipped:
        assert "Nothing: every figure was drawn" in section
    return html


# -- tests ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session_xdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_session(tmp_path_factory.mktemp("rec") / "mesh_test.xdf")


def test_full_session_gives_every_figure(session_xdf: Path, tmp_path: Path) -> None:
    shot = screenshot_png(tmp_path / "shot.png")
    res = write_report(session_xdf, tmp_path / "out", {"screenshot": shot, "notes": {"trials": 4}})
    assert res.html == tmp_path / "out" / "mesh_test_report.html"
    assert res.figures["eeg_excerpt"].parent == tmp_path / "out" / "mesh_test_report"
    html = assert_report(res, skipped=set())
    assert_picture(res.figures["presenter_screenshot"], (320, 240), colours=2)
    # what the figures are built from: thresholds from the START/SET commands, the latencies
    assert "Closed loop: EEG sample -&gt; Bpod event" in html
    for s in ("mock_eeg", "decoder_output", "bpod_events", "Run summary"):
        assert s in html
    session = load_session(session_xdf)
    tr = an.decoder_trace(session)
    assert [p["on_threshold"] for _, p in tr.params] == [0.6, 0.7, 0.8]
    assert tr.notify_event == "SoftCode1"
    assert not tr.state_recorded
    loop, command, detect = an.latencies(session)
    assert np.allclose(loop.values, 8.0, atol=0.5)
    assert len(loop.values) >= 2
    assert len(command.values) == 3
    assert command.unmatched == 0
    assert np.allclose(command.values, [17.0, 12.0, 16.0], atol=0.5)
    assert set(np.round(detect.values, 1)) <= {0.3, 0.4, 0.9, 1.0}
    trials = an.bpod_trials(session)
    assert trials
    assert all(tr.end is not None for tr in trials)
    assert [name for name, _, _ in trials[0].states][0] == "WaitForDecoder"


def test_missing_and_empty_streams_give_placeholders(tmp_path: Path) -> None:
    xdf = write_session(tmp_path / "partial.xdf", include=("eeg", "decoder", "presenter"),
                        empty=("decoder",))  # fmt: skip
    res = write_report(xdf, extras={"screenshot": tmp_path / "nope.png"})
    html = assert_report(
        res, skipped={"decoder", "bpod_trials", "latencies", "presenter_screenshot"}
    )
    assert "has no samples" in res.skipped["decoder"]
    assert "bpod_events" in res.skipped["bpod_trials"]
    assert "screenshot file not found" in res.skipped["presenter_screenshot"]
    assert "not measured" in html  # the latency table says why each one is missing


def test_recording_without_streams_gives_a_page_of_placeholders(tmp_path: Path) -> None:
    res = write_report(write_session(tmp_path / "none.xdf", include=()))
    assert res.html == tmp_path / "none_report.html"  # next to the recording by default
    assert_report(res, skipped=set(FIGURES))


def test_end_of_run_hook_never_raises(session_xdf: Path, tmp_path: Path) -> None:
    assert report_after_run({"file": None}) is None
    bad = report_after_run({"file": str(tmp_path / "gone.xdf")})
    assert "not found" in bad["error"]
    summary = {"file": str(session_xdf), "decoder_accuracy": 0.975, "trials": 4, "macro": "x"}
    res = report_after_run(summary)
    assert Path(res["html"]) == report_paths(session_xdf)[0]
    html = Path(res["html"]).read_text()
    assert "decoder cross-validated accuracy</th><td>0.975" in html


def test_cli_prints_the_html_path_and_refuses_bad_files(session_xdf: Path, tmp_path: Path) -> None:
    shot = screenshot_png(tmp_path / "s.png")
    runner = CliRunner()
    out = runner.invoke(
        cli.main, ["report", str(session_xdf), "--out", str(tmp_path), "--screenshot", str(shot)]
    )
    assert out.exit_code == 0, out.output
    html, _ = report_paths(session_xdf, tmp_path)
    assert out.stdout.strip() == str(html)
    assert html.is_file()
    assert out.stderr == ""  # nothing skipped
    (tmp_path / "junk.xdf").write_bytes(b"not an xdf file at all")
    for bad, words in (("missing.xdf", "not found"), ("junk.xdf", "cannot read")):
        out = runner.invoke(cli.main, ["report", str(tmp_path / bad)])
        assert out.exit_code == 1, out.output
        assert words in out.stderr
        assert isinstance(out.exception, SystemExit)  # a message, not a traceback
    out = runner.invoke(cli.main, ["report", str(session_xdf), "--out", str(tmp_path / "a"),
                                   "--screenshot", str(tmp_path / "missing.png")])  # fmt: skip
    assert out.exit_code == 0
    assert "screenshot file not found" in out.stderr


def test_long_recording_is_capped(tmp_path: Path) -> None:
    """64 channels at 2 kHz: the excerpt draws at most MAX_POINTS per channel."""
    xdf = tmp_path / "big.xdf"
    n, ch = 30_000, 64
    with XdfWriter(xdf) as w:
        w.add_stream(1, stream_info_xml("amp", "EEG", ch, 2000.0, "float32"))
        rng = np.random.default_rng(0)
        w.write_samples(1, T0 + np.arange(n) / 2000.0, rng.standard_normal((n, ch)))
    res = write_report(xdf)
    assert "eeg_excerpt" not in res.skipped
    assert_picture(res.figures["eeg_excerpt"])
    fig = fg.eeg_excerpt(load_session(xdf))
    traces = [line for line in fig.axes[1].lines if len(line.get_xdata()) > 2]
    assert len(traces) == fg.MAX_CHANNELS
    assert all(len(line.get_xdata()) <= fg.MAX_POINTS for line in traces)


# -- a real session ---------------------------------------------------------------------------------


def _step(send: str, cmd: str, kwargs: str = "", **extra: object) -> str:
    """One macro step as TOML (``kwargs``: the inside of an inline table)."""
    lines = ["[[macros.session.steps]]", f'send = "{send}"', f'cmd = "{cmd}"']
    lines += [f"kwargs = {{ {kwargs} }}"] if kwargs else []
    return "\n".join(lines + [f"{k} = {v}" for k, v in extra.items()])


def real_session_config(tmp_path: Path, fit_on: Path, names: dict[str, str]) -> Path:
    """The `make run` experiment in small: mock EEG -> decoder -> Bpod soft codes, presenter
    feedback, a SCREENSHOT next to the recording before it stops (the make-run hook)."""
    port = {m: free_port() for m in ("mock", "rec", "dec", "bpod", "pres")}
    args = {
        "mock": ("services.mockup_streamer", []),
        "rec": ("services.recorder", ["--data-dir", str(tmp_path), "--flush-ms", "200"]),
        "dec": ("services.decoder", ["--data-dir", str(fit_on.parent)]),  # FIT's file is there
        "bpod": ("services.bpod", ["--emulator", "--stream-name", names["bpod"],
                                   "--trials-file", str(tmp_path / "trials.jsonl")]),
        "pres": ("services.presenter", ["--size", "320x240", "--marker-stream", names["presenter"],
                                        "--data-dir", str(tmp_path)]),  # shared with the recorder
    }  # fmt: skip
    modules = [
        f'[modules.{m}]\nmodule = "{mod}"\nport = {port[m]}\nargs = {json.dumps(a)}\n'
        f"ready_timeout_s = 30\ndisplay = {'true' if m == 'pres' else 'false'}"
        for m, (mod, a) in args.items()
    ]
    eeg, dec = names["eeg"], names["decoder"]
    streams = json.dumps([eeg, f"{eeg}_markers", *(v for k, v in names.items() if k != "eeg")])
    machine = (
        'state_machine = { states = ['
        '{ name = "WaitForDecoder", timer = 1.5, transitions = { SoftCode1 = "Reward", Tup = "ITI" } },'
        '{ name = "Reward", timer = 0.1, transitions = { Tup = "ITI" }, actions = { Valve1 = 1 } },'
        '{ name = "ITI", timer = 0.2, transitions = { Tup = "exit" } }] }'
    )  # fmt: skip
    notify = f'notify = {{ port = {port["bpod"]}, on = "SOFT_CODE", on_kwargs = {{ code = 1 }} }}'
    steps = [
        _step("rec", "START", f'file = "real.xdf", streams = {streams}', save_as='"rec"'),
        _step("dec", "FIT", f'xdf = "{fit_on}", signal = "mock_eeg"', timeout_s=60),
        _step("mock", "START", f'stream = "{eeg}", channels = 8, srate = 250, period_s = 1.0'),
        _step("pres", "OPEN"),
        _step("bpod", "LOAD", machine),
        _step("dec", "START", f'input = "{eeg}", output = "{dec}", window_s = 0.5, {notify}'),
        f'[[macros.session.steps]]\nwait_stream = "{dec}"\ntimeout_s = 10',
        _step("pres", "FEEDBACK", f'stream = "{dec}"'),
        _step("bpod", "RUN", "trials = 100"),
        "[[macros.session.steps]]\nwait_s = 3.5",
        _step("pres", "SCREENSHOT", 'file = "${rec.file}.png"'),
        *(_step(m, "STOP") for m in ("bpod", "dec", "pres", "rec", "mock")),
    ]
    config = tmp_path / "mesh.toml"
    config.write_text(
        f'[control_room]\nport = 0\npub_port = 0\nlog_port = 0\nweb_port = 0\nlog_dir = "{tmp_path / "logs"}"\n'
        f'marker_stream = "{names["commands"]}"\n'
        + "\n".join(modules) + "\n[macros.session]\n" + "\n".join(steps) + "\n"
    )  # fmt: skip
    return config


def test_report_of_a_real_closed_loop_session(
    session_xdf: Path, tmp_path: Path, lsl_name: str
) -> None:
    """Real modules under a real control room: the report of their recording has every figure."""
    from control_room.config import load_config
    from control_room.room import ControlRoom

    roles = ("eeg", "decoder", "bpod", "presenter", "commands")
    names = {r: f"{lsl_name[-8:]}_{r}" for r in roles}
    room = ControlRoom(load_config(real_session_config(tmp_path, session_xdf, names)))
    try:
        room.up()
        report = room.run_macro("session")
    finally:
        room.down()
    xdf = Path(report.steps[0].result["file"])
    res = write_report(xdf, extras={"streams": names})
    assert_report(res, skipped=set())
    assert res.figures["presenter_screenshot"].read_bytes() == Path(f"{xdf}.png").read_bytes()
    assert_picture(res.figures["presenter_screenshot"], (320, 240), colours=2)
