"""A source in another language publishes into the same ring: examples/modules/shm_writer_c,
built with gcc -Werror, writes per docs/shm-transport.md and a Python ShmReader gets every value
exactly; the one-writer-per-name rule holds across languages, and nothing is left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from shm_helpers import Child, leftovers, shm_session_fixture  # noqa: F401

from shared_utils.streams.shm import RingInUseError, ShmReader, ShmWriter

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def c_writer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed: the C ring writer example cannot be built")
    build = tmp_path_factory.mktemp("shm_writer_c")
    src = ROOT / "examples" / "modules" / "shm_writer_c"
    for name in ("shm_writer.c", "Makefile"):
        shutil.copy(src / name, build / name)
    subprocess.run(
        ["make", "-C", str(build), "CC=gcc", "CFLAGS=-O2 -Wall -Wextra -Werror -std=c11"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return build / "shm_writer"


def test_python_reader_reads_the_c_writers_samples_exactly(c_writer: Path, shm_session) -> None:
    n, ch = 5000, 8
    c = Child([str(c_writer), "--name", "cw", "--channels", str(ch), "--srate", "10000",
               "--samples", str(n), "--chunk", "25", "--hold"])  # fmt: skip
    try:
        assert c.line().startswith("ready")
        with ShmReader("cw", start="oldest") as r:
            assert (r.channels, r.srate, r.dtype.name, r.capacity) == (ch, 10000.0, "int16", 10000)
            assert r.meta == {"unit": "uV", "source": "shm_writer.c"}
            assert r.writer_pid == c.pid
            c.send()
            assert c.line() == f"done {n}"
            data, ts = r.pop_new()
            want = ((np.arange(n)[:, None] * 7 + np.arange(ch)) % 32000).astype(np.int16)
            assert np.array_equal(data, want)
            assert r.lost_samples == 0
            steps = np.diff(ts.reshape(-1, 25), axis=1)  # inside a chunk: exactly 1/srate
            np.testing.assert_allclose(steps, 1e-4, atol=1e-9)
            assert ts[-1] <= time.clock_gettime(time.CLOCK_MONOTONIC)  # the LSL clock
            with pytest.raises(RingInUseError, match=f"pid {c.pid}"):
                ShmWriter("cw", ch, 10000, lsl="off")
            c.send()
            assert c.proc.wait(30) == 0
            assert r.writer_state() == "closed"
        assert leftovers(shm_session) == []
    finally:
        c.kill()


def test_c_writer_refuses_a_name_a_python_writer_owns(c_writer: Path, shm_session) -> None:
    with ShmWriter("owned", 4, 1000, lsl="off"):
        p = subprocess.run(
            [str(c_writer), "--name", "owned"], capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert p.returncode == 1
        assert f"'owned' already has a live writer (pid {os.getpid()})" in p.stderr
    assert leftovers(shm_session) == []  # the refused C writer removed its half-made ring
