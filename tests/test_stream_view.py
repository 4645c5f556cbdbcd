"""`python -m shared_utils.streams.view` / `control-room view`: a live stream in the terminal,
against a real mockup streamer on loopback LSL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT

from shared_utils.streams.view import ASCII_BARS, BARS, sparkline


def view(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared_utils.streams.view", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def eeg(module_process, lsl_name: str) -> str:
    """A 3-channel 100 Hz stream labelled Fz, Cz, Pz, with a marker every 0.5 s."""
    _, port = module_process("services.mockup_streamer")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        kwargs = {
            "stream": lsl_name,
            "channels": 3,
            "srate": 100,
            "chunk": 5,
            "period_s": 0.5,
            "channel_names": ["Fz", "Cz", "Pz"],
        }
        s.sendall(b"START|" + json.dumps(kwargs).encode() + b"\n")
        assert json.loads(s.makefile("rb").readline())["ok"]
    return lsl_name


def test_sparkline_scales_between_the_extremes() -> None:
    assert sparkline(np.arange(8.0), 8) == BARS
    assert sparkline(np.arange(8.0), 8, ASCII_BARS) == ASCII_BARS
    assert sparkline(np.zeros(100), 5) == BARS[0] * 5  # flat: the lowest bar, no division by 0
    assert sparkline(np.array([np.nan, np.nan, 1.0, 2.0]), 4) == f"  {BARS[0]}{BARS[-1]}"
    assert sparkline(np.arange(3.0), 10) == f"{BARS[0]}{BARS[4]}{BARS[-1]}".ljust(10)
    assert sparkline(np.empty(0), 4) == "    "


def test_one_picture_shows_rate_channels_and_values(eeg: str) -> None:
    res = view(eeg, "--once", "--seconds", "1", "--width", "20")
    assert res.returncode == 0, res.stderr
    head, *rows = res.stdout.splitlines()
    assert head.startswith(f"{eeg} (EEG, 3 ch, float32) 100 Hz nominal, ")
    assert "Hz measured" in head
    assert ", 0 gaps, " in head
    assert [r.split()[0] for r in rows] == ["Fz", "Cz", "Pz"]
    for row in rows:
        bars = row.split()[1]
        assert len(bars) == 20, row
        assert set(bars) <= set(BARS), row
        assert " rms " in row
        assert " last " in row
    assert "stream connected" not in res.stderr  # log lines would break the picture


def test_markers_fewer_channels_and_ascii(eeg: str) -> None:
    res = view(f"{eeg}_markers", "--once")
    assert res.returncode == 0, res.stderr
    head, first, *_ = res.stdout.splitlines()
    assert "(Markers, 1 ch, string) irregular" in head
    assert first.split()[-1] in ("high", "low")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared_utils.streams.view",
            eeg,
            "--once",
            "--channels",
            "1",
            "--width",
            "12",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
    )
    rows = res.stdout.splitlines()
    assert set(rows[1].split()[1]) <= set(ASCII_BARS)
    assert rows[2] == "... 2 more channels (--channels N shows more)"


def test_no_stream_name_lists_them_and_a_wrong_name_says_what_is_there(eeg: str) -> None:
    res = view()
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["name", "type", "channels", "rate", "(Hz)", "format", "host"]
    assert any(line.split()[:4] == [eeg, "EEG", "3", "100"] for line in lines)
    res = view(eeg + "_typo", "--timeout", "1")
    assert res.returncode == 1
    assert f"no LSL stream named '{eeg}_typo' within 1 s; visible streams: " in res.stderr
    assert eeg in res.stderr


def test_live_view_redraws_until_ctrl_c_through_the_control_room_cli(eeg: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "control_room", "view", eeg, "--seconds", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        out = ""
        while out.count(f"{eeg} (EEG") < 2 and time.monotonic() < deadline:
            out += proc.stdout.readline()
        assert out.count(f"{eeg} (EEG") >= 2, out  # not a terminal: one picture a second
    finally:
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
