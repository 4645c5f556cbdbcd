"""The shared-memory ring between real processes: exact delivery, torn-copy detection, exact loss
counts, windows and several readers. Bad input and crashes are in test_shm_faults.py."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from shm_helpers import children_fixture, shm_session_fixture  # noqa: F401

from shared_utils.streams.shm import ShmReader, ShmWriter, list_rings


def rows_ok(data: np.ndarray, ts: np.ndarray | None = None, srate: float = 0.0) -> np.ndarray:
    """Sample numbers of rows written by shm_procs.chunk, asserting no row is torn."""
    idx = data[:, 0]
    assert (data == idx[:, None]).all(), "a row mixes samples (torn copy delivered)"
    if ts is not None:
        np.testing.assert_allclose(ts, idx / srate, rtol=0, atol=1e-9)
    return idx


def pull_all(r: ShmReader, total: int, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Pull until the reader's position reaches ``total``; returns (rows, timestamps) got."""
    buf = np.empty((rows, r.channels), dtype=r.dtype)
    tbuf = np.empty(rows)
    out, tout = [], []
    while r.position < total:
        n = r.pull_into(buf, tbuf, timeout_s=1.0)
        if n == 0:
            assert r.writer_state() in ("alive", "closed"), r.writer_problem
            continue
        out.append(buf[:n].copy())
        tout.append(tbuf[:n].copy())
    return np.concatenate(out), np.concatenate(tout)


def test_paced_stream_reaches_another_process_complete_in_order(children) -> None:
    w = children(
        "writer", "--name", "paced", "--ch", "64", "--srate", "30000", "--chunk", "30",
        "--chunks", "400", "--paced",
    )  # fmt: skip
    assert w.line().startswith("ready")
    with ShmReader("paced", start="oldest") as r:
        assert (r.channels, r.srate, r.dtype.name, r.capacity) == (64, 30000.0, "int32", 30000)
        w.send()
        data, ts = pull_all(r, 12000)
        assert r.lost_samples == 0
        assert np.array_equal(rows_ok(data), np.arange(12000))
        # Stamped on the LSL clock at each push (newest sample), earlier rows 1/srate apart.
        assert np.median(np.diff(ts)) == pytest.approx(1 / 30000)
        assert ts[-1] <= time.clock_gettime(time.CLOCK_MONOTONIC)
        assert w.line() == "done 12000"
        w.send()  # let the writer close
        assert w.proc.wait(30) == 0
        assert r.writer_state() == "closed"
        assert not r.wait(0.5)


def test_flooding_writer_never_hands_a_torn_row_and_counts_every_lost_sample(children) -> None:
    total = 2000 * 1000
    w = children(
        "writer", "--name", "flood", "--ch", "64", "--srate", "100000", "--chunk", "1000",
        "--chunks", "2000", "--capacity-s", "0.1", "--hold",
    )  # fmt: skip
    assert w.line().startswith("ready")
    with ShmReader("flood", start="oldest") as r:
        w.send()
        data, ts = pull_all(r, total, rows=8192)
        idx = rows_ok(data, ts, 100000.0)
        assert np.all(np.diff(idx) > 0)
        skipped = int(idx[0]) + int(np.sum(np.diff(idx) - 1)) + (total - 1 - int(idx[-1]))
        assert r.lost_samples == skipped
        assert len(idx) + r.lost_samples == total
        assert r.loss_events >= 1  # a 0.1 s ring cannot keep up with a flood: it was lapped
        assert w.line() == f"done {total}"
        w.send()
        assert w.proc.wait(30) == 0


def test_rows_overwritten_during_the_copy_are_dropped_and_counted(shm_session: str) -> None:
    """The seqlock check, made deterministic: the writer laps the reader in mid-copy."""
    with ShmWriter("lap", 4, 1000, "int32", capacity_s=0.1, lsl="off") as w:
        rows = lambda k0, n: np.repeat(np.arange(k0, k0 + n, dtype=np.int32)[:, None], 4, 1)  # noqa: E731
        w.push_chunk(rows(0, 50))
        r = ShmReader("lap", start="oldest")
        copy = r._copy

        def copy_while_lapped(lo, n, out, tout):  # the writer overwrites rows 0..29 meanwhile
            w.push_chunk(rows(50, 50))
            w.push_chunk(rows(100, 30))
            copy(lo, n, out, tout)

        r._copy = copy_while_lapped
        buf = np.empty((100, 4), np.int32)
        n = r.pull_into(buf)
        assert (n, r.lost_samples, r.position) == (20, 30, 50)
        assert np.array_equal(rows_ok(buf[:n]), np.arange(30, 50))
        r._copy = copy
        n = r.pull_into(buf)
        assert np.array_equal(rows_ok(buf[:n]), np.arange(50, 130))
        r.close()


def test_a_reader_lapped_while_away_is_told_exactly_what_it_lost(shm_session: str) -> None:
    with ShmWriter("away", 2, 1000, "int32", capacity_s=0.2, lsl="off") as w:
        r = ShmReader("away")
        for k in range(0, 1000, 10):
            w.push_chunk(np.full((10, 2), k, np.int32))
        data, _ = r.pop_new()
        assert r.lost_samples == 800
        assert r.last_loss["lost"] == 800
        assert len(data) == 200
        assert data[0, 0] == 800
        assert r.stats()["gap_samples_est"] == 800
        assert r.n_new == 0
        r.close()


def test_zero_copy_views_advance_split_at_the_wrap_and_report_overwrites(shm_session) -> None:
    with ShmWriter("view", 2, 1000, "int32", capacity_s=0.1, lsl="off") as w:
        r = ShmReader("view", start="oldest")
        for k in range(0, 90, 30):
            w.push_chunk(np.repeat(np.arange(k, k + 30, dtype=np.int32)[:, None], 2, 1))
        d, t, first = r.pull_view(50)
        assert (first, len(d), r.position) == (0, 50, 50)
        assert not d.flags.writeable
        assert np.shares_memory(d, r.window(samples=90)[0])  # no copy: the ring itself
        assert r.check_view(first, 50) == 0  # nothing overwritten while we looked
        w.push_chunk(np.repeat(np.arange(90, 120, dtype=np.int32)[:, None], 2, 1))
        d, _, first = r.pull_view()  # 50..99 up to the ring's end; the wrapped rest next
        assert (first, d[0, 0], d[-1, 0]) == (50, 50, 99)
        for k in range(120, 180, 30):  # the writer laps the view we still hold
            w.push_chunk(np.repeat(np.arange(k, k + 30, dtype=np.int32)[:, None], 2, 1))
        assert r.check_view(first, len(d)) == 30  # rows 50..79 were claimed meanwhile
        assert r.lost_samples == 30
        d, _, first = r.pull_view()
        assert (first, d[0, 0]) == (100, 100)
        r.close()


def test_windows_are_read_only_views_unless_they_wrap(shm_session: str) -> None:
    with ShmWriter("win", 3, 100, "float32", capacity_s=1.0, lsl="off") as w:
        r = ShmReader("win")
        assert r.window(seconds=1.0)[0].shape == (0, 3)
        for k in (0, 30):
            x = np.arange(k, k + 30, dtype=np.float32).repeat(3).reshape(30, 3)
            w.push_chunk(x, np.arange(k, k + 30) / 100)
        d, t = r.window(seconds=0.2)
        assert d.shape == (20, 3)
        assert d[0, 0] == 40
        assert t[-1] == pytest.approx(0.59)
        assert not d.flags.writeable
        for k in (60, 85):
            w.push_chunk(
                np.arange(k, k + 25, dtype=np.float32).repeat(3).reshape(25, 3), (k + 24) / 100
            )
        d, t = r.window()  # 100 newest rows wrap around the ring's end: a checked copy
        assert d.shape == (100, 3)
        assert np.array_equal(d[:, 0], np.arange(10, 110))
        assert d.flags.writeable
        assert np.all(np.diff(t) > 0)
        assert r.window(samples=5, copy=True)[0].flags.owndata
        assert r.fill == 100
        assert r.total == 110
        r.close()


def test_several_reader_processes_each_get_everything_and_leave_the_ring(children) -> None:
    with ShmWriter("multi", 8, 10000, "int32", lsl="off") as w:
        readers = [children("reader", "--name", "multi", "--samples", "5000") for _ in range(2)]
        for c in readers:
            assert c.line() == "ready"
        assert {x["pid"] for x in w.readers()} == {c.pid for c in readers}
        for k in range(0, 5000, 50):
            w.push_chunk(np.repeat(np.arange(k, k + 50, dtype=np.int32)[:, None], 8, 1))
        for c in readers:
            assert json.loads(c.line()) == {"position": 5000, "got": 5000}
            assert c.proc.wait(30) == 0
        # Readers exiting (Python 3.11 attaches register with a resource tracker that would
        # unlink the producer's name) leave the ring in place: a new reader still attaches.
        assert [x["name"] for x in list_rings()] == ["multi"]
        assert w.readers() == []
        with ShmReader("multi", start="oldest") as r:
            assert r.n_new == 5000
            assert r.ch_names == [f"ch{i}" for i in range(1, 9)]
