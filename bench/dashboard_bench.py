"""What the dashboard costs the control room: CPU and command reply time, page closed vs open.

Runs ``control-room up`` as its own process (an echo module and the mock EEG streamer at 64
channels x 1 kHz), then, for ``--seconds`` each:

1. page closed: the control room's CPU (its own process, all threads, from /proc) and the round
   trip of ``SEND a ECHO`` through the control room's command port, one every 50 ms;
2. page open in headless Chromium (Debian's, driven by Playwright) with the live plot showing the
   64-channel stream: the same two figures, plus what the page did with the plot: frames received
   per second (the control room sends 20), repaints per second (frames arriving within one
   animation frame share a repaint, so draws <= frames; every column received is drawn either
   way), milliseconds per repaint (series built and uPlot's drawing, run synchronously), and how
   busy the page's main thread was (Chromium's own task time, rasterising the canvas included).

``--load N`` keeps N extra processes spinning on the CPU through both phases (a busy lab PC:
the page then repaints less often than frames arrive).

It also times the hand-over of a bus event to the dashboard, in-process listener vs ZeroMQ SUB
socket (the choice control_room/web/monitor.py explains). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import ROOT, free_port, loopback_env, proc_cpu_s

loopback_env()

CONFIG = """
[control_room]
port = {port}
pub_port = 0
log_port = 0
web_port = {web}
log_dir = "{logs}"
marker_stream = "bench_dash_{tag}"

[modules.a]
module = "tests.cr_modules.echo"
args = ["--name", "a"]

[modules.mockup_streamer]
module = "services.mockup_streamer"
"""
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def measure(pid: int, client: Any, seconds: float) -> dict[str, float]:
    """Control-room CPU (% of one core) and SEND round trips over ``seconds``."""
    rtts: list[float] = []
    c0, t0 = proc_cpu_s(pid), time.monotonic()
    while time.monotonic() - t0 < seconds:
        s = time.perf_counter()
        client.send("SEND", module="a", command="ECHO", kwargs={"n": 1})
        rtts.append((time.perf_counter() - s) * 1000)
        time.sleep(0.05)
    cpu = (proc_cpu_s(pid) - c0) / (time.monotonic() - t0) * 100
    return {
        "cpu_pct": round(cpu, 1),
        "reply_ms_median": round(statistics.median(rtts), 3),
        "reply_ms_p95": round(sorted(rtts)[int(0.95 * len(rtts))], 3),
    }


def bridge_latency(n: int = 2000) -> dict[str, float]:
    """Median µs from ``EventBus.publish`` to the dashboard's hands: listener vs SUB socket."""
    import zmq

    from control_room.events import EventBus

    bus = EventBus("127.0.0.1", 0)
    got_l: list[float] = []
    bus.add_listener(lambda topic, msg: got_l.append(time.perf_counter() - msg["t"]))
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.connect(bus.address)
    sub.subscribe(b"")
    got_z: list[float] = []

    def recv() -> None:
        while len(got_z) < n:
            _, body = sub.recv_multipart()
            got_z.append(time.perf_counter() - json.loads(body)["t"])

    time.sleep(0.3)  # ZeroMQ's slow joiner: earlier events would be lost
    th = threading.Thread(target=recv, daemon=True)
    th.start()
    for _ in range(n):
        bus.publish("status", module="x", state="ready", t=time.perf_counter())
        time.sleep(0.0005)
    th.join(10)
    sub.close(0)
    bus.close()
    return {
        "bridge_listener_us": round(statistics.median(got_l) * 1e6, 1),
        "bridge_zmq_sub_us": round(statistics.median(got_z) * 1e6, 1) if got_z else None,
    }


@contextlib.contextmanager
def cpu_load(n: int) -> Iterator[None]:
    """``n`` processes that keep a core busy each until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def page_open(pw: Any, chromium: str, web: int, pid: int, client: Any, seconds: float) -> dict:
    """``measure`` with the page open on the plot, and what the page did meanwhile."""
    b = pw.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
    try:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")  # TaskDuration: seconds the main thread was busy

        def sample() -> tuple[float, dict[str, float]]:
            m = {x["name"]: x["value"] for x in cdp.send("Performance.getMetrics")["metrics"]}
            return m["TaskDuration"], page.evaluate("({...window.dashStats})")

        page.goto(f"http://127.0.0.1:{web}/")
        page.wait_for_selector('#plot-stream option[value="bench_eeg"]', state="attached")
        page.select_option("#plot-stream", "bench_eeg")
        page.wait_for_function("window.dashStats.draws > 20")
        (busy0, s0), t0 = sample(), time.monotonic()
        opened = measure(pid, client, seconds)
        (busy1, s1), dt = sample(), time.monotonic() - t0
    finally:
        b.close()
    return {
        **opened,
        "frames_per_s": (s1["frames"] - s0["frames"]) / dt,
        "draws_per_s": (s1["draws"] - s0["draws"]) / dt,
        "ms_per_draw": s1["drawMs"],
        "main_thread_pct": (busy1 - busy0) / dt * 100,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--load", type=int, default=0, help="CPU-bound processes running meanwhile")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from shared_utils.protocol.client import ModuleClient

    port, web = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "mesh.toml"
        cfg.write_text(CONFIG.format(port=port, web=web, logs=tmp, tag=uuid.uuid4().hex[:6]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "control_room", "up", str(cfg)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.startswith("running;"):
                    break
            else:
                raise SystemExit("control room did not start")
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
            with ModuleClient("127.0.0.1", port, timeout=10, protocol="json") as c:
                c.send(
                    "SEND", module="mockup_streamer", command="START",
                    kwargs={"stream": "bench_eeg", "channels": 64, "srate": 1000},
                )  # fmt: skip
                time.sleep(1.0)
                with cpu_load(args.load), sync_playwright() as pw:
                    closed = measure(proc.pid, c, args.seconds)
                    opened = page_open(pw, args.chromium, web, proc.pid, c, args.seconds)
                c.send("DOWN")
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = {
        "bench": "dashboard",
        "stream": "64 ch x 1000 Hz",
        "seconds": args.seconds,
        "load_procs": args.load,
        "cpu_pct_page_closed": closed["cpu_pct"],
        "cpu_pct_page_open": opened["cpu_pct"],
        "cpu_pct_added": round(opened["cpu_pct"] - closed["cpu_pct"], 1),
        "reply_ms_page_closed": closed["reply_ms_median"],
        "reply_ms_page_open": opened["reply_ms_median"],
        "reply_ms_added": round(opened["reply_ms_median"] - closed["reply_ms_median"], 3),
        "reply_ms_p95_page_open": opened["reply_ms_p95"],
        "page_frames_per_s_received": round(opened["frames_per_s"], 1),
        "page_draws_per_s": round(opened["draws_per_s"], 1),
        "page_ms_per_draw": round(opened["ms_per_draw"], 1),
        "page_main_thread_pct": round(opened["main_thread_pct"], 1),
        **bridge_latency(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
