"""Stream watcher service as a real subprocess, fed by real LSL outlets in this process."""

from __future__ import annotations

import threading

import numpy as np
import pylsl
import pytest
from helpers import poll_until

from shared_utils.client import ModuleClient
from shared_utils.errors import CommandFailed

MODULE = "services.stream_watcher"


class CounterSource:
    """An outlet pushing a sample counter in channel 0 from a thread, on a fixed schedule."""

    def __init__(self, name: str, n_ch: int = 3, srate: float = 200.0, chunk: int = 10) -> None:
        info = pylsl.StreamInfo(name, "EEG", n_ch, srate, pylsl.cf_float32, f"{name}-src")
        info.set_channel_labels([f"c{i}" for i in range(n_ch)])
        self.name, self.n_ch, self.srate, self.chunk = name, n_ch, srate, chunk
        self.outlet: pylsl.StreamOutlet | None = pylsl.StreamOutlet(info)
        self.k = 0
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        t0 = pylsl.local_clock()
        while not self._stop.is_set():
            due = int((pylsl.local_clock() - t0) * self.srate)
            while due - self.k >= self.chunk and self.outlet is not None:
                n = self.chunk
                x = np.repeat(
                    np.arange(self.k, self.k + n, dtype=np.float32)[:, None], self.n_ch, 1
                )
                if not self.paused.is_set():
                    self.outlet.push_chunk(x, t0 + (self.k + n - 1) / self.srate)
                self.k += n
            self._stop.wait(self.chunk / self.srate / 2)

    def close(self) -> None:
        self._stop.set()
        self._t.join()
        self.outlet = None


@pytest.fixture
def watcher(module_process):
    _, port = module_process(MODULE, "--stall-after-s", "1.0")
    with ModuleClient("127.0.0.1", port, timeout=15) as c:
        yield c


@pytest.fixture
def source(lsl_name):
    src = CounterSource(lsl_name)
    yield src
    src.close()


def test_list_watch_stats_window(watcher, source, lsl_name):
    listed: dict = {}

    def visible() -> bool:
        listed.update({s["name"]: s for s in watcher.send("LIST", wait_s=1.0)["streams"]})
        return lsl_name in listed

    assert poll_until(visible, 10)
    meta = listed[lsl_name]
    assert (meta["type"], meta["channels"], meta["srate"], meta["format"]) == (
        "EEG",
        3,
        200.0,
        "float32",
    )
    assert meta["watched"] is False
    res = watcher.send("WATCH", stream=lsl_name, buffer_s=5.0)
    assert res["channel_names"] == ["c0", "c1", "c2"]
    assert watcher.send("WATCH", stream=lsl_name)["already_watching"] is True
    assert poll_until(lambda: watcher.send("STATS", stream=lsl_name)["samples"] >= 300, 15)
    st = watcher.send("STATS", stream=lsl_name)
    for key in ("effective_srate", "nominal_srate", "samples", "gaps", "lag_s", "last_timestamp"):
        assert key in st
    assert "clock_offset" in st
    assert st["nominal_srate"] == 200.0
    assert st["effective_srate"] == pytest.approx(200.0, rel=0.01)
    assert st["gaps"] == 0
    # A loaded machine can starve the source for a moment: health may flip, then recover.
    assert poll_until(lambda: watcher.send("STATS", stream=lsl_name)["health"] == "ok", 10)
    assert 0 <= st["lag_s"] < 5
    win = watcher.send("GET_WINDOW", stream=lsl_name, seconds=0.5)
    assert win["n"] == 100
    assert win["channel_names"] == ["c0", "c1", "c2"]
    counter = np.array(win["data"])[:, 0]
    assert np.array_equal(np.diff(counter), np.ones(99)), "window not contiguous"
    assert np.allclose(np.diff(win["timestamps"]), 1 / 200, atol=1e-6)
    everything = watcher.send("STATS")["streams"]
    assert lsl_name in everything


def test_bad_requests_name_the_field_or_the_streams(watcher, source, lsl_name):
    with pytest.raises(CommandFailed) as ei:
        watcher.send("WATCH", stream=lsl_name + "_nope", timeout_s=1.0)
    assert lsl_name + "_nope" in ei.value.error
    assert lsl_name in ei.value.error  # the visible stream is listed
    with pytest.raises(CommandFailed, match="'stream'"):
        watcher.send("WATCH", stream=12)
    with pytest.raises(CommandFailed, match="'seconds'"):
        watcher.send("GET_WINDOW", stream=lsl_name, seconds="1")
    with pytest.raises(CommandFailed, match="not watched"):
        watcher.send("STATS", stream=lsl_name)
    watcher.send("WATCH", stream=lsl_name)
    with pytest.raises(
        CommandFailed, match=r"seconds: 0 is out of range; use 0 < seconds <= 3600 s"
    ):
        watcher.send("GET_WINDOW", stream=lsl_name, seconds=0)
    with pytest.raises(CommandFailed, match="max_values") as ei:
        watcher.send("GET_WINDOW", stream=lsl_name, seconds=10.0, max_values=300)
    assert "over the reply cap of 300" in ei.value.error
    assert watcher.send("UNWATCH", stream=lsl_name)["unwatched"] == [lsl_name]
    with pytest.raises(CommandFailed, match="not watched"):
        watcher.send("UNWATCH", stream=lsl_name)


def test_stall_vanish_and_reattach(watcher, source, lsl_name):
    watcher.send("WATCH", stream=lsl_name)

    def health() -> str:
        return watcher.send("STATUS")["watching"][lsl_name]["health"]

    def events() -> list[str]:
        return [e["event"] for e in watcher.send("STATUS")["events"] if e["stream"] == lsl_name]

    assert poll_until(lambda: watcher.send("STATS", stream=lsl_name)["samples"] > 50, 10)
    source.paused.set()
    assert poll_until(lambda: health() == "stalled", 10)
    source.paused.clear()
    assert poll_until(lambda: health() == "ok", 10)
    assert "resumed" in events()
    before = watcher.send("STATS", stream=lsl_name)["samples"]
    source.close()  # the outlet disappears
    assert poll_until(lambda: health() == "vanished", 15)
    assert "vanished" in events()
    again = CounterSource(lsl_name)  # same name, a new outlet
    try:
        assert poll_until(lambda: health() == "ok", 20)
        assert "reattached" in events()
        assert poll_until(
            lambda: watcher.send("STATS", stream=lsl_name)["samples"] > before + 50, 10
        )
        assert watcher.send("STATS", stream=lsl_name)["connected"] is True
    finally:
        again.close()


def test_watch_option_attaches_when_the_stream_appears(module_process, lsl_name):
    _, port = module_process(MODULE, "--watch", lsl_name, "--buffer-s", "2")
    with ModuleClient("127.0.0.1", port, timeout=15) as c:
        assert lsl_name not in c.send("STATUS")["watching"]
        src = CounterSource(lsl_name)
        try:
            assert poll_until(lambda: lsl_name in c.send("STATUS")["watching"], 15)
            assert poll_until(lambda: c.send("STATS", stream=lsl_name)["samples"] > 20, 10)
            assert c.send("STATS", stream=lsl_name)["fill"] <= 400  # 2 s at 200 Hz
        finally:
            src.close()
