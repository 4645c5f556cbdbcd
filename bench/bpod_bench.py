"""Bpod service benchmarks against the pty emulator.

1. Event latency: an input edge in the emulator (scripted ``Port1In``/``Port1Out`` every 20 ms in
   one long trial) -> the ``event:Port1In``/``event:Port1Out`` marker received by an LSL inlet in
   this process. The edge time is the real time of the emulator's cycle
   (``trial_t0 + cycle x 100 us`` on the monotonic clock, which is pylsl's ``local_clock``), so
   the figure includes emulator wake-up, pty, driver parsing, the service and LSL delivery.
2. Trials per second: ``RUN|{"trials": 200, "wait": true}`` of a one-state machine (timer 0,
   Tup -> exit: one 100 us cycle per trial), through the service (trials file and markers on).
3. Compile + upload of the largest machine the protocol can express (255 states: the exit
   target needs a state number in one byte): compile in Python, send ``C`` + ``R`` and wait for
   the device's confirm byte (the device has parsed it), median of 20.

The emulator runs in this process (a thread behind a pty), the service as a subprocess with
``--serial``. Usage: ``python bench/bpod_bench.py``. Ends with one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, loopback_env

loopback_env()

import pylsl  # noqa: E402

from services.bpod.compiler import compile_state_machine  # noqa: E402
from services.bpod.driver import BpodDriver  # noqa: E402
from services.bpod.emulator import PtyEmulator, get_profile, parse_script  # noqa: E402
from services.bpod.state_machine import StateMachine  # noqa: E402
from shared_utils.client import ModuleClient  # noqa: E402

N_EDGES = 200
EDGE_GAP_S = 0.02


def upload_bench(link: str, reps: int = 20) -> tuple[float, float]:
    drv = BpodDriver(link)
    drv.connect()
    sm = StateMachine("chain255")
    for i in range(255):
        sm.add_state(f"S{i}", 0, {"Tup": f"S{i + 1}" if i < 254 else "exit"})
    compile_ms, total_ms = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        compiled = compile_state_machine(sm, drv.hw)
        t1 = time.perf_counter()
        drv._write(compiled.command() + b"R")
        assert drv._read(1, "confirm") == b"\x01"
        t2 = time.perf_counter()
        drv._read(8, "start")
        drv._read(6 + 1 + 19, "events")  # the chain ends in 25.5 ms; drain it
        while drv._read_some(0.05):
            pass
        compile_ms.append((t1 - t0) * 1e3)
        total_ms.append((t2 - t0) * 1e3)
    drv.disconnect()
    return statistics.median(compile_ms), statistics.median(total_ms)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bpod-bench-"))
    profile = get_profile(3, 23)
    script = ",".join(
        f"Port1{'In' if k % 2 == 0 else 'Out'}@{0.5 + k * EDGE_GAP_S:.4f}" for k in range(N_EDGES)
    )
    emu = PtyEmulator(tmp / "bpod", profile, script=parse_script(script, profile))
    edges: list[tuple[float, float]] = []  # (edge time, time the emulator wrote it)
    core = emu.emulator
    codes = {profile.max_serial_events + 4, profile.max_serial_events + 5}
    plain_write = core._write

    def hooked(port: int, data: bytes) -> None:
        if core.running and data[:1] == b"\x01" and len(data) >= 7 and data[2] in codes:
            cycle = int.from_bytes(data[3:7], "little")
            edges.append((core.trial_t0 + cycle * 1e-4, time.monotonic()))
        plain_write(port, data)

    core._write = hooked
    emu.start_thread()
    compile_ms, upload_ms = upload_bench(str(emu.link))
    print(
        f"compile 255 states: {compile_ms:.2f} ms, compile+upload until confirm: {upload_ms:.2f} ms"
    )

    name = f"bpod_bench_{os.getpid()}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port_cmd = s.getsockname()[1]
    svc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.bpod",
            "--port",
            str(port_cmd),
            "--serial",
            str(emu.link),
            "--stream-name",
            name,
            "--trials-file",
            str(tmp / "trials.jsonl"),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        client = None
        for _ in range(300):
            try:
                client = ModuleClient("127.0.0.1", port_cmd, timeout=60)
                client.send("UP")
                break
            except Exception:
                time.sleep(0.05)
        inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", name, 1, 10.0)[0])
        inlet.open_stream(10.0)
        hang = {
            "name": "hang",
            "states": [
                {
                    "name": "Wait",
                    "timer": 0.6 + N_EDGES * EDGE_GAP_S,
                    "transitions": {"Tup": "exit"},
                }
            ],
        }
        client.send("RUN", trials=1, state_machine=hang)
        received: list[tuple[str, float, float]] = []
        while True:
            sample, ts = inlet.pull_sample(timeout=10.0)
            now = pylsl.local_clock()
            if sample is None or sample[0].startswith("trial_end"):
                break
            if sample[0] in ("event:Port1In", "event:Port1Out"):
                received.append((sample[0][6:], ts, now))
        lat = [(now - edge) * 1e3 for (_, _, now), (edge, _) in zip(received, edges, strict=True)]
        # The same, measured from the moment the emulator wrote the packet (host side only).
        host = sorted((now - w) * 1e3 for (_, _, now), (_, w) in zip(received, edges, strict=True))
        host_med, host_p99 = (
            statistics.median(host),
            host[min(len(host) - 1, int(0.99 * len(host)))],
        )
        emu_late = sorted((w - e) * 1e3 for e, w in edges)
        print(
            f"emulator wake-up after the edge: median {statistics.median(emu_late):.3f} ms, "
            f"max {emu_late[-1]:.3f} ms"
        )
        print("slowest edges (ms):", [round(x, 2) for x in sorted(lat)[-5:]])
        lat.sort()
        med = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(
            f"edge -> LSL marker latency over {len(lat)} edges: median {med:.3f} ms, p99 {p99:.3f} ms"
        )

        one = {"name": "one", "states": [{"name": "S", "timer": 0, "transitions": {"Tup": "exit"}}]}
        client.send("LOAD", state_machine=one)
        t = time.perf_counter()
        res = client.send("RUN", trials=200, wait=True)
        tps = res["completed"] / (time.perf_counter() - t)
        print(f"one-state trials: {tps:.1f} trials/s")
        inlet.close_stream()
        del inlet
        client.send("CLOSE")
        client.close()
        svc.wait(10)
    finally:
        if svc.poll() is None:
            svc.terminate()
            svc.wait(10)
        emu.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        json.dumps(
            {
                "bench": "bpod",
                "event_latency_ms_median": round(med, 3),
                "event_latency_ms_p99": round(p99, 3),
                "edges": len(lat),
                "write_to_marker_ms_median": round(host_med, 3),
                "write_to_marker_ms_p99": round(host_p99, 3),
                "emulator_wakeup_ms_max": round(emu_late[-1], 3),
                "trials_per_s_one_state": round(tps, 1),
                "compile_ms_255_states": round(compile_ms, 3),
                "compile_upload_ms_255_states": round(upload_ms, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
