"""Recording after recording, the recorder gives its LSL inlets back (threads, sockets, ports)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pylsl

from shared_utils.client import ModuleClient


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _settled_threads(pid: int) -> int:
    """Thread count once it stops changing (liblsl winds inlets down asynchronously)."""
    last, stable_since = _threads(pid), time.monotonic()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = _threads(pid)
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 1.0:
            break
    return last


def test_start_stop_cycles_do_not_accumulate_inlets(
    module_process, lsl_name: str, tmp_path: Path
) -> None:
    """Five recordings of two streams leave the recorder with the threads it had after one."""
    proc, port = module_process("services.recorder", "--data-dir", str(tmp_path))
    eeg = pylsl.StreamOutlet(pylsl.StreamInfo(lsl_name, "EEG", 4, 100, "float32", f"{lsl_name}-a"))
    mk = pylsl.StreamOutlet(
        pylsl.StreamInfo(f"{lsl_name}_m", "Markers", 1, 0, "string", f"{lsl_name}-b")
    )
    counts = []
    with ModuleClient("127.0.0.1", port, timeout=20) as c:
        for i in range(5):
            c.send("START", file=f"r{i}.xdf", streams=[lsl_name, f"{lsl_name}_m"])
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                eeg.push_chunk(np.zeros((10, 4), dtype=np.float32))
                mk.push_sample(["x"])
                status = c.send("STATUS")
                if status.get("counts", {}).get(lsl_name, 0) > 0 and not status["waiting_for"]:
                    break
                time.sleep(0.05)
            res = c.send("STOP")
            assert res["counts"][lsl_name] > 0
            counts.append(_settled_threads(proc.pid))
    assert counts[-1] <= counts[0], f"threads after each recording: {counts}"
