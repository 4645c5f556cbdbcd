"""Two sources of one stream name (two rigs on one network): the recorder, ``resolve`` and the
stream watcher refuse to guess, and take the one named by host or source_id.

Real LSL on loopback. Here both "rigs" are this machine, so they differ by source_id; across
hosts (tests/test_multihost.py) they differ by hostname, which the same rule covers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf
from helpers import wait_for

from services.recorder.core import Recorder
from services.stream_watcher.core import WatchService
from shared_utils.errors import CommandError
from shared_utils.streams.lsl import AmbiguousStreamError, resolve


class Rig:
    """An EEG outlet with a source_id, pushing a constant (its rig number) until closed."""

    def __init__(self, name: str, source_id: str, value: float) -> None:
        info = pylsl.StreamInfo(name, "EEG", 2, 200, pylsl.cf_float32, source_id)
        self.outlet = pylsl.StreamOutlet(info)
        self.value = value
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._push, daemon=True)
        self._thread.start()

    def _push(self) -> None:
        block = np.full((10, 2), self.value, dtype=np.float32)
        while not self._stop.wait(0.05):
            self.outlet.push_chunk(block)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        del self.outlet


@pytest.fixture
def rigs(lsl_name: str) -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for r in made:
        r.close()


def sources(rec: Recorder, name: str) -> set[str]:
    return {s["source_id"] for s in rec.list_streams() if s["name"] == name}


def test_recorder_refuses_a_shared_name_and_records_the_named_source(
    tmp_path: Path, lsl_name: str, rigs: list[Rig]
) -> None:
    rigs += [Rig(lsl_name, "rig1-amp", 1.0), Rig(lsl_name, "rig2-amp", 2.0)]
    rec = Recorder(data_dir=tmp_path)
    try:
        wait_for(lambda: sources(rec, lsl_name) == {"rig1-amp", "rig2-amp"}, "both rigs")
        with pytest.raises(CommandError) as refused:
            rec.start("bare.xdf", streams=[lsl_name])
        assert "published by 2 sources" in str(refused.value)
        assert "source_id 'rig1-amp'" in str(refused.value)
        assert "source_id 'rig2-amp'" in str(refused.value)
        assert not (tmp_path / "bare.xdf").exists()
        with pytest.raises(CommandError, match="keys are name, host, source_id"):
            rec.start("bad.xdf", streams=[{"name": lsl_name, "rig": 2}])
        res = rec.start("rig2.xdf", streams=[{"name": lsl_name, "source_id": "rig2-amp"}])
        wait_for(lambda: rec.status()["counts"].get(lsl_name, 0) > 100, "rig2 samples")
        st = rec.stop()
    finally:
        rec.close()
    assert [s["source_id"] for s in st["streams"]] == ["rig2-amp"]
    streams, _ = pyxdf.load_xdf(res["file"])
    assert [s["info"]["source_id"][0] for s in streams] == ["rig2-amp"]
    assert set(np.unique(streams[0]["time_series"])) == {2.0}  # not one sample of rig 1


def test_all_takes_every_source_of_a_name(tmp_path: Path, lsl_name: str, rigs: list[Rig]) -> None:
    rigs += [Rig(lsl_name, "rig1-amp", 1.0), Rig(lsl_name, "rig2-amp", 2.0)]
    rec = Recorder(data_dir=tmp_path)
    try:
        wait_for(lambda: len(sources(rec, lsl_name)) == 2, "both rigs")
        rec.start("both.xdf", streams=[{"name": lsl_name, "all": True}])
        wait_for(lambda: len(rec.status()["counts"]) == 2, "both recorded")
        st = rec.stop()
    finally:
        rec.close()
    assert sorted(s["source_id"] for s in st["streams"]) == ["rig1-amp", "rig2-amp"]


def test_a_second_source_appearing_later_is_reported_not_recorded(
    tmp_path: Path, lsl_name: str, rigs: list[Rig]
) -> None:
    rigs.append(Rig(lsl_name, "rig1-amp", 1.0))
    rec = Recorder(data_dir=tmp_path)
    try:
        wait_for(lambda: sources(rec, lsl_name) == {"rig1-amp"}, "rig 1")
        res = rec.start("late.xdf", streams=[lsl_name])
        rigs.append(Rig(lsl_name, "rig2-amp", 2.0))
        st = wait_for(lambda: (s := rec.status())["conflicts"] and s, "the conflict reported")
        wait_for(lambda: rec.status()["counts"].get(lsl_name, 0) > 50, "rig 1 samples")
        rec.stop()
    finally:
        rec.close()
    (conflict,) = st["conflicts"]
    assert conflict["recorded"]["source_id"] == "rig1-amp"
    assert conflict["ignored"]["source_id"] == "rig2-amp"
    streams, _ = pyxdf.load_xdf(res["file"])
    assert [s["info"]["source_id"][0] for s in streams] == ["rig1-amp"]


def test_resolve_reports_or_refuses_ambiguity_and_narrows_by_source(
    lsl_name: str, rigs: list[Rig]
) -> None:
    rigs += [Rig(lsl_name, "rig1-amp", 1.0), Rig(lsl_name, "rig2-amp", 2.0)]
    wait_for(
        lambda: len(pylsl.resolve_byprop("name", lsl_name, 2, 1.0)) == 2, "both rigs", timeout=10
    )
    with pytest.raises(AmbiguousStreamError) as info:
        resolve(lsl_name, unique=True)
    assert [sid for _, sid in info.value.sources] == ["rig1-amp", "rig2-amp"]
    assert resolve(lsl_name, source_id="rig1-amp", unique=True).source_id() == "rig1-amp"
    assert resolve(lsl_name).source_id() == "rig2-amp"  # as before: the newest, with a warning


def test_the_stream_watcher_asks_which_source(lsl_name: str, rigs: list[Rig]) -> None:
    rigs += [Rig(lsl_name, "rig1-amp", 1.0), Rig(lsl_name, "rig2-amp", 2.0)]
    svc = WatchService(forget_after_s=5.0)
    try:
        wait_for(
            lambda: len([i for i in svc._resolver.results() if i.name() == lsl_name]) == 2, "both"
        )
        with pytest.raises(CommandError, match="published by 2 sources"):
            svc.watch(lsl_name)
        svc.watch(lsl_name, source_id="rig1-amp")
        w = svc.watchers[lsl_name]
        wait_for(lambda: w.total > 20, "rig 1 samples")
        data, _ = w.window(seconds=0.1, copy=True)
        assert set(np.unique(data)) == {1.0}
    finally:
        svc.close()
