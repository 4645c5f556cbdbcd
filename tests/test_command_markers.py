"""Command markers sent before anyone listens still reach the first consumer (the recorder)."""

from __future__ import annotations

import json
import time

import pylsl

from control_room.events import CommandMarkers


def test_markers_pushed_before_a_consumer_arrive_with_original_timestamps(lsl_name: str) -> None:
    """The first commands of a session (recorder START) are replayed once an inlet connects."""
    markers = CommandMarkers(lsl_name)
    try:
        ts1 = markers.push({"module": "recorder", "cmd": "START"})
        ts2 = markers.push({"module": "mockup_streamer", "cmd": "START"})
        info = pylsl.resolve_byprop("name", lsl_name, minimum=1, timeout=5.0)[0]
        inlet = pylsl.StreamInlet(info)
        inlet.open_stream(timeout=5.0)
        got: list[tuple[dict, float]] = []
        deadline = time.monotonic() + 10.0
        while len(got) < 3 and time.monotonic() < deadline:
            sample, ts = inlet.pull_sample(timeout=0.2)
            if sample is not None:
                got.append((json.loads(sample[0]), ts))
            if len(got) == 2:
                markers.push({"module": "decoder", "cmd": "FIT"})  # live ones keep flowing
        assert [g[0]["cmd"] for g in got] == ["START", "START", "FIT"]
        assert got[0][0]["module"] == "recorder"
        assert abs(got[0][1] - ts1) < 1e-6
        assert abs(got[1][1] - ts2) < 1e-6
        assert markers.replayed == 2
        inlet.close_stream()
    finally:
        markers.close()
