"""Set-up the benchmark scripts share: the repo root on ``sys.path``, a loopback-only
environment, free ports and per-process CPU time.

The scripts run as ``python bench/x.py``, so Python puts ``bench/`` (not the repo root) on
``sys.path``; they import this module first (``from _common import ...``), and importing it puts
the repo root on ``sys.path`` so that ``services``, ``shared_utils`` and ``control_room`` import.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def loopback_env() -> None:
    """Keep LSL traffic on this machine and modules' logs off the network (unless the user set
    either), for this process and the modules it starts; call before pylsl is imported."""
    os.environ.setdefault("LSLAPICFG", str(ROOT / "config" / "lsl_loopback.cfg"))
    os.environ.setdefault("MESH_LOG_SERVER", "none")


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far, all threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
