"""Data-layer benchmarks B1-B3 (definitions: LSL reference, section 6), peers in the same run.

B1 ingest ceiling: a flood source (64 ch float32, 1000-sample chunks, counter in channel 0); each
   consumer counts samples landing in its buffer over 6 s after 1 s warm-up; loss is checked
   exactly from the counter (counter advance minus samples received).
B2 push->visible latency: paced sources 64 ch @ 1 kHz (chunk 10) and 256 ch @ 5 kHz (chunk 50)
   stamp each chunk with local_clock(); the observer polls every 0.5 ms for a new newest sample
   and records local_clock() - its timestamp; CPU is the whole consumer process.
B3 window read: "last 1 s, all channels" from a 10 s buffer.

Arms: ours (shared_utils StreamWatcher, background thread; reads top up from liblsl), ours_nopull
(same, ``pull_on_read=False``: only the thread pulls), raw pylsl pull loop (dest_obj),
dareplane_utils StreamWatcher (update() in the loop), mne_lsl StreamLSL. Every source and every
consumer is its own process; producer and consumer share the machine's cores.

Run: ``python bench/stream_watcher_bench.py`` (a few minutes). The last line is one JSON object.
``--only B2`` runs a subset; ``--b2-rounds 3`` repeats B2 with the arms interleaved (order rotated
each round) and reports, per arm, the median over rounds of every figure (``rounds_median_ms``
lists the per-round medians).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import _common  # noqa: F401  (puts the repo root on sys.path)

from shared_utils.streams.lsl import use_loopback  # noqa: E402

use_loopback()  # before pylsl is imported anywhere (children inherit LSLAPICFG)

import numpy as np  # noqa: E402

WARMUP_S = 1.0
B1_S = 6.0
B1_ROUNDS = 2
B2_S = 5.0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(a: list[float], q: float) -> float:
    return float(np.percentile(a, q)) if a else float("nan")


def latency_stats(lat: list[float], cpu0: float | None, tc0: float | None) -> dict[str, Any]:
    """Latency percentiles (ms) and this process's CPU % since ``(cpu0, tc0)``, the moment the
    first latency after warm-up was taken (``cpu0`` None: none was, CPU % is nan)."""
    cpu1, tc1 = cpu_s(), time.monotonic()
    return {
        "n": len(lat),
        "median_ms": pct(lat, 50),
        "p95_ms": pct(lat, 95),
        "p99_ms": pct(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
        "cpu_pct": 100 * (cpu1 - cpu0) / (tc1 - tc0) if cpu0 is not None else float("nan"),
    }


# ------------------------------------------------------------------------------ sources
def run_source(mode: str, name: str, ch: int, srate: float, chunk: int, duration: float) -> None:
    import pylsl

    info = pylsl.StreamInfo(name, "EEG", ch, srate, pylsl.cf_float32, f"bench-{name}")
    out = pylsl.StreamOutlet(info, chunk_size=chunk, max_buffered=2)  # flood: cap outlet memory
    x = np.zeros((chunk, ch), dtype=np.float32)
    ramp = np.arange(chunk, dtype=np.float32)
    print("ready", flush=True)
    out.wait_for_consumers(30)
    end = time.monotonic() + duration
    k = 0
    if mode == "idle":
        while time.monotonic() < end:
            time.sleep(0.1)
        return
    t0 = pylsl.local_clock()
    while time.monotonic() < end:
        if mode == "paced":
            due = t0 + (k + chunk) / srate
            wait = due - pylsl.local_clock()
            if wait > 0:
                time.sleep(wait)
        x[:, 0] = ramp + k
        out.push_chunk(x, pylsl.local_clock())
        k += chunk


def start_source(mode: str, name: str, ch: int, srate: float, chunk: int, duration: float):
    p = subprocess.Popen(
        [sys.executable, __file__, "--role", "source", "--mode", mode, "--name", name]
        + ["--ch", str(ch), "--srate", str(srate), "--chunk", str(chunk)]
        + ["--duration", str(duration)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    return p


# ------------------------------------------------------------------------------ consumers
class Ours:
    def __init__(self, name: str, buf_s: float, mirror: bool = True, pull: bool = True) -> None:
        from shared_utils.stream_watcher import StreamWatcher

        self.sw = StreamWatcher(
            name, buf_s, background=True, timeout_s=10, mirror=mirror, pull_on_read=pull
        )
        self.sw.connect_to_stream()

    def count(self) -> int:
        return self.sw.total

    def newest(self) -> tuple[float, float]:
        d, t = self.sw.window(samples=1)
        return (float(d[-1, 0]), float(t[-1])) if len(t) else (-1.0, -1.0)

    def idle(self) -> None:
        time.sleep(0.05)

    def close(self) -> None:
        self.sw.close()


class Raw:
    """The floor: one blocking pull loop into a reused buffer (this is the whole consumer)."""

    def __init__(self, name: str, buf_s: float) -> None:
        import pylsl

        info = pylsl.resolve_byprop("name", name, timeout=10)[0]
        self.inlet = pylsl.StreamInlet(info, max_buflen=max(2, int(buf_s) + 1))
        self.inlet.open_stream(10)
        self.buf = np.empty((32768, info.channel_count()), dtype=np.float32)
        self.n = 0
        self.last = (-1.0, -1.0)

    def count(self) -> int:
        return self.n

    def newest(self) -> tuple[float, float]:
        return self.last

    def idle(self) -> None:
        _, ts = self.inlet.pull_chunk(
            timeout=0.2, max_samples=32768, dest_obj=self.buf, min_samples=1, as_numpy=True
        )
        if len(ts):
            self.n += len(ts)
            self.last = (float(self.buf[len(ts) - 1, 0]), float(ts[-1]))

    def close(self) -> None:
        self.inlet.close_stream()


class Dareplane:
    def __init__(self, name: str, buf_s: float) -> None:
        from dareplane_utils.stream_watcher.lsl_stream_watcher import StreamWatcher

        self.sw = StreamWatcher(name, buf_s)
        self.sw.connect_to_stream()
        self.n = 0

    def count(self) -> int:
        return self.sw.n_new

    def newest(self) -> tuple[float, float]:
        rb = self.sw.ring_buffer
        i = (rb.curr_i - 1) % len(rb.buffer_t)
        return float(rb.buffer[i, 0]), float(rb.buffer_t[i])

    def idle(self) -> None:
        self.sw.update()

    def close(self) -> None:
        self.sw.disconnect()


class Mne:
    def __init__(self, name: str, buf_s: float) -> None:
        import mne

        mne.set_log_level("ERROR")
        from mne_lsl.stream import StreamLSL

        self.n = 0
        self.s = StreamLSL(bufsize=buf_s, name=name)
        self.s.connect(timeout=10)
        self.s.add_callback(self._cb)

    def _cb(self, data, ts, info):
        self.n += ts.size
        return data, ts

    def count(self) -> int:
        return self.n

    def newest(self) -> tuple[float, float]:
        d, t = self.s.get_data(winsize=1.0 / self.s.info["sfreq"])
        return float(d[0, -1]), float(t[-1])

    def new_available(self) -> bool:
        return self.s.n_new_samples > 0

    def idle(self) -> None:
        time.sleep(0.05)

    def close(self) -> None:
        self.s.disconnect()


class OursNoMirror(Ours):
    """Ours without the mirrored ring: half the write traffic, wrapped windows are copies."""

    def __init__(self, name: str, buf_s: float) -> None:
        super().__init__(name, buf_s, mirror=False)


class OursNoPull(Ours):
    """Ours with reads that never pull: every sample waits for the background thread's wake-up."""

    def __init__(self, name: str, buf_s: float) -> None:
        super().__init__(name, buf_s, pull=False)


ARMS = {
    "ours": Ours,
    "ours_nomirror": OursNoMirror,
    "ours_nopull": OursNoPull,
    "raw": Raw,
    "dareplane": Dareplane,
    "mne": Mne,
}
B2_ARMS = ["raw", "ours", "ours_nopull", "ours_blocking", "dareplane", "mne"]


def arm_b1(impl: str, name: str, buf_s: float) -> dict[str, Any]:
    c = ARMS[impl](name, buf_s)
    end_warm = time.monotonic() + WARMUP_S
    while time.monotonic() < end_warm:
        c.idle()
    n0, (k0, _), cpu0, t0 = c.count(), c.newest(), cpu_s(), time.monotonic()
    while time.monotonic() - t0 < B1_S:
        c.idle()
    n1, (k1, _), cpu1, t1 = c.count(), c.newest(), cpu_s(), time.monotonic()
    c.close()
    got = n1 - n0
    return {
        "samples_per_s": got / (t1 - t0),
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "lost": int(k1 - k0) - got,
    }


def arm_b2(impl: str, name: str, buf_s: float, chunk: int) -> dict[str, Any]:
    import pylsl

    c = ARMS[impl](name, buf_s)
    lat: list[float] = []
    last_k = -1.0
    t_start = time.monotonic()
    cpu0 = tc0 = None
    discontinuities = 0
    prev_ts = None
    while time.monotonic() - t_start < WARMUP_S + B2_S:
        if impl == "raw":
            c.idle()  # blocking pull: returns as soon as data lands
        elif impl == "ours_blocking":
            pass
        else:
            if impl == "dareplane":
                c.idle()
            if impl == "mne" and not c.new_available():
                time.sleep(0.0005)
                continue
        k, ts = c.newest()
        now = pylsl.local_clock()
        # Count a chunk once its last sample is visible: the source stamps the last sample with
        # the push time and liblsl back-dates the others, so a partly delivered chunk would
        # read as a whole chunk period of latency.
        if k != last_k and ts > 0 and (int(k) + 1) % chunk == 0:
            if time.monotonic() - t_start > WARMUP_S:
                if cpu0 is None:
                    cpu0, tc0 = cpu_s(), time.monotonic()
                lat.append(1000 * (now - ts))
                if prev_ts is not None and ts < prev_ts:
                    discontinuities += 1
            last_k, prev_ts = k, ts
        if impl != "raw":
            time.sleep(0.0005)
    stats = latency_stats(lat, cpu0, tc0)
    c.close()
    return {**stats, "backwards": discontinuities}


def arm_b2_ours_blocking(name: str, buf_s: float, chunk: int) -> dict[str, Any]:
    """Ours, but the observer blocks on the watcher's condition instead of polling."""
    import pylsl

    c = Ours(name, buf_s)
    lat: list[float] = []
    t_start = time.monotonic()
    cpu0 = tc0 = None
    while time.monotonic() - t_start < WARMUP_S + B2_S:
        if not c.sw.wait_for_samples(c.sw.total + 1, 0.2):
            continue
        k, ts = c.newest()
        now = pylsl.local_clock()
        if (int(k) + 1) % chunk == 0 and time.monotonic() - t_start > WARMUP_S:
            if cpu0 is None:
                cpu0, tc0 = cpu_s(), time.monotonic()
            lat.append(1000 * (now - ts))
    stats = latency_stats(lat, cpu0, tc0)
    c.close()
    return stats


def time_us(fn, reps: int = 300) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        fn()
        ts.append(time.perf_counter_ns() - t)
    return float(np.median(ts) / 1000)


def arm_b3(name: str, ch: int, srate: int) -> dict[str, Any]:
    """Window-read cost; mne needs a connected StreamLSL (to an idle source) for its buffer."""
    from dareplane_utils.general.ringbuffer import RingBuffer as DpRing

    from shared_utils.streams.ring_buffer import RingBuffer

    n_keep, n_win = 10 * srate, srate
    rng = np.random.default_rng(0)
    block = rng.standard_normal((srate, ch)).astype(np.float32)
    slack = max(1024, srate // 2)  # what StreamWatcher uses at these rates
    res: dict[str, Any] = {}
    for label, mirror in (("ours", True), ("ours_nomirror", False)):
        rb = RingBuffer(n_keep, ch, slack=slack, mirror=mirror)
        for i in range(12):  # fill past capacity
            rb.add(block, np.arange(i * srate, (i + 1) * srate, dtype=float))
        while rb.pos < n_win:  # the last 1 s is contiguous in the ring
            rb.add(block[:100], np.zeros(100))
        res[f"{label}_view_us"] = time_us(lambda rb=rb: rb.last(n_win))
        res[f"{label}_copy_us"] = time_us(lambda rb=rb: rb.last(n_win, copy=True))
        while rb.pos >= n_win // 2:  # now the last 1 s wraps around the end of the ring
            rb.add(block[:100], np.zeros(100))
        res[f"{label}_wrapped_us"] = time_us(lambda rb=rb: rb.last(n_win))
    dp = DpRing((n_keep, ch))
    for _ in range(12):
        dp.add_samples(block, list(np.arange(srate, dtype=float)))
    res["dareplane_unfold_us"] = time_us(lambda: dp.unfold_buffer()[-n_win:], reps=30)
    m = Mne(name, 10.0)
    res["mne_get_data_us"] = time_us(lambda: m.s.get_data(1.0), reps=30)
    m.close()
    return res


# ----------------------------------------------------------------------------- orchestration
def run_arm(args: list[str], timeout: float = 120) -> dict[str, Any]:
    p = subprocess.run(
        [sys.executable, __file__, "--role", "arm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1])


def median_of_rounds(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over the rounds that produced it (errors kept if none did)."""
    ok = [r for r in rs if "median_ms" in r]
    if not ok:
        return rs[0]
    out: dict[str, Any] = {
        k: float(np.median([r[k] for r in ok])) for k in ok[0] if isinstance(ok[0][k], float | int)
    }
    out["rounds"] = len(ok)
    out["rounds_median_ms"] = [round(r["median_ms"], 4) for r in ok]
    out["rounds_cpu_pct"] = [round(r["cpu_pct"], 2) for r in ok]
    return out


def orchestrate(
    only: tuple[str, ...] = ("B1", "B2", "B3"), b2_rounds: int = 1, b2_arms: list[str] | None = None
) -> dict[str, Any]:
    results: dict[str, Any] = {b: {} for b in only}
    uid = os.getpid()
    # B1: one flood source per arm run (each consumer gets the source to itself). Arms are
    # interleaved over B1_ROUNDS rounds; the ceiling is the best round (noise only lowers it).
    arms = [("raw", 1.0), ("ours", 1.0), ("ours", 10.0), ("ours_nomirror", 1.0),
            ("ours_nomirror", 10.0), ("dareplane", 1.0), ("dareplane", 10.0), ("mne", 1.0),
            ("mne", 10.0)]  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {}
    for rnd in range(B1_ROUNDS if "B1" in only else 0):
        for impl, buf in arms:
            name = f"b1_{impl}_{int(buf)}_{uid}_{rnd}"
            src = start_source("flood", name, 64, 100_000.0, 1000, WARMUP_S + B1_S + 15)
            r = run_arm(["--bench", "B1", "--impl", impl, "--name", name, "--buf", str(buf)])
            src.kill()
            src.wait()
            runs.setdefault(f"{impl}_buf{int(buf)}s", []).append(r)
            print(f"B1 round {rnd} {impl:10s} buf {buf:4.0f} s: "
                  f"{fmt(r, 'samples_per_s', 1e-6, 'M/s')} cpu {fmt(r, 'cpu_pct')}%", flush=True)  # fmt: skip
    for key, rs in runs.items():
        ok = [r for r in rs if "samples_per_s" in r]
        best = max(ok, key=lambda r: r["samples_per_s"]) if ok else rs[0]
        results["B1"][key] = {**best, "rounds_samples_per_s": [r.get("samples_per_s") for r in rs]}
    # B2: paced sources; arms interleaved, their order rotated each round.
    arms2 = b2_arms or B2_ARMS
    b2_runs: dict[str, list[dict[str, Any]]] = {}
    for rnd in range(b2_rounds if "B2" in only else 0):
        for ch, sr, chunk in [(64, 1000, 10), (256, 5000, 50)]:
            for impl in arms2[rnd % len(arms2) :] + arms2[: rnd % len(arms2)]:
                name = f"b2_{impl}_{ch}_{uid}_{rnd}"
                src = start_source("paced", name, ch, float(sr), chunk, WARMUP_S + B2_S + 15)
                r = run_arm(["--bench", "B2", "--impl", impl, "--name", name, "--buf", "10",
                             "--chunk", str(chunk)])  # fmt: skip
                src.kill()
                src.wait()
                b2_runs.setdefault(f"{impl}_{ch}ch_{sr}hz", []).append(r)
                print(f"B2 round {rnd} {ch}ch@{sr}Hz {impl:13s}: median {fmt(r, 'median_ms')} p95 "
                      f"{fmt(r, 'p95_ms')} p99 {fmt(r, 'p99_ms')} max {fmt(r, 'max_ms')} ms, "
                      f"cpu {fmt(r, 'cpu_pct')}%", flush=True)  # fmt: skip
    for key, rs in b2_runs.items():
        results["B2"][key] = rs[0] if b2_rounds == 1 else median_of_rounds(rs)
    # B3: window reads.
    for ch, sr in [(64, 1000), (256, 5000)] if "B3" in only else []:
        name = f"b3_{ch}_{uid}"
        src = start_source("idle", name, ch, float(sr), 50, 60)
        r = run_arm(["--bench", "B3", "--name", name, "--ch", str(ch), "--srate", str(sr)])
        src.kill()
        src.wait()
        results["B3"][f"{ch}ch_{sr}hz"] = r
        print(f"B3 {ch}ch@{sr}Hz: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()
              if isinstance(v, float)), flush=True)  # fmt: skip
    results["ratios"] = ratios(results)
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    return results


def fmt(r: dict[str, Any], key: str, scale: float = 1.0, unit: str = "") -> str:
    v = r.get(key)
    return f"{v * scale:.3f}{unit}" if isinstance(v, float | int) else "n/a"


def ratios(res: dict[str, Any]) -> dict[str, float | None]:
    def get(*path: str) -> float | None:
        d: Any = res
        for p in path:
            d = d.get(p, {}) if isinstance(d, dict) else {}
        return d if isinstance(d, float | int) else None

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    out: dict[str, float | None] = {}
    for buf in (1, 10):
        ours = get("B1", f"ours_buf{buf}s", "samples_per_s")
        out[f"B1_ours_vs_raw_buf{buf}s"] = div(ours, get("B1", "raw_buf1s", "samples_per_s"))
        out[f"B1_ours_vs_dareplane_buf{buf}s"] = div(
            ours, get("B1", f"dareplane_buf{buf}s", "samples_per_s")
        )
        out[f"B1_ours_vs_mne_buf{buf}s"] = div(ours, get("B1", f"mne_buf{buf}s", "samples_per_s"))
        out[f"B1_ours_nomirror_vs_raw_buf{buf}s"] = div(
            get("B1", f"ours_nomirror_buf{buf}s", "samples_per_s"),
            get("B1", "raw_buf1s", "samples_per_s"),
        )
    for tag in ("64ch_1000hz", "256ch_5000hz"):
        ours = get("B2", f"ours_{tag}", "median_ms")
        out[f"B2_{tag}_median_dareplane_over_ours"] = div(
            get("B2", f"dareplane_{tag}", "median_ms"), ours
        )
        out[f"B2_{tag}_median_mne_over_ours"] = div(get("B2", f"mne_{tag}", "median_ms"), ours)
        out[f"B2_{tag}_median_ours_nopull_over_ours"] = div(
            get("B2", f"ours_nopull_{tag}", "median_ms"), ours
        )
    for tag in ("64ch_1000hz", "256ch_5000hz"):
        ours = get("B3", tag, "ours_wrapped_us")  # mirrored ring: the worst case is a view too
        out[f"B3_{tag}_dareplane_over_ours"] = div(get("B3", tag, "dareplane_unfold_us"), ours)
        out[f"B3_{tag}_mne_over_ours"] = div(get("B3", tag, "mne_get_data_us"), ours)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="main", choices=["main", "source", "arm"])
    ap.add_argument("--mode", default="paced")
    ap.add_argument("--bench", default="B1")
    ap.add_argument("--impl", default="ours")
    ap.add_argument("--name", default="bench")
    ap.add_argument("--ch", type=int, default=64)
    ap.add_argument("--srate", type=float, default=1000.0)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--buf", type=float, default=10.0)
    ap.add_argument("--only", default="B1,B2,B3", help="benchmarks to run, e.g. B2 or B1,B3")
    ap.add_argument("--b2-rounds", type=int, default=1, help="B2 repetitions (arms interleaved)")
    ap.add_argument("--b2-arms", default=None, help="comma-separated B2 arms (default: all)")
    a = ap.parse_args()
    if a.role == "source":
        run_source(a.mode, a.name, a.ch, a.srate, a.chunk, a.duration)
    elif a.role == "arm":
        if a.bench == "B1":
            r = arm_b1(a.impl, a.name, a.buf)
        elif a.bench == "B2" and a.impl == "ours_blocking":
            r = arm_b2_ours_blocking(a.name, a.buf, a.chunk)
        elif a.bench == "B2":
            r = arm_b2(a.impl, a.name, a.buf, a.chunk)
        else:
            r = arm_b3(a.name, a.ch, int(a.srate))
        print(json.dumps(r), flush=True)
    else:
        only = tuple(b.strip().upper() for b in a.only.split(",") if b.strip())
        bad = set(only) - {"B1", "B2", "B3"}
        if bad:
            ap.error(f"--only: unknown benchmark(s) {sorted(bad)}; choose from B1, B2, B3")
        arms2 = [x.strip() for x in a.b2_arms.split(",")] if a.b2_arms else None
        if arms2 and set(arms2) - set(B2_ARMS):
            ap.error(
                f"--b2-arms: unknown {sorted(set(arms2) - set(B2_ARMS))}; choose from {B2_ARMS}"
            )
        res = orchestrate(only, max(1, a.b2_rounds), arms2)
        print(json.dumps({"bench": "stream_watcher", **res}, default=float), flush=True)


if __name__ == "__main__":
    main()
