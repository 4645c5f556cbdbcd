"""Bad input for the shared-memory transport, each detected and reported clearly with the other
parties unaffected and nothing left in /dev/shm: a writer killed mid-write (torn chunk), a reader
killed holding a position, a second writer for a name, a ring too small or too big, a dead
writer's stale ring, a missing ring, bad chunks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from shm_helpers import children_fixture, leftovers, shm_session_fixture  # noqa: F401

from shared_utils.streams.shm import (
    RingInUseError,
    RingNotFoundError,
    RingTooSmallError,
    ShmError,
    ShmReader,
    ShmWriter,
    WriterGoneError,
    _os,
    sweep_stale,
)


def test_writer_killed_mid_write_torn_chunk_is_never_delivered(children, shm_session) -> None:
    w = children("writer", "--name", "torn", "--chunks", "20", "--torn")
    assert w.line().startswith("ready")
    r = ShmReader("torn", start="oldest")
    w.send()
    assert w.line() == "torn"
    assert w.proc.wait(30) == -signal.SIGKILL
    data, _ = r.pop_new()  # everything committed before the crash, intact; not the torn chunk
    assert np.array_equal(data[:, 0], np.arange(200))
    assert (data == data[:, :1]).all()
    assert r.lost_samples == 0
    assert not r.wait(1.0)  # no hang: the waiter notices the writer is gone
    assert r.writer_state() == "died"
    assert "middle of a write" in r.writer_problem
    assert "(10)" in r.writer_problem
    assert r.stats()["connected"] is False
    with pytest.raises(WriterGoneError, match="never committed"):  # a late reader is refused
        ShmReader("torn")
    assert leftovers(shm_session) == []  # ...and the stale ring went with the refusal
    r.close()


def test_reader_killed_holding_a_position_does_not_disturb_anyone(children) -> None:
    with ShmWriter("rk", 8, 10000, "int32", lsl="off") as w:
        dead = children("reader", "--name", "rk", "--samples", "100", "--hang")
        assert dead.line() == "ready"
        survivor = ShmReader("rk")
        w.push_chunk(np.zeros((100, 8), np.int32))
        assert json.loads(dead.line())["position"] == 100
        os.kill(dead.pid, signal.SIGKILL)
        dead.proc.wait(10)
        for _ in range(30):
            w.push_chunk(np.ones((100, 8), np.int32))
        readers = w.readers()  # the writer frees the dead reader's slot and says where it stood
        assert [x["pid"] for x in readers] == [os.getpid()]
        ev = w.reader_events[-1]
        assert ev["event"] == "reader_died"
        assert ev["pid"] == dead.pid
        assert ev["position"] == 100
        assert ev["behind"] == 3000
        got, _ = survivor.pop_new()
        assert len(got) == 3100
        assert survivor.lost_samples == 0
        survivor.close()


def test_second_writer_for_a_name_is_refused_naming_the_owner(children) -> None:
    w = children("writer", "--name", "dup", "--chunks", "10", "--hold")
    assert w.line().startswith("ready")
    with pytest.raises(RingInUseError, match=rf"live shared-memory writer .*pid {w.pid}"):
        ShmWriter("dup", 8, 10000, "int32", lsl="off")
    with ShmReader("dup", start="oldest") as r:  # the first writer carries on undisturbed
        w.send()
        assert w.line() == "done 100"
        data, _ = r.pop_new()
        assert np.array_equal(data[:, 0], np.arange(100))
        w.send()
        assert w.proc.wait(30) == 0


def test_ring_too_small_or_too_big_is_refused_and_leaves_nothing(shm_session: str) -> None:
    with pytest.raises(RingTooSmallError, match=r"too small for 30000 Hz.*at least 0.1 s"):
        ShmWriter("small", 384, 30000, capacity_s=0.05, lsl="off")
    free = _os.shm_free_bytes()
    huge_s = 2 * free / (1024 * 2 * 30000)
    with pytest.raises(ShmError, match=r"MB free.*shm_size"):
        ShmWriter("huge", 1024, 30000, capacity_s=huge_s, lsl="off")
    assert leftovers(shm_session) == []


def test_bad_arguments_and_chunks_get_clear_errors(shm_session: str) -> None:
    with pytest.raises(ValueError, match="irregular streams"):
        ShmWriter("irr", 1, 0.0, lsl="off")
    with pytest.raises(ValueError, match="not supported"):
        ShmWriter("str", 1, 100, dtype="complex64", lsl="off")
    with ShmWriter("chk", 4, 1000, lsl="off") as w:
        with pytest.raises(ValueError, match="more than half the ring"):
            w.push_chunk(np.zeros((600, 4), np.int16))
        with pytest.raises(ValueError, match="rows of 4 channels"):
            w.push_chunk(np.zeros((10, 5), np.int16))
        with pytest.raises(ValueError, match="float64 would be truncated in this ring of int16"):
            w.push_chunk(np.full((10, 4), 0.5))
        with pytest.raises(ValueError, match="timestamps of shape"):
            w.push_chunk(np.zeros((10, 4), np.int16), np.zeros(3))
        assert w.push_chunk(np.zeros((10, 4), np.int16)) == 10  # still fine afterwards
        assert w.total == 10
    with pytest.raises(ShmError, match="closed"):
        w.push_chunk(np.zeros((1, 4), np.int16))


def test_crashed_writer_ring_is_swept_and_its_name_reusable(children, shm_session) -> None:
    w = children("writer", "--name", "crash", "--chunks", "5", "--hold")
    assert w.line().startswith("ready")
    w.send()
    assert w.line() == "done 50"
    w.kill()  # SIGKILL: no close, no unlink
    assert leftovers(shm_session) == [f"clmesh.{shm_session}.crash"]
    cli = [sys.executable, "-m", "shared_utils.streams.shm"]
    listed = subprocess.run([*cli, "list"], capture_output=True, text=True, check=True, timeout=60)
    ring = json.loads(listed.stdout)
    assert (ring["name"], ring["writer_pid"], ring["writer_alive"]) == ("crash", w.pid, False)
    swept = subprocess.run([*cli, "sweep"], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(swept.stdout)["written"] == 50
    assert "removed 1 stale ring(s)" in swept.stderr
    assert leftovers(shm_session) == []
    assert sweep_stale() == []
    w2 = children("writer", "--name", "crash", "--chunks", "5", "--hold")
    assert w2.line().startswith("ready")
    w2.kill()
    with ShmWriter("crash", 8, 10000, "int32", lsl="off"), ShmReader("crash") as r:
        assert r.writer_pid == os.getpid()  # the stale ring was replaced by ours
    assert leftovers(shm_session) == []


def test_missing_or_foreign_ring_names_the_problem(shm_session: str) -> None:
    with ShmWriter("present", 2, 100, lsl="off"):
        with pytest.raises(RingNotFoundError, match=r"'absent'.*rings here: present"):
            ShmReader("absent")
    seg = f"clmesh.{shm_session}.garbage"
    os.close(_os.create_segment(seg, 8192))  # someone else's file under our naming scheme
    try:
        with pytest.raises(ShmError, match="is not a usable ring: .*bad magic"):
            ShmReader("garbage")
    finally:
        _os.unlink_segment(seg)


def test_clean_close_is_seen_by_attached_readers_at_once(shm_session: str) -> None:
    w = ShmWriter("bye", 2, 1000, lsl="off")
    r = ShmReader("bye")
    w.push_chunk(np.zeros((5, 2), np.int16))
    w.close()
    assert leftovers(shm_session) == []  # the name is gone; the mapping still reads
    assert r.pop_new()[0].shape == (5, 2)
    assert not r.wait(5.0)
    assert r.writer_state() == "closed"
    r.close()
    r.close()
