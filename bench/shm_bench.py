"""Same-host shared-memory ring vs LSL at electrophysiology rates (issue 17), in one run.

L  latency/loss/CPU: 384 ch and 1024 ch x 30 kHz int16 in 1 ms chunks (30 samples), paced, one
   source process -> one consumer process, for ``--seconds`` (default 60) after 1 s warm-up.
   The source stamps the newest sample of each chunk with the LSL clock just before the push;
   the consumer records local_clock() - that stamp as soon as the chunk is in its own array
   (push-to-visible). Loss is counted exactly from a counter in channels 0-1. CPU is the whole
   consumer process (user + system) over the measured span. Arms: ``shm`` (ShmWriter -> ShmReader
   .pull_into, futex wake-ups; the writer also announces on LSL as in production) and ``lsl``
   (pylsl outlet -> inlet blocking ``pull_chunk(dest_obj, min_samples=1)``, the LSL floor).
C  throughput ceiling: a flood source (1000-sample chunks) and a consumer counting the samples
   it receives per second over ``--ceiling-seconds``; shapes 384 ch int16 and 64 ch float32 (the
   shape of the LSL reference figure). The shm source paces itself on the slowest reader's
   backlog (ShmWriter.backlog) so the ceiling is lossless; the LSL consumer's loss is reported.
   Two shm consumers: ``shm`` copies every sample into its own array (``pull_into``);
   ``shm_view`` takes zero-copy views (``pull_view``), reads the counters off the ring and
   validates each view afterwards (``check_view``), as a consumer computing in place would.
   Both processes share 2 busy cores here, so delivered rates swing with other load; the
   consumer's samples per CPU-second (rate / its CPU share) is the steadier ceiling figure.

Producer and consumer share the machine's cores (2 here) with whatever else runs: no pinning,
unless ``--sched rt`` (L arms only: SCHED_FIFO priority 50, source and consumer pinned to
different cores, as a per-module priority/affinity setting would; refused -> said in the JSON).
Run: ``python bench/shm_bench.py [--seconds 60] [--only L,C] [--sched rt]``. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import _common

from shared_utils.streams.lsl import use_loopback  # noqa: E402

use_loopback()  # before pylsl is imported anywhere (children inherit LSLAPICFG)
os.environ.setdefault("MESH_LOG_SERVER", "none")
os.environ.setdefault("MESH_SHM_SESSION", f"bench{os.getpid()}")

import numpy as np  # noqa: E402

SRATE = 30000.0
CHUNK = 30  # 1 ms at 30 kHz
FLOOD_CHUNK = 1000
WARMUP_S = 1.0
_clock = time.monotonic  # CLOCK_MONOTONIC: liblsl's local_clock on Linux


def counter_block(ch: int, dtype: str, n: int) -> np.ndarray:
    """``n`` rows of noise with the sample counter in channels 0 (low 15 bits) and 1 (high)."""
    rng = np.random.default_rng(0)
    x = rng.integers(-2000, 2000, size=(n, ch)).astype(dtype)
    return x


def stamp(x: np.ndarray, k: int) -> None:
    k_arr = np.arange(k, k + len(x))
    x[:, 0] = k_arr & 0x7FFF
    x[:, 1] = (k_arr >> 15) & 0x7FFF


def counters(x: np.ndarray, n: int) -> tuple[int, int]:
    a = x[:n, 0].astype(np.int64) | (x[:n, 1].astype(np.int64) << 15)
    return int(a[0]), int(a[-1])


# ------------------------------------------------------------------------------------ source
def set_up(role: str, sched: str) -> str:
    """Logs to stderr (stdout carries results); ``sched="rt"``: SCHED_FIFO 50, pinned to a core
    of its own (source 0, consumer 1), what the control room's per-module priority will do.
    Returns what was applied, or why not."""
    from shared_utils.logging import configure_logging

    configure_logging(f"shm_bench_{role}", log_server="none", level="WARNING")
    if sched != "rt":
        return "none"
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[(role == "consumer") % len(cpus)]})
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        return "SCHED_FIFO 50, pinned"
    except OSError as exc:
        return f"refused: {exc}"


def source(
    transport: str, name: str, ch: int, dtype: str, mode: str, seconds: float, sched: str
) -> None:
    applied = set_up("source", sched)
    chunk = CHUNK if mode == "paced" else FLOOD_CHUNK
    block = counter_block(ch, dtype, chunk)
    if transport == "shm":
        from shared_utils.streams.shm import ShmWriter

        # Paced: announced on LSL as in production (auto: full at 384 ch, /2 at 1024 ch). Flood:
        # not announced, so the ceiling is the ring's (full-rate LSL would cost a copy per push).
        lsl = "auto" if mode == "paced" else "off"
        w = ShmWriter(name, ch, SRATE, dtype, capacity_s=1.0, stream_type="ExtracellularEphys",
                      lsl=lsl)  # fmt: skip
        push = w.push_chunk
    else:
        import pylsl

        fmt = pylsl.cf_int16 if dtype == "int16" else pylsl.cf_float32
        info = pylsl.StreamInfo(name, "ExtracellularEphys", ch, SRATE, fmt, f"bench-{name}")
        out = pylsl.StreamOutlet(info, chunk_size=chunk, max_buffered=2)

        def push(x: np.ndarray) -> None:
            out.push_chunk(x, pylsl.local_clock())

    print("ready", flush=True)
    sys.stdin.readline()
    cpu0, t0 = _common.proc_cpu_s(os.getpid()), _clock()
    end, k = t0 + seconds, 0
    while _clock() < end:
        if mode == "paced":
            wait = t0 + (k + chunk) / SRATE - _clock()
            if wait > 0:
                time.sleep(wait)
        elif transport == "shm":
            while w.backlog() > w.capacity // 2 and _clock() < end:  # lossless: never lap
                os.sched_yield()  # (a 50 µs sleep here halves the rate: timer slack)
        stamp(block, k)
        push(block)
        k += chunk
    cpu = 100 * (_common.proc_cpu_s(os.getpid()) - cpu0) / (_clock() - t0)
    print(json.dumps({"pushed": k, "source_cpu_pct": round(cpu, 1), "sched": applied}), flush=True)
    sys.stdin.readline()  # the consumer is done
    if transport == "shm":
        w.close()


# ---------------------------------------------------------------------------------- consumer
class ShmIn:
    """``pull_into``: one copy into the consumer's array. ``view``: zero-copy ``pull_view``, the
    counters read from the ring itself, then ``check_view`` (the seqlock check)."""

    def __init__(self, name: str, view: bool = False) -> None:
        from shared_utils.streams.shm import ShmReader

        self.r = ShmReader(name)
        self.view = view

    def pull(self, buf: np.ndarray, tbuf: np.ndarray) -> int:
        if not self.view:
            return self.r.pull_into(buf, tbuf, timeout_s=0.5)
        d, t, first = self.r.pull_view(len(buf), timeout_s=0.5)
        n = len(t)
        if n:  # what a consumer that computes on the view does: use it, then check it
            buf[0], buf[n - 1], tbuf[n - 1] = d[0], d[n - 1], t[n - 1]
            n -= self.r.check_view(first, n)
        return n

    def reported_loss(self) -> int:
        return self.r.lost_samples

    def close(self) -> None:
        self.r.close()


class LslIn:
    def __init__(self, name: str) -> None:
        import pylsl

        info = pylsl.resolve_byprop("name", name, minimum=1, timeout=10)[0]
        self.inlet = pylsl.StreamInlet(info, max_buflen=2)
        self.inlet.open_stream(10)

    def pull(self, buf: np.ndarray, tbuf: np.ndarray) -> int:
        _, ts = self.inlet.pull_chunk(
            timeout=0.5, max_samples=len(buf), dest_obj=buf, min_samples=1, as_numpy=True
        )
        tbuf[: len(ts)] = ts
        return len(ts)

    def reported_loss(self) -> int:
        return 0

    def close(self) -> None:
        self.inlet.close_stream()


def consumer(
    transport: str, name: str, ch: int, dtype: str, mode: str, seconds: float, sched: str
) -> dict:
    applied = set_up("consumer", sched)
    src = LslIn(name) if transport == "lsl" else ShmIn(name, view=transport == "shm_view")
    print("ready", flush=True)
    buf = np.empty((16384, ch), dtype=dtype)
    tbuf = np.empty(16384)
    lat = np.empty(int((seconds + WARMUP_S + 5) * SRATE / CHUNK) + 1000)
    nl = got = gaps = missing = 0
    nxt = None
    t_warm = cpu0 = None
    idle_since = _clock()
    while True:
        n = src.pull(buf, tbuf)
        now = _clock()
        if n == 0:
            if now - idle_since > 3.0 or (t_warm is not None and now - t_warm > seconds):
                break
            continue
        idle_since = now
        first, last = counters(buf, n)
        if nxt is not None and first != nxt:
            gaps += 1
            missing += first - nxt
        nxt = last + 1
        if t_warm is None:
            if got >= WARMUP_S * SRATE:
                t_warm, cpu0, got = now, _common.proc_cpu_s(os.getpid()), 0
        else:
            if now - t_warm > seconds:
                break
            if mode == "paced":
                lat[nl] = (now - tbuf[n - 1]) * 1e6
                nl += 1
        got += n
    span = _clock() - (t_warm or _clock())
    cpu = 100 * (_common.proc_cpu_s(os.getpid()) - (cpu0 or 0)) / span if span > 0 else float("nan")
    src.close()
    a = lat[:nl]
    out: dict[str, Any] = {
        "samples": got, "span_s": round(span, 2), "gaps": gaps, "missing": missing,
        "reported_lost": src.reported_loss(), "consumer_cpu_pct": round(cpu, 2),
        "consumer_sched": applied,
    }  # fmt: skip
    if mode == "paced" and nl:
        out.update(
            n=nl, p50_us=round(float(np.percentile(a, 50)), 1),
            p99_us=round(float(np.percentile(a, 99)), 1), max_us=round(float(a.max()), 1),
        )  # fmt: skip
    else:
        out.update(samples_s=round(got / span), mb_s=round(got * ch * buf.itemsize / span / 1e6, 1))
    return out


# ----------------------------------------------------------------------------- orchestration
def run_pair(
    transport: str, ch: int, dtype: str, mode: str, seconds: float, sched: str = "none"
) -> dict:
    name = f"shmbench_{transport}_{ch}_{mode}_{os.getpid()}"
    base = [sys.executable, __file__, "--name", name, "--sched", sched]
    base += ["--ch", str(ch), "--dtype", dtype, "--mode", mode]
    src_s = seconds + WARMUP_S + 2
    src_t = "lsl" if transport == "lsl" else "shm"
    s = subprocess.Popen([*base, "--transport", src_t, "--role", "source", "--seconds", str(src_s)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    c = None
    try:
        assert s.stdout
        assert s.stdin
        assert s.stdout.readline().strip() == "ready"
        c = subprocess.Popen([*base, "--transport", transport, "--role", "consumer",
                              "--seconds", str(seconds)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert c.stdout
        assert c.stdout.readline().strip() == "ready"
        s.stdin.write("go\n")
        s.stdin.flush()
        res = json.loads(c.stdout.readline())
        res.update(json.loads(s.stdout.readline()))
        s.stdin.write("done\n")
        s.stdin.flush()
        s.wait(30)
        c.wait(30)
        return res
    finally:
        for p in (s, c):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def show(tag: str, r: dict) -> None:
    if "p50_us" in r:
        print(f"  {tag:22s} p50 {r['p50_us']:8.1f} µs  p99 {r['p99_us']:8.1f} µs  max "
              f"{r['max_us']:9.1f} µs  lost {r['missing']:6d} (reported {r['reported_lost']})  "
              f"consumer CPU {r['consumer_cpu_pct']:5.1f} %  source CPU {r['source_cpu_pct']:5.1f} %",
              flush=True)  # fmt: skip
    else:
        per = r.get("samples_per_consumer_cpu_s")
        print(f"  {tag:22s} {r['samples_s'] / 1e6:7.3f} M samples/s ({r['mb_s']:7.1f} MB/s)  "
              f"lost {r['missing']}  consumer CPU {r['consumer_cpu_pct']:5.1f} %"
              + (f"  -> {per / 1e6:6.2f} M samples per consumer CPU-second" if per else ""),
              flush=True)  # fmt: skip


def orchestrate(only: set[str], seconds: float, ceiling_s: float, rounds: int, sched: str) -> dict:
    from shared_utils.streams.shm import sweep_stale

    res: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}}
    if "L" in only:
        print(f"L: push-to-visible latency, 30 kHz int16, 1 ms chunks, {seconds:g} s per arm, "
              f"scheduling: {sched}")  # fmt: skip
        for ch in (384, 1024):
            for t in ("shm", "lsl"):
                r = run_pair(t, ch, "int16", "paced", seconds, sched)
                res[f"L_{ch}ch_{t}"] = r
                show(f"{ch} ch {t}", r)
    if "C" in only:
        print(f"C: throughput ceiling, flood in {FLOOD_CHUNK}-sample chunks, {ceiling_s:g} s, "
              f"{rounds} round(s) with the arms interleaved; median")  # fmt: skip
        arms = [(ch, dt, t) for ch, dt in ((384, "int16"), (64, "float32"))
                for t in ("shm", "shm_view", "lsl")]  # fmt: skip
        runs: dict[str, list[dict]] = {}
        for _ in range(rounds):
            for ch, dt, t in arms:
                runs.setdefault(f"C_{ch}ch_{dt}_{t}", []).append(
                    run_pair(t, ch, dt, "flood", ceiling_s)
                )
        for key, rs in runs.items():
            rs.sort(key=lambda r: r["samples_s"])
            r = dict(rs[len(rs) // 2])
            r["rounds_samples_s"] = [x["samples_s"] for x in rs]
            # What one core of consumer would ingest: independent of how busy the box is.
            per_cpu = [x["samples_s"] / max(x["consumer_cpu_pct"], 0.1) * 100 for x in rs]
            r["samples_per_consumer_cpu_s"] = round(float(np.median(per_cpu)))
            r["missing_total"] = sum(x["missing"] for x in rs)
            res[key] = r
            show(key[2:].replace("_", " "), r)
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["stale_rings_after"] = len(sweep_stale())
    return res


def summary(res: dict) -> dict:
    out: dict[str, Any] = {}
    for ch in (384, 1024):
        r = res.get(f"L_{ch}ch_shm")
        if r:
            out[f"L_{ch}ch_targets_met"] = bool(
                r["p50_us"] <= 100 and r["p99_us"] <= 600 and r["missing"] == 0
                and r["reported_lost"] == 0 and r["consumer_cpu_pct"] <= 10
            )  # fmt: skip
            lsl = res.get(f"L_{ch}ch_lsl")
            if lsl and lsl.get("p50_us"):
                out[f"L_{ch}ch_p50_lsl_over_shm"] = round(lsl["p50_us"] / r["p50_us"], 1)
                out[f"L_{ch}ch_p99_lsl_over_shm"] = round(lsl["p99_us"] / r["p99_us"], 1)
    for shape in ("384ch_int16", "64ch_float32"):
        b = res.get(f"C_{shape}_lsl")
        for arm in ("shm", "shm_view"):
            a = res.get(f"C_{shape}_{arm}")
            if a and b and b["samples_s"]:
                out[f"C_{shape}_{arm}_over_lsl"] = round(a["samples_s"] / b["samples_s"], 1)
                out[f"C_{shape}_{arm}_over_lsl_per_consumer_cpu"] = round(
                    a["samples_per_consumer_cpu_s"] / b["samples_per_consumer_cpu_s"], 1
                )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="main", choices=["main", "source", "consumer"])
    ap.add_argument("--transport", default="shm", choices=["shm", "shm_view", "lsl"])
    ap.add_argument("--name", default="shmbench")
    ap.add_argument("--ch", type=int, default=384)
    ap.add_argument("--dtype", default="int16")
    ap.add_argument("--mode", default="paced", choices=["paced", "flood"])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured span of each L arm")
    ap.add_argument("--ceiling-seconds", type=float, default=4.0)
    ap.add_argument("--ceiling-rounds", type=int, default=3)
    ap.add_argument("--sched", default="none", choices=["none", "rt"],
                    help="rt: L arms run SCHED_FIFO and pinned to separate cores")  # fmt: skip
    ap.add_argument("--only", default="L,C", help="L (latency/loss/CPU), C (ceiling)")
    a = ap.parse_args()
    if a.role == "source":
        source(a.transport, a.name, a.ch, a.dtype, a.mode, a.seconds, a.sched)
    elif a.role == "consumer":
        res = consumer(a.transport, a.name, a.ch, a.dtype, a.mode, a.seconds, a.sched)
        print(json.dumps(res), flush=True)
    else:
        only = {x.strip().upper() for x in a.only.split(",") if x.strip()}
        if only - {"L", "C"}:
            ap.error(f"--only: unknown {sorted(only - {'L', 'C'})}; choose from L, C")
        res = orchestrate(only, a.seconds, a.ceiling_seconds, max(1, a.ceiling_rounds), a.sched)
        res["summary"] = summary(res)
        out = {"bench": "shm", "seconds": a.seconds, "sched": a.sched, **res}
        print(json.dumps(out, default=float), flush=True)


if __name__ == "__main__":
    main()
