"""The LSL stream a ring writer announces for other hosts: the full-or-decimated rule, the data
and timestamps it carries, and the ``desc/shm`` block that lets a same-host consumer switch to the
ring. Real liblsl on the loopback-only config (conftest)."""

from __future__ import annotations

import numpy as np
import pylsl
import pytest
from helpers import open_inlet
from shm_helpers import shm_session_fixture  # noqa: F401

from shared_utils.streams.shm import ShmReader, ShmWriter
from shared_utils.streams.shm.announce import _Decimator, lsl_plan, ring_for_lsl, shm_desc


@pytest.mark.parametrize(
    ("channels", "srate", "itemsize", "mode", "factor", "lsl_srate"),
    [
        (384, 30000, 2, "full", 1, 30000),  # one Neuropixels probe: 23 MB/s fits the budget
        (1024, 30000, 2, "decimated", 2, 15000),  # 61 MB/s: halved
        (1024, 30000, 4, "decimated", 4, 7500),  # 123 MB/s: a divisor of the rate
        (64, 1000, 4, "full", 1, 1000),
    ],
)
def test_full_or_decimated_rule(channels, srate, itemsize, mode, factor, lsl_srate) -> None:
    plan = lsl_plan(channels, srate, itemsize)
    assert (plan["mode"], plan["factor"], plan["srate"]) == (mode, factor, lsl_srate)
    assert plan["bytes_s"] <= 32e6


def test_decimator_averages_blocks_across_chunk_edges() -> None:
    dec = _Decimator(4, 2, np.dtype("int16"))
    x = (np.arange(10, dtype=np.int16) * 2).repeat(2).reshape(10, 2)
    t = np.arange(10, dtype=np.float64)
    y1, t1 = dec.push(x[:6], t[:6])  # one block of 4, two rows carried
    y2, t2 = dec.push(x[6:], t[6:])  # carried 2 + 4 new = one more block, 2 carried again
    assert y1[:, 0].tolist() == [3]
    assert y2[:, 0].tolist() == [11]
    assert t1.tolist() == [1.5]
    assert t2.tolist() == [5.5]
    assert dec.push(x[:1], t[:1]) is None


def _inlet(name: str) -> pylsl.StreamInlet:
    return open_inlet(name, timeout=10, max_buflen=2)


def _pull(inlet: pylsl.StreamInlet, n: int, ch: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.empty((n, ch), dtype=np.int16)
    ts = np.empty(n)
    got = 0
    for _ in range(200):
        if got >= n:
            break
        d, t = inlet.pull_chunk(timeout=0.5, max_samples=n - got, dest_obj=out[got:], as_numpy=True)
        ts[got : got + len(t)] = t
        got += len(t)
    assert got == n, f"LSL delivered {got} of {n} samples"
    return out, ts


def test_full_announcement_carries_the_ring_and_points_at_it(
    shm_session: str, lsl_name: str
) -> None:
    with ShmWriter(lsl_name, 16, 1000, "int16", stream_type="ExtracellularEphys") as w:
        inlet = _inlet(lsl_name)
        info = inlet.info(timeout=10)
        assert (info.type(), info.channel_count(), info.nominal_srate()) == (
            "ExtracellularEphys", 16, 1000.0,
        )  # fmt: skip
        desc = shm_desc(info)
        assert desc["segment"] == w.segment
        assert desc["lsl_mode"] == "full"
        assert ring_for_lsl(info) == desc  # same host and boot, same ring: read it instead
        x = np.arange(16 * 200, dtype=np.int16).reshape(200, 16)
        ts = 100.0 + np.arange(200) / 1000
        with ShmReader(desc["name"], session=desc["session"], start="oldest") as r:
            for k in range(0, 200, 20):
                w.push_chunk(x[k : k + 20], ts[k : k + 20])
            ring, ring_ts = r.pop_new()
        got, got_ts = _pull(inlet, 200, 16)
        assert np.array_equal(got, x)
        assert np.array_equal(ring, x)
        np.testing.assert_allclose(got_ts, ts, atol=1e-9)  # the same LSL-clock stamps both ways
        np.testing.assert_array_equal(ring_ts, ts)
        inlet.close_stream()
    assert ring_for_lsl(info) is None  # the ring is gone: keep using LSL


def test_decimated_announcement_sends_block_means(shm_session: str, lsl_name: str) -> None:
    with ShmWriter(lsl_name, 4, 1000, "int16", lsl="decimated") as w:
        assert w.announcer.plan["factor"] == 2
        inlet = _inlet(lsl_name)
        assert inlet.info(timeout=10).nominal_srate() == 500.0
        x = (np.arange(100, dtype=np.int16) * 2).repeat(4).reshape(100, 4)
        for k in range(0, 100, 10):
            w.push_chunk(x[k : k + 10], 10.0 + (k + 9) / 1000)
        got, got_ts = _pull(inlet, 50, 4)
        assert got[:, 0].tolist() == [4 * i + 1 for i in range(50)]  # mean of 4i and 4i+2
        np.testing.assert_allclose(np.diff(got_ts), 0.002, atol=1e-9)
        inlet.close_stream()
