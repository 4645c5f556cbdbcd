"""Child processes for the shared-memory tests: a writer and a reader that really run apart.

``python tests/shm_procs.py writer --name S ...`` / ``reader --name S ...``. Both print ``ready``
once set up and take orders on stdin, so a test can line them up without sleeping. Sample k
carries the value k in every channel (int32) and the timestamp k / srate unless ``--paced``, so
a reader can check each row it got for tearing and each gap against its loss count.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from shared_utils.logging import configure_logging  # noqa: E402
from shared_utils.streams.shm import ShmReader, ShmWriter  # noqa: E402


def chunk(k0: int, n: int, ch: int) -> np.ndarray:
    return np.repeat(np.arange(k0, k0 + n, dtype=np.int32)[:, None], ch, axis=1)


def writer(a: argparse.Namespace) -> None:
    w = ShmWriter(a.name, a.ch, a.srate, "int32", capacity_s=a.capacity_s, lsl="off")
    print(f"ready {os.getpid()}", flush=True)
    sys.stdin.readline()
    t0 = time.monotonic()
    for i in range(a.chunks):
        k0 = i * a.chunk
        if a.paced:
            wait = t0 + (k0 + a.chunk) / a.srate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            w.push_chunk(chunk(k0, a.chunk, a.ch))
        else:
            w.push_chunk(chunk(k0, a.chunk, a.ch), np.arange(k0, k0 + a.chunk) / a.srate)
    if a.torn:
        # Die the way a crashing source does: claim the next chunk, write half of it, and get
        # killed before the commit (what a real writer does between its two counter stores).
        view = w._view
        s, n = w.total, a.chunk
        view.hot[0] = s + n
        view.data[s % w.capacity : s % w.capacity + n // 2] = -1
        print("torn", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    print(f"done {w.total}", flush=True)
    if a.hold:
        sys.stdin.readline()
    w.close()


def reader(a: argparse.Namespace) -> None:
    r = ShmReader(a.name, start="oldest")
    print("ready", flush=True)
    buf = np.empty((4096, r.channels), dtype=r.dtype)
    got = 0
    while got < a.samples:
        got += r.pull_into(buf, timeout_s=1.0)
    print(json.dumps({"position": r.position, "got": got}), flush=True)
    if a.hang:
        sys.stdin.readline()  # hold the position until killed
    r.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["writer", "reader"])
    ap.add_argument("--name", required=True)
    ap.add_argument("--ch", type=int, default=8)
    ap.add_argument("--srate", type=float, default=10000.0)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--chunks", type=int, default=100)
    ap.add_argument("--capacity-s", type=float, default=1.0)
    ap.add_argument("--paced", action="store_true")
    ap.add_argument("--torn", action="store_true")
    ap.add_argument("--hold", action="store_true")
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--hang", action="store_true")
    a = ap.parse_args()
    configure_logging(f"shm_{a.role}", log_server="none")  # logs to stderr, stdout is for orders
    writer(a) if a.role == "writer" else reader(a)


if __name__ == "__main__":
    main()
