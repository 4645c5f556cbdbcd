"""Start-up time of the default mesh: first module launch to every module answering UP.

Loads config/default.toml, moves every port to a free one (so a running session does not
interfere), starts and stops the mesh ``--runs`` times and ends with one JSON line: each run's
total, the median, each module's own time to ready (median over runs), and the machine's load,
since parallel Python imports on few cores dominate the figure. Target: < 3 s.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from _common import ROOT

from shared_utils.streams.lsl import use_loopback  # noqa: E402

use_loopback()

from control_room.config import load_config  # noqa: E402
from control_room.room import ControlRoom  # noqa: E402


def one_run(config: Path, log_dir: str) -> tuple[float, dict[str, float]]:
    cfg = load_config(config)
    c = cfg.control
    c.port = c.pub_port = c.log_port = c.web_port = 0
    c.log_dir = log_dir
    c.marker_stream = f"bench_cr_{uuid.uuid4().hex[:6]}"
    for m in cfg.modules.values():
        m.port = 0
    room = ControlRoom(cfg)
    try:
        total = room.up()
        ready = {n: i["ready_s"] for n, i in room.module_info().items()}
    finally:
        room.down()
    return total, ready


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(ROOT / "config" / "default.toml"))
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.chdir(ROOT)
    totals: list[float] = []
    per_module: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as logs:
        for i in range(args.runs):
            total, ready = one_run(Path(args.config), logs)
            totals.append(total)
            for n, s in ready.items():
                per_module.setdefault(n, []).append(s)
            print(f"run {i + 1}: all ready in {total:.3f} s  {ready}", flush=True)
            time.sleep(0.5)  # let the previous mesh's processes finish exiting
    med = statistics.median(totals)
    print(
        json.dumps(
            {
                "bench": "control_room_startup",
                "config": os.path.relpath(args.config, ROOT),
                "runs_s": [round(t, 3) for t in totals],
                "median_s": round(med, 3),
                "target_s": 3.0,
                "meets_target": med < 3.0,
                "module_ready_median_s": {
                    n: round(statistics.median(v), 3) for n, v in per_module.items()
                },
                "cpus": os.cpu_count(),
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
