"""Log receiver burst: 50,000 records on one connection, ours against Dareplane's receiver.

Both receivers run in their own process with console output discarded and write their log file
as usual. One sender pushes the same pre-encoded burst (frames as our logger makes them, which
Dareplane's receiver also accepts) as fast as the receiver reads. We count the lines that reach
each receiver's file; rate = records received / time from first byte sent to last line written.
Target (issue 2): the whole burst arrives at >= 50,000 records/s. Ends with one JSON line.

    .venv/bin/python bench/log_receiver_bench.py [--records 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, free_port

from shared_utils.logging import encode_frame, wire_record  # noqa: E402

TARGET_RATE = 50_000

DAREPLANE_RECEIVER = """
import logging.handlers, sys
from pathlib import Path
from dareplane_utils.logging.server import LogRecordSocketReceiver
r = LogRecordSocketReceiver(host="127.0.0.1", port=int(sys.argv[1]), logfile=Path(sys.argv[2]))
r.serve_until_stopped()
"""


def burst(n: int) -> bytes:
    """n frames shaped like a busy module's records (event + a few key-values)."""
    frames = []
    for i in range(n):
        rec = wire_record(
            module="mock_eeg",
            logger="services.mock_eeg.core",
            levelno=20,
            event="chunk pushed",
            kv={"seq": i, "samples": 32, "stream": "mock_eeg", "lag_ms": 0.41},
            created=time.time(),
        )
        frames.append(encode_frame(rec))
    return b"".join(frames)


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"receiver on {port} did not come up")


class LineCounter:
    """Counts newlines appended to the newest file matching a pattern, reading only new bytes."""

    def __init__(self, folder: Path, pattern: str) -> None:
        self.folder, self.pattern = folder, pattern
        self.file = None
        self.count = 0

    def poll(self) -> int:
        if self.file is None:
            files = sorted(self.folder.glob(self.pattern)) if self.folder.exists() else []
            if not files:
                return 0
            self.file = open(files[-1], "rb")  # noqa: SIM115 - closed in close()
        self.count += self.file.read().count(b"\n")
        return self.count

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def run_one(argv: list[str], port: int, out: tuple[Path, str], data: bytes, n: int) -> dict:
    """Start a receiver, send the burst on one connection, watch its file until done or stalled."""
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_port(port, proc)
        sock = socket.create_connection(("127.0.0.1", port))
        send_error: list[str] = []

        def send() -> None:
            try:
                sock.sendall(data)
            except OSError as exc:  # the receiver dropped the connection
                send_error.append(str(exc))

        counter = LineCounter(*out)
        t0 = time.perf_counter()
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        last_count, last_change = 0, t0
        while True:
            count = counter.poll()
            now = time.perf_counter()
            if count != last_count:
                last_count, last_change = count, now
            if count >= n or now - last_change > 3.0:
                break
            time.sleep(0.005)
        sender.join(5.0)
        sock.close()
        counter.close()
        elapsed = last_change - t0
        return {
            "received": last_count,
            "lost": n - last_count,
            "elapsed_s": round(elapsed, 4),
            "records_per_s": round(last_count / elapsed) if elapsed > 0 else 0,
            "connection_dropped": bool(send_error),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50_000)
    n = ap.parse_args().records
    data = burst(n)
    py = sys.executable
    env_note = {
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews rates
        "frame_bytes_avg": round(len(data) / n),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        p1 = free_port()
        ours_dir = tmpdir / "ours"
        ours = run_one(
            [py, "-m", "shared_utils.log_receiver", "--port", str(p1), "--log-dir", str(ours_dir)],
            p1,
            (ours_dir, "*.jsonl"),
            data,
            n,
        )
        p2 = free_port()
        dp_log = tmpdir / "dareplane.log"
        theirs = run_one(
            [py, "-c", DAREPLANE_RECEIVER, str(p2), str(dp_log)],
            p2,
            (tmpdir, "dareplane.log"),
            data,
            n,
        )
    result = {
        "bench": "log_receiver_burst",
        "records": n,
        **env_note,
        "ours": ours,
        "dareplane": theirs,
        "target_records_per_s": TARGET_RATE,
        "pass": ours["received"] == n and ours["records_per_s"] >= TARGET_RATE,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
