"""The shared-memory transport in the real pipeline (issue 17, phase 2), ring vs LSL, one run.

R  recorder: the mockup streamer writes 384 ch x 30 kHz int16 (23 MB/s, 1 ms chunks) into a
   ring whose writer also puts the full stream on LSL; the recorder module records it for
   ``--seconds`` (default 60) into an XDF, once from the ring (``--transport auto``) and once from
   LSL (``--transport lsl``), same source, same rate. Reported per arm: samples, gaps (the
   recorder's count, and holes in the file's own timestamps), samples lost by the ring reader,
   the recorder's peak RSS (sampled every 0.25 s) and CPU over the span, MB written, and the time
   pyxdf takes to load the file (which must load).
C  closed loop: a source process (bench/shm_bench.py's paced source) pushes 384 ch x 30 kHz
   int16 in 1 ms chunks into a ring (full LSL copy beside it), stamping each chunk's newest
   sample with the LSL clock just before the push; the decoder module decodes 8 of the channels
   (a model fitted here on the mockup's signal) from the ring (START transport "shm") or from
   LSL (transport "lsl"), with one prediction per chunk (step_s 1 ms). This process reads the
   decoder's LSL output and records local_clock() - output stamp (= the push time of the newest
   input sample the prediction used): sample written -> decoder output visible to a consumer,
   p50/p99. The decoder's own figure (stamp -> output pushed) and its CPU are reported beside it.

Modules run as the control room starts them (one ControlRoom per arm, in this process). With
``--sched rt`` the decoder gets ``cpu_affinity`` and ``sched = "fifo:50"`` from its config (the
per-module setting) and the source is pinned to the other core with the same priority; refused
settings are reported in the JSON instead. Everything shares the machine's 2 cores with whatever
else runs: the load average is in the JSON.
Run: ``python bench/shm_pipeline_bench.py [--seconds 60] [--only R,C] [--sched rt]``; the last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import _common

_common.loopback_env()
os.environ.setdefault("MESH_SHM_SESSION", f"pipebench{os.getpid()}")

import numpy as np  # noqa: E402

from shared_utils.platform.processes import (  # noqa: E402
    Scheduling,
    apply_scheduling,
    scheduling_problem,
)

SR = 30000
WARMUP_S = 2.0
PROBE = {"transport": "shm", "channels": 384, "srate": SR, "dtype": "int16", "chunk": 30}
ROOM = """
[control_room]
port = 0
pub_port = 0
log_port = 0
log_dir = "{logs}"
data_dir = "{data}"
web = false
marker_stream = "pipebench_{tag}"
"""


def room_up(body: str, work: Path) -> Any:
    """A control room running the modules of ``body`` (TOML), started in this process."""
    from control_room.config import load_config
    from control_room.room import ControlRoom

    path = work / f"mesh_{uuid.uuid4().hex[:6]}.toml"
    path.write_text(ROOM.format(logs=work / "logs", data=work, tag=uuid.uuid4().hex[:6]) + body)
    room = ControlRoom(load_config(path), console=None)
    room.up()
    return room


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


class Sampler(threading.Thread):
    """Peak RSS of a process, every 0.25 s, until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc, self.peak, self.halt = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.25):
            self.peak = max(self.peak, self.proc.memory_info().rss)


# ------------------------------------------------------------------------------- R: recorder
def recorder_arm(transport: str, seconds: float, work: Path) -> dict[str, Any]:
    import pyxdf

    name = f"probe_{uuid.uuid4().hex[:6]}"
    data = work / "data"
    room = room_up(
        f"""
[modules.mockup]
module = "services.mockup_streamer"
[modules.recorder]
module = "services.recorder"
args = ["--data-dir", "{data}", "--transport", "{"auto" if transport == "shm" else "lsl"}"]
""",
        work,
    )
    try:
        load0 = os.getloadavg()
        room.send("mockup", "START", {"stream": name, **PROBE, "markers": False})
        time.sleep(WARMUP_S)
        pid = room.handle("recorder").pid
        sampler = Sampler(pid)
        sampler.start()
        cpu0, t0 = _common.proc_cpu_s(pid), time.monotonic()
        started = room.send(
            "recorder", "START", {"file": f"rec_{transport}.xdf", "streams": [name]}
        )
        time.sleep(seconds)
        res = room.send("recorder", "STOP", timeout=60)
        cpu = 100 * (_common.proc_cpu_s(pid) - cpu0) / (time.monotonic() - t0)
        sampler.halt.set()
        room.send("mockup", "STOP")
    finally:
        room.down()
    st = next(s for s in res["streams"] if s["name"] == name)
    t = time.monotonic()
    streams, _ = pyxdf.load_xdf(started["file"], dejitter_timestamps=False)
    load_s = time.monotonic() - t
    sig = next(s for s in streams if s["info"]["name"][0] == name)
    ts = sig["time_stamps"]
    span = round((ts[-1] - ts[0]) * SR) + 1
    out = {
        "transport_used": st["transport"],
        "samples": st["samples"],
        "seconds_recorded": res["seconds"],
        "gaps": st["gaps"],
        "file_gaps": int(np.count_nonzero(np.diff(ts) > 1.5 / SR)),
        "file_missing_in_span": span - len(ts),
        "file_samples": len(ts),
        "lost_samples": st.get("lost_samples", 0),
        "recorder_peak_rss_mb": round(sampler.peak / 1e6, 1),
        "recorder_cpu_pct": round(cpu, 1),
        "mb_written": round(res["bytes"] / 1e6, 1),
        "pyxdf_load_s": round(load_s, 2),
        "error": res.get("error"),
        "loadavg": [load0, os.getloadavg()],
    }
    del streams, sig, ts
    Path(started["file"]).unlink()
    return out


# ---------------------------------------------------------------------------- C: closed loop
def fit_model(path: Path, channels: int = 8) -> None:
    """A decoder model for the mockup's signal at 30 kHz on ch1..ch8, fitted here on 12 s of
    the same generator the mockup uses (the decoder's own training code)."""
    from services.decoder import model_io
    from services.decoder.features import FeatureSettings
    from services.decoder.training import Recording, fit_recording
    from services.mockup_streamer.shm_stream import TiledEEG
    from services.mockup_streamer.synth import StateSchedule

    sched = StateSchedule(SR, period_s=2.0)
    x = TiledEEG(channels, SR, sched, seed=1).generate(0, 12 * SR).astype(np.float64)
    switches = sched.switches(0, 12 * SR)
    rec = Recording(
        x, np.arange(len(x)) / SR, SR, [f"ch{i + 1}" for i in range(channels)],
        np.array([k / SR for k, _ in switches]), [s for _, s in switches],
    )  # fmt: skip
    model, _ = fit_recording(rec, FeatureSettings([[8.0, 13.0], [13.0, 30.0]], 2, 0.25))
    model_io.save(model, path)


def closed_loop_arm(transport: str, seconds: float, sched: str, work: Path) -> dict[str, Any]:
    import pylsl

    from shared_utils.streams.shm import sweep_stale

    name, out = f"cl_{uuid.uuid4().hex[:6]}", f"cl_out_{uuid.uuid4().hex[:6]}"
    model = work / "model.json"
    if not model.exists():
        fit_model(model)
    cpus = sorted(os.sched_getaffinity(0))
    rt = f'cpu_affinity = [{cpus[-1]}]\nsched = "fifo:50"\n' if sched == "rt" else ""
    src = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "shm_bench.py"), "--role", "source",
         "--transport", "shm", "--name", name, "--ch", "384", "--dtype", "int16", "--mode",
         "paced", "--seconds", str(seconds + WARMUP_S + 20), "--sched", sched],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    room = None
    try:
        assert src.stdout
        assert src.stdin
        assert src.stdout.readline().strip() == "ready"
        src.stdin.write("go\n")
        src.stdin.flush()
        room = room_up(f'[modules.decoder]\nmodule = "services.decoder"\n{rt}', work)
        dec = room.handle("decoder")
        room.send("decoder", "LOAD", {"file": str(model)})
        run = room.send("decoder", "START", {
            "input": name, "output": out, "transport": transport, "step_s": 1 / SR * 30,
        })  # fmt: skip
        consumer = consumer_priority(sched)  # first: liblsl's receive threads inherit it
        inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", out, timeout=10)[0], max_buflen=5)
        inlet.open_stream(timeout=5)
        lat: list[float] = []
        t_end = time.monotonic() + WARMUP_S + seconds
        cpu0 = t0 = None
        while time.monotonic() < t_end:
            _, ts = inlet.pull_chunk(timeout=0.2, max_samples=64, min_samples=1)
            now = pylsl.local_clock()
            if t0 is None and time.monotonic() > t_end - seconds:
                cpu0, t0 = _common.proc_cpu_s(dec.pid), time.monotonic()
            if t0 is not None:
                lat.extend(now - t for t in ts)
        if consumer == "fifo:50":
            apply_scheduling(Scheduling(policy="other"))
        assert cpu0 is not None
        assert t0 is not None
        cpu = 100 * (_common.proc_cpu_s(dec.pid) - cpu0) / (time.monotonic() - t0)
        status = room.send("decoder", "STATUS")
        room.send("decoder", "STOP")
        inlet.close_stream()
    finally:
        if room is not None:
            room.down()
        src.kill()  # before its end: the source's ring is left for the sweep below
        src.wait()
        sweep_stale()
    ms = [v * 1e3 for v in lat]
    return {
        "transport_used": run["transport"],
        "scheduling": dec.info()["scheduling"],
        "consumer_scheduling": consumer,
        "predictions": len(ms),
        "e2e_p50_ms": pct(ms, 50),
        "e2e_p99_ms": pct(ms, 99),
        "e2e_max_ms": round(max(ms), 3),
        "decoder_stamp_to_push_ms": status["latency_ms"],
        "decoder_compute_ms": status["compute_ms"],
        "decoder_cpu_pct": round(cpu, 1),
        "decoder_error": status["error"],
        "loadavg": os.getloadavg(),
    }


def consumer_priority(sched: str) -> str | None:
    """``--sched rt``: this thread (the one reading the decoder's output) and the liblsl threads
    it starts run SCHED_FIFO 50 too, so the measured tail is the pipeline's, not this process's
    wake-up under load."""
    if sched != "rt":
        return None
    want = Scheduling(policy="fifo", priority=50)
    problem = scheduling_problem(want)
    if problem:
        return f"refused: {problem}"
    apply_scheduling(want)
    return "fifo:50"


# -------------------------------------------------------------------------------------- main
def refused(fn: Any, *args: Any) -> dict[str, Any]:
    try:
        return fn(*args)
    except Exception as exc:  # a refused setting or a failed arm is a result, not a crash
        return {"error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0, help="recorded / measured span per arm")
    ap.add_argument("--only", default="R,C", help="R (recorder), C (closed loop)")
    ap.add_argument("--sched", default="none", choices=["none", "rt"])
    a = ap.parse_args()
    only = {x.strip().upper() for x in a.only.split(",") if x.strip()}
    res: dict[str, Any] = {"bench": "shm_pipeline", "seconds": a.seconds, "sched": a.sched}
    res["machine"] = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="pipebench") as tmp:
        work = Path(tmp)
        if "R" in only:
            res["recorder"] = {}
            for tr in ("shm", "lsl"):
                r = res["recorder"][tr] = refused(recorder_arm, tr, a.seconds, work)
                print(f"R {tr:3s}: {json.dumps(r)}", flush=True)
        if "C" in only:
            res["closed_loop"] = {}
            for tr in ("shm", "lsl"):
                r = res["closed_loop"][tr] = refused(closed_loop_arm, tr, a.seconds, a.sched, work)
                print(f"C {tr:3s}: {json.dumps(r)}", flush=True)
    res["ratios"] = ratios(res)
    res["machine"]["loadavg_end"] = os.getloadavg()
    print(json.dumps(res, default=float), flush=True)
    failed = [f"{part}/{tr}" for part in ("recorder", "closed_loop")
              for tr, r in res.get(part, {}).items() if r.get("error")]  # fmt: skip
    if failed:  # the figures above are incomplete: say so to make and CI
        sys.exit(f"arms that did not run: {', '.join(failed)}")


def ratios(res: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 2) if isinstance(a, int | float) and b else None

    rec, cl = res.get("recorder", {}), res.get("closed_loop", {})
    r_s, r_l, c_s, c_l = (rec.get("shm", {}), rec.get("lsl", {}), cl.get("shm", {}),
                          cl.get("lsl", {}))  # fmt: skip
    return {
        "recorder_cpu_lsl_over_shm": ratio(
            r_l.get("recorder_cpu_pct"), r_s.get("recorder_cpu_pct")
        ),
        "recorder_rss_lsl_over_shm": ratio(
            r_l.get("recorder_peak_rss_mb"), r_s.get("recorder_peak_rss_mb")
        ),
        "closed_loop_p50_lsl_over_shm": ratio(c_l.get("e2e_p50_ms"), c_s.get("e2e_p50_ms")),
        "closed_loop_p99_lsl_over_shm": ratio(c_l.get("e2e_p99_ms"), c_s.get("e2e_p99_ms")),
        "decoder_cpu_lsl_over_shm": ratio(c_l.get("decoder_cpu_pct"), c_s.get("decoder_cpu_pct")),
    }


if __name__ == "__main__":
    main()
