"""Presenter benchmark: command-to-flip latency and frame-interval jitter at a paced 60 Hz.

Starts ``python -m services.presenter`` (a real subprocess; Xvfb of its own when ``$DISPLAY`` is
empty), opens a 640x480 window and sends SHOW_TEXT commands at random phases relative to the
frame clock. Latency = flip time reported in the reply (LSL clock, stamped in ``callOnFlip``)
minus the LSL clock just before the command was written to the socket; it includes the TCP hop,
the pipe to the child, waiting for the frame deadline, drawing and the flip. Under Xvfb there is
no vsync, so the child paces frames in software to 60 Hz; the expected latency is 0.5-1.5 frames.

Also checks that each LSL marker carries exactly the reply's onset time.
Run: ``.venv/bin/python bench/presenter_bench.py [N]``. Ends with one JSON line.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid

from _common import ROOT, free_port, loopback_env

loopback_env()

import numpy as np  # noqa: E402
import pylsl  # noqa: E402

from shared_utils.client import ModuleClient  # noqa: E402
from shared_utils.platform.xvfb import display_or_xvfb  # noqa: E402


def wait_up(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"presenter exited with {proc.returncode}")
        try:
            with ModuleClient("127.0.0.1", port, timeout=1) as c:
                if c.send("UP"):
                    return
        except Exception:
            time.sleep(0.1)
    raise TimeoutError("presenter did not come up")


def main(n: int = 300) -> dict:
    display, xvfb = display_or_xvfb()
    marker = f"presenter_bench_{uuid.uuid4().hex[:6]}"
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.presenter",
            "--port",
            str(port),
            "--size",
            "640x480",
            "--marker-stream",
            marker,
            "--refresh-hz",
            "60",
        ],
        cwd=ROOT,
        env={**os.environ, "DISPLAY": display},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_up(port, proc)
        with ModuleClient("127.0.0.1", port, timeout=60) as c:
            t0 = time.monotonic()
            opened = c.send("OPEN")
            open_s = time.monotonic() - t0
            inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", marker, 1, 10)[0])
            inlet.open_stream(10)
            for i in range(20):  # warm-up: fonts, texture caches
                c.send("SHOW_TEXT", text=f"warm {i}")
            while inlet.pull_chunk(timeout=0.3)[0]:
                pass
            rng = random.Random(1)
            lat, rtt, onsets = [], [], []
            for i in range(n):
                time.sleep(rng.uniform(0.0, 1 / 60))  # random phase against the frame clock
                t_send = pylsl.local_clock()
                r = c.send("SHOW_TEXT", text=f"trial {i} {'|' * (i % 20)}")
                t_back = pylsl.local_clock()
                lat.append(r["onset"] - t_send)
                rtt.append(t_back - t_send)
                onsets.append(r["onset"])
            time.sleep(0.5)
            st = c.send("STATUS")
            got: list[float] = []
            end = time.monotonic() + 10
            while len(got) < n and time.monotonic() < end:
                _, ts = inlet.pull_chunk(timeout=0.5)
                got += list(ts)
            marker_err = (
                float(np.max(np.abs(np.array(got[:n]) - np.array(onsets))))
                if len(got) >= n
                else None
            )
            inlet.close_stream()
            del inlet  # before the outlet goes away, so liblsl has nothing to complain about
            # idle jitter: 10 s of frames with nothing changing
            c.send("FIXATION")
            time.sleep(10.5)
            idle = c.send("STATUS")
            c.send("CLOSE_WINDOW")
        lat_ms = np.array(lat) * 1000
        rtt_ms = np.array(rtt) * 1000
        res = {
            "bench": "presenter",
            "display": "xvfb" if xvfb else display,
            "paced": opened["paced"],
            "refresh_hz": 60,
            "n_commands": n,
            "open_s": round(open_s, 3),
            "cmd_to_flip_ms_median": round(float(np.median(lat_ms)), 2),
            "cmd_to_flip_ms_p95": round(float(np.percentile(lat_ms, 95)), 2),
            "cmd_to_flip_ms_max": round(float(np.max(lat_ms)), 2),
            "reply_rtt_ms_median": round(float(np.median(rtt_ms)), 2),
            "frame_ms_median_under_load": st["frame_ms_median"],
            "frame_ms_p95_under_load": st["frame_ms_p95"],
            "frame_ms_sd_under_load": st["frame_ms_sd"],
            "frame_ms_median_idle": idle["frame_ms_median"],
            "frame_ms_p95_idle": idle["frame_ms_p95"],
            "frame_jitter_ms_sd_idle": idle["frame_ms_sd"],
            "dropped_frames": idle["dropped_frames"],
            "n_frames": idle["n_frames"],
            "marker_vs_reply_onset_max_abs_s": marker_err,
        }
        print(f"window open: {open_s:.3f} s (paced={opened['paced']}, display={res['display']})")
        print(
            f"command->flip latency over {n} SHOW_TEXT: median {res['cmd_to_flip_ms_median']} ms,"
            f" p95 {res['cmd_to_flip_ms_p95']} ms, max {res['cmd_to_flip_ms_max']} ms"
        )
        print(
            f"reply round trip (includes waiting for the flip): median "
            f"{res['reply_rtt_ms_median']} ms"
        )
        print(
            f"frame interval under load: median {st['frame_ms_median']} ms, p95 "
            f"{st['frame_ms_p95']} ms, sd {st['frame_ms_sd']} ms"
        )
        print(
            f"frame interval idle (last 600 frames): median {idle['frame_ms_median']} ms, p95 "
            f"{idle['frame_ms_p95']} ms, sd {idle['frame_ms_sd']} ms; dropped "
            f"{idle['dropped_frames']} of {idle['n_frames']} frames"
        )
        print(f"marker timestamp vs reply onset: max |diff| {marker_err} s")
        print(json.dumps(res))
        return res
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        if xvfb is not None:
            xvfb.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
