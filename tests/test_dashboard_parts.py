"""The dashboard's parts without a browser: column decimation, event queues, access rules,
trials for the page."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from control_room.report.analysis import trials_from_markers
from control_room.web.auth import Guard
from control_room.web.hub import MAX_PLOT_FRAMES, MAX_QUEUED, Client, encode
from control_room.web.plot import ColumnDecimator, pack
from control_room.web.trials import trial_dict


def brute(data: np.ndarray, ts: np.ndarray, dt: float) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    cols = np.floor(ts / dt).astype(int)
    return {c: (data[cols == c].min(0), data[cols == c].max(0)) for c in np.unique(cols)}


def test_decimator_gives_min_and_max_of_each_completed_column() -> None:
    rng = np.random.default_rng(3)
    ts = 100.0 + np.arange(5000) / 1000.0
    data = rng.normal(size=(5000, 8)).astype(np.float32)
    data[1234, 5] = 50.0  # a spike must survive
    dec = ColumnDecimator(dt=0.01)
    got: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for lo in range(0, 5000, 37):  # uneven chunks, columns straddling them
        cols, mins, maxs = dec.add(data[lo : lo + 37], ts[lo : lo + 37])
        for c, a, b in zip(cols, mins, maxs, strict=True):
            assert c not in got
            got[int(c)] = (a, b)
    want = brute(data, ts, 0.01)
    last = max(want)
    assert set(got) == set(want) - {last}  # the last column is still filling
    for c, (a, b) in got.items():
        np.testing.assert_array_equal(a, want[c][0])
        np.testing.assert_array_equal(b, want[c][1])
    assert max(b[5] for _, b in got.values()) == 50.0


def test_decimator_survives_timestamps_that_go_back() -> None:
    dec = ColumnDecimator(dt=0.1)
    cols, _, _ = dec.add(np.ones((3, 1)), np.array([1.0, 1.05, 1.12]))
    assert list(cols) == [10]
    cols, _, maxs = dec.add(np.array([[5.0], [1.0]]), np.array([1.11, 1.31]))  # 1.11 < 1.12
    assert list(cols) == [11]
    assert maxs[0, 0] == 5.0


def test_pack_is_little_endian_float32_base64() -> None:
    a = np.array([[1.5, -2.0], [3.25, np.nan]], dtype=np.float64)
    back = np.frombuffer(base64.b64decode(pack(a)), dtype="<f4").reshape(2, 2)
    np.testing.assert_array_equal(back[0], [1.5, -2.0])
    assert np.isnan(back[1, 1])


def test_a_slow_page_drops_old_plot_frames_but_no_event() -> None:
    async def run() -> None:
        c = Client("p1")
        c.put(encode("status", {"n": 0}))
        for i in range(MAX_PLOT_FRAMES + 5):
            c.put(encode("plot", {"i": i}), plot="k")
        c.put(encode("status", {"n": 1}))
        kinds = [m.split(b"\n", 1)[0] for _, m in c.queue]
        assert kinds.count(b"event: status") == 2
        assert kinds.count(b"event: plot") == MAX_PLOT_FRAMES
        assert b'"i":5' in [m for k, m in c.queue if k == "k"][0]  # the oldest went first

    asyncio.run(run())


def test_a_page_too_far_behind_is_cut_off_to_resync() -> None:
    async def run() -> None:
        c = Client("p1")
        for i in range(MAX_QUEUED + 1):
            c.put(encode("log", {"i": i}))
        assert c.closed

    asyncio.run(run())


@pytest.mark.parametrize(
    ("host", "ok"),
    [("127.0.0.1:9030", True), ("localhost:9030", True), ("[::1]:9030", True),
     ("evil.example:9030", False), (None, False)],
)  # fmt: skip
def test_without_a_token_only_loopback_names_pass(host: str | None, ok: bool) -> None:
    assert Guard(None).host_ok(host) is ok
    assert Guard("t").host_ok(host) is True  # the token protects instead


def test_the_session_cookie_is_not_the_token() -> None:
    g = Guard("s3cret")
    assert g.session
    assert "s3cret" not in g.session
    assert g.authenticated({}, {"mesh_dashboard": g.session})
    assert not g.authenticated({}, {"mesh_dashboard": "s3cret"})
    assert g.authenticated({"authorization": "Bearer s3cret"}, {})
    assert not g.authenticated({}, {})


def test_trials_for_the_page_say_which_branch_was_taken() -> None:
    marks = ["trial_start:1", "state:Wait", "event:SoftCode1", "state:Reward", "state:ITI",
             "trial_end:1", "trial_start:2", "state:Wait", "state:ITI", "trial_error:2"]  # fmt: skip
    ts = [0.0, 0.0, 0.4, 0.4, 0.6, 1.1, 2.0, 2.0, 8.0, 8.5]
    t1, t2 = (trial_dict(t) for t in trials_from_markers(ts, marks, None))
    assert t1["outcome"] == "Reward"
    assert [s[0] for s in t1["states"]] == ["Wait", "Reward", "ITI"]
    assert t1["duration_s"] == pytest.approx(1.1)
    assert t1["events"] == [["SoftCode1", 0.4]]
    assert t2["outcome"] == "error"
    assert t2["error"]
