"""How should a shared-memory reader learn that new data is there? Measured, not guessed.

A writer process publishes a sequence number and its send time (CLOCK_MONOTONIC, the LSL clock)
in a shared segment 1000 times a second and signals; a reader process waits, and on each wake-up
records now - send time. The reader's CPU (whole process, /proc) is taken over the same span.
Mechanisms, each a separate pair of processes:

- ``futex``: FUTEX_WAIT / FUTEX_WAKE on a 32-bit word in the segment (what the ring uses);
- ``eventfd``: ``os.eventfd`` handed to both processes; the reader blocks in ``read``;
- ``zmq_ipc``: ZeroMQ PUB/SUB over ``ipc://`` carrying (seq, time) (pyacq's design);
- ``poll_100us`` / ``poll_1ms``: the reader looks at the counter and sleeps 100 µs / 1 ms;
- ``spin``: the reader looks at the counter in a busy loop (one core at 100 %).

Run: ``python bench/shm_wakeup_bench.py [--seconds 5] [--only futex,eventfd]``. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import time
import uuid

import _common
import numpy as np  # noqa: E402

from shared_utils.streams.shm import _os  # noqa: E402

METHODS = ("futex", "eventfd", "zmq_ipc", "poll_100us", "poll_1ms", "spin")
RATE_HZ = 1000.0
WARMUP = 200
_clock = time.monotonic_ns


def _views(mm: mmap.mmap) -> tuple[np.ndarray, np.ndarray]:
    """(u64 [seq, t_sent_ns], the segment's address) over the shared page."""
    return np.frombuffer(mm, dtype=np.uint64, count=2, offset=8), _os.mapping_address(mm)


def writer(method: str, seg: str, efd: int, ipc: str, seconds: float) -> None:
    mm = _os.map_segment(_os.open_segment(seg))
    ctr, addr = _views(mm)
    word = np.frombuffer(mm, dtype=np.uint32, count=1, offset=0)
    fx = _os.Futex(addr)
    sock = None
    if method == "zmq_ipc":
        import zmq

        sock = zmq.Context.instance().socket(zmq.PUB)
        sock.bind(ipc)
    print("ready", flush=True)
    sys.stdin.readline()  # the reader is up
    n = int(seconds * RATE_HZ) + WARMUP
    t0 = time.monotonic()
    for k in range(1, n + 1):
        wait = t0 + k / RATE_HZ - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        t = _clock()
        ctr[1] = t
        ctr[0] = k
        if method == "futex":
            word[0] = k & 0xFFFFFFFF
            fx.wake()
        elif method == "eventfd":
            os.eventfd_write(efd, 1)
        elif sock is not None:
            sock.send(struct.pack("<QQ", k, t))
    ctr[0] = 0xFFFFFFFFFFFFFFFF  # end marker for the pollers
    if method == "futex":
        word[0] = 0
        fx.wake()
    elif method == "eventfd":
        os.eventfd_write(efd, 1)
    elif sock is not None:
        time.sleep(0.05)
        sock.send(struct.pack("<QQ", 0xFFFFFFFFFFFFFFFF, 0))
        time.sleep(0.05)


def reader(method: str, seg: str, efd: int, ipc: str) -> dict:
    mm = _os.map_segment(_os.open_segment(seg))
    ctr, addr = _views(mm)
    word = np.frombuffer(mm, dtype=np.uint32, count=1, offset=0)
    fx = _os.Futex(addr)
    end = 0xFFFFFFFFFFFFFFFF
    lat: list[float] = []
    seen = 0
    sock = None
    if method == "zmq_ipc":
        import zmq

        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(ipc)
        time.sleep(0.3)  # slow joiner
    print("ready", flush=True)
    cpu0, t0 = _common.proc_cpu_s(os.getpid()), time.monotonic()
    while True:
        if method == "futex":
            fx.wait(int(word[0]), 0.5)
        elif method == "eventfd":
            os.eventfd_read(efd)
        elif sock is not None:
            k, t = struct.unpack("<QQ", sock.recv())
            now = _clock()
            if k == end:
                break
            if k > WARMUP:
                lat.append((now - t) / 1e3)
            continue
        elif method == "poll_100us":
            time.sleep(100e-6)
        elif method == "poll_1ms":
            time.sleep(1e-3)
        k = int(ctr[0])
        if k == seen:
            continue
        now = _clock()
        if k == end:
            break
        seen = k
        if k > WARMUP:
            lat.append((now - int(ctr[1])) / 1e3)
    cpu = 100 * (_common.proc_cpu_s(os.getpid()) - cpu0) / (time.monotonic() - t0)
    a = np.asarray(lat)
    return {
        "n": len(a),
        "p50_us": float(np.percentile(a, 50)),
        "p99_us": float(np.percentile(a, 99)),
        "max_us": float(a.max()),
        "reader_cpu_pct": cpu,
    }


def run_method(method: str, seconds: float) -> dict:
    seg = f"clmesh-wakebench-{uuid.uuid4().hex[:8]}"
    os.close(_os.create_segment(seg, 4096))
    efd = os.eventfd(0)
    ipc = f"ipc://{tempfile.gettempdir()}/{seg}.ipc"
    common = ["--method", method, "--seg", seg, "--efd", str(efd), "--ipc", ipc]
    me = [sys.executable, __file__]
    procs: list[subprocess.Popen] = []
    try:
        w = subprocess.Popen(
            [*me, "--role", "writer", *common, "--seconds", str(seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, pass_fds=(efd,),
        )  # fmt: skip
        procs.append(w)
        r = subprocess.Popen(
            [*me, "--role", "reader", *common], stdout=subprocess.PIPE, text=True, pass_fds=(efd,)
        )
        procs.append(r)
        assert w.stdout
        assert r.stdout
        assert w.stdin
        assert w.stdout.readline().strip() == "ready"
        assert r.stdout.readline().strip() == "ready"
        w.stdin.write("go\n")
        w.stdin.flush()
        w.wait(seconds + 60)
        out = json.loads(r.stdout.readline())
        r.wait(10)
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        os.close(efd)
        _os.unlink_segment(seg)
        if os.path.exists(ipc[6:]):
            os.unlink(ipc[6:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="main", choices=["main", "writer", "reader"])
    ap.add_argument("--method", default="futex")
    ap.add_argument("--seg", default="")
    ap.add_argument("--efd", type=int, default=-1)
    ap.add_argument("--ipc", default="")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--only", default=",".join(METHODS))
    a = ap.parse_args()
    if a.role == "writer":
        writer(a.method, a.seg, a.efd, a.ipc, a.seconds)
        return
    if a.role == "reader":
        print(json.dumps(reader(a.method, a.seg, a.efd, a.ipc)), flush=True)
        return
    _os.check_supported()
    res = {}
    print(f"load average before: {os.getloadavg()}")
    for m in [x.strip() for x in a.only.split(",") if x.strip()]:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}; choose from {METHODS}")
        r = run_method(m, a.seconds)
        res[m] = r
        print(
            f"{m:11s} n={r['n']:6d}  p50 {r['p50_us']:8.1f} µs  p99 {r['p99_us']:8.1f} µs  "
            f"max {r['max_us']:9.1f} µs  reader CPU {r['reader_cpu_pct']:5.1f} %",
            flush=True,
        )
    print(json.dumps({"bench": "shm_wakeup", "rate_hz": RATE_HZ, "seconds": a.seconds,
                      "loadavg": os.getloadavg(), **res}))  # fmt: skip


if __name__ == "__main__":
    main()
