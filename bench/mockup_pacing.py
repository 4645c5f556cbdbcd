"""Mockup streamer pacing: does the sample count follow rate x time, without drift?

Target (issue 3): the count matches ``srate x elapsed`` within 0.1 % over 10 minutes, no drift.
Two arms run at the same time for ``--seconds`` (default 60; use 600 for the full target):

- ours: the real ``services.mockup_streamer`` process, START over TCP, read by a real LSL inlet;
- naive: the loop Dareplane-style modules use, ``push_chunk`` then ``sleep_s(chunk / srate)``,
  which adds every wake-up delay to the period and so runs slow.

For each arm the consumer counts received samples against the LSL clock since the first one;
the error is ``received / (srate x elapsed) - 1`` at the end, and the drift is the slope of the
deficit ``srate x elapsed - received`` (in samples per minute): a paced source keeps the deficit
below one chunk, a drifting one grows it without bound. Ends with one JSON line.

    .venv/bin/python bench/mockup_pacing.py [--seconds 600]
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import click
from _common import ROOT, free_port, loopback_env

loopback_env()

import numpy as np  # noqa: E402
import pylsl  # noqa: E402

SRATE, CHANNELS, CHUNK = 500.0, 8, 10


def _send(port: int, line: str) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(line.encode() + b"\n")
        return json.loads(s.makefile().readline())


def _naive_streamer(name: str, stop: threading.Event) -> None:
    """Dareplane-style pacing: sleep one chunk period after every push."""
    from dareplane_utils.general.time import sleep_s

    info = pylsl.StreamInfo(name, "EEG", CHANNELS, SRATE, pylsl.cf_float32, name)
    outlet = pylsl.StreamOutlet(info)
    data = np.zeros((CHUNK, CHANNELS), dtype=np.float32)
    while not stop.is_set():
        outlet.push_chunk(data)
        sleep_s(CHUNK / SRATE)


def _count(name: str, seconds: float, out: dict) -> None:
    """Receive the stream; sample the error (received vs expected) once per second."""
    info = pylsl.resolve_byprop("name", name, minimum=1, timeout=10.0)[0]
    inlet = pylsl.StreamInlet(info, max_buflen=10)
    inlet.open_stream(timeout=10.0)
    buf = np.empty((4096, CHANNELS), dtype=np.float32)
    received, t_first, trace = 0, None, []
    t_end = time.monotonic() + seconds
    next_probe = time.monotonic() + 1.0
    while time.monotonic() < t_end:
        _, ts = inlet.pull_chunk(timeout=0.2, max_samples=4096, dest_obj=buf)
        if ts:
            if t_first is None:
                t_first = pylsl.local_clock() - len(ts) / SRATE
            received += len(ts)
        if t_first is not None and time.monotonic() >= next_probe:
            elapsed = pylsl.local_clock() - t_first
            trace.append((elapsed, SRATE * elapsed - received))  # deficit in samples
            next_probe += 1.0
    inlet.close_stream()
    elapsed = pylsl.local_clock() - (t_first or pylsl.local_clock())
    deficit = np.array(trace[len(trace) // 4 :])  # after the first quarter: start-up transients
    drift = float(np.polyfit(deficit[:, 0], deficit[:, 1], 1)[0]) if len(deficit) > 2 else 0.0
    out.update(
        received=received,
        expected=round(SRATE * elapsed, 1),
        error_pct=round(100 * (received / (SRATE * elapsed) - 1.0), 4),
        max_deficit_samples=round(float(np.max(np.abs(deficit[:, 1]))), 1)
        if len(deficit)
        else None,
        drift_samples_per_min=round(drift * 60, 2),
    )


@click.command()
@click.option("--seconds", default=60.0, show_default=True, help="Length of the run.")
def main(seconds: float) -> None:
    """Run both arms side by side and print figures plus one JSON line."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.mockup_streamer", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    stop = threading.Event()
    ours: dict = {}
    naive: dict = {}
    try:
        for _ in range(200):
            try:
                if _send(port, "UP").get("ok"):
                    break
            except OSError:
                time.sleep(0.05)
        tag = f"pacing_{os.getpid()}"
        _send(
            port,
            f'START|{{"stream": "{tag}_ours", "channels": {CHANNELS}, "srate": {SRATE}, '
            f'"chunk": {CHUNK}, "markers": false}}',
        )
        threading.Thread(target=_naive_streamer, args=(f"{tag}_naive", stop), daemon=True).start()
        counters = [
            threading.Thread(target=_count, args=(f"{tag}_ours", seconds, ours)),
            threading.Thread(target=_count, args=(f"{tag}_naive", seconds, naive)),
        ]
        for t in counters:
            t.start()
        for t in counters:
            t.join()
    finally:
        stop.set()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    print(f"{'arm':<8}{'received':>10}{'expected':>12}{'error %':>10}{'drift samples/min':>19}")
    for label, r in (("ours", ours), ("naive", naive)):
        print(
            f"{label:<8}{r['received']:>10}{r['expected']:>12}{r['error_pct']:>10}"
            f"{r['drift_samples_per_min']:>19}"
        )
    result = {
        "bench": "mockup_pacing",
        "seconds": seconds,
        "srate": SRATE,
        "chunk": CHUNK,
        "ours": ours,
        "naive_sleep_per_chunk": naive,
        "target_abs_error_pct": 0.1,
        "meets_target": abs(ours["error_pct"]) <= 0.1,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
