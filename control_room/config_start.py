"""How a module of the config is started: its starter key (module / cmd / attach / Dareplane's
kind), its CPU affinity and priority, and what makes it ready. Helpers of config.py's
``_module``, each reporting problems through the shared :class:`Checker`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from control_room.checker import Checker
from control_room.schema import (
    Ready,
)
from shared_utils.platform.processes import parse_sched


def resolve_dir(d: str, base: Path) -> str:
    """Dareplane resolves module dirs against the config's folder first, then the cwd."""
    p = Path(d)
    if p.is_absolute():
        return str(p)
    cand = (base / p).resolve()
    return str(cand if cand.exists() else Path.cwd() / p)


def scheduling_keys(
    ck: Checker, t: dict[str, Any], keys: tuple[Any, ...], mkind: str
) -> tuple[list[int] | None, int | None, str | None]:
    """``cpu_affinity`` (CPU numbers), ``nice`` (-20..19), ``sched`` ("fifo:50", "rr:10", "other",
    "batch", "idle"); whether this machine allows them is checked when the module starts."""
    given = [k for k in ("cpu_affinity", "nice", "sched") if k in t]
    if given and mkind == "attach":
        ck.error((*keys, given[0]), "only for modules the control room starts (not attach)")
    cpus = ck.get(t, keys, "cpu_affinity", list, None)
    if cpus is not None and (
        not cpus or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpus)
    ):
        ck.error((*keys, "cpu_affinity"), f"must be a non-empty list of CPU numbers, got {cpus!r}")
        cpus = None
    nice = ck.get(t, keys, "nice", int, None)
    if nice is not None and not -20 <= nice <= 19:
        ck.error((*keys, "nice"), f"must be -20..19 (lower runs first), got {nice}")
        nice = None
    sched = ck.get(t, keys, "sched", str, None)
    if sched is not None:
        try:
            parse_sched(sched)
        except ValueError as exc:
            ck.error((*keys, "sched"), str(exc))
            sched = None
    return cpus, nice, sched


def how_to_start(
    ck: Checker,
    keys: tuple[Any, ...],
    name: str,
    t: dict[str, Any],
    base: Path,
    root: str | None,
    legacy: str | None,
    remote: bool = False,
) -> tuple[str, list[str], str | None] | None:
    """(kind, argv, cwd) from the one starter key the table gives (module / cmd / attach / kind).

    ``remote``: the argv runs on another host, where this Python's path means nothing (the
    interpreter defaults to ``python3`` there) and relative paths are the far host's business.
    """
    python = "python3" if remote else sys.executable
    args = ck.str_list(t, keys, "args")
    flags = [f"--{k}={v}" for k, v in ck.get(t, keys, "kwargs", dict, {}).items()]
    cwd = ck.get(t, keys, "cwd", str, None)
    kind = ck.get(t, keys, "kind", str, None)
    starters = [k for k in ("module", "cmd", "attach", "kind") if k in t]
    if legacy == "exe":
        kind = "conn_only"
    elif legacy == "python":
        kind = "python"
    if len(starters) > 1 and not legacy:
        ck.error(keys, f"give only one of module / cmd / attach / kind, got {', '.join(starters)}")
        return None
    argv: list[str] = []
    if "module" in t:
        mod = ck.get(t, keys, "module", str, "")
        exe = ck.get(t, keys, "python_executable", str, python)
        argv = [exe, "-m", mod, "--port", "{port}", "--ip", "{host}", *args, *flags]
        mkind = "python"
    elif "cmd" in t:
        cmd = ck.str_list(t, keys, "cmd")
        if not cmd:
            ck.error((*keys, "cmd"), "must be a non-empty list: [executable, arg, ...]")
        argv = [*cmd, *args, *flags]
        mkind = "exec"
    elif "attach" in t:
        if ck.get(t, keys, "attach", bool, False) is not True:
            ck.error(
                (*keys, "attach"), "must be true (or remove it and say how to start the module)"
            )
        mkind = "attach"
    elif kind == "python":
        entry = ck.get(t, keys, "custom_entry_point", str, "api.server")
        exe = ck.get(t, keys, "python_executable", str, python)
        argv = [exe, "-m", entry, *args, "--ip={host}", "--port={port}", *flags]
        if cwd is None and not remote:
            cwd = str(Path(root or "..") / name)
        mkind = "python"
    elif kind == "exe":
        p = ck.get(t, keys, "path", str, None)
        if not p:
            ck.error((*keys, "path"), "kind = 'exe' needs path = '<executable>'")
        argv = [(p or "") if remote else resolve_dir(p or "", base), *args, *flags]
        mkind = "exec"
    elif kind == "conn_only":
        mkind = "attach"
    elif kind is not None:
        ck.error((*keys, "kind"), f"must be 'python', 'exe' or 'conn_only', got {kind!r}")
        return None
    else:
        ck.error(
            keys,
            "say how to start this module: module = 'services.x' (python -m), "
            "cmd = ['./prog', '--port', '{port}'] (any executable) or attach = true",
        )
        return None
    return mkind, argv, cwd


def ready_check(ck: Checker, t: dict[str, Any], keys: tuple[Any, ...]) -> Ready:
    timeout = ck.number(t, keys, "ready_timeout_s", 20.0, lo=0.1)
    r = t.get("ready", "up")
    rk = (*keys, "ready")
    if r == "up":
        return Ready(up=True, timeout_s=timeout)
    if r == "none":
        return Ready(up=False, timeout_s=timeout)
    if isinstance(r, dict):
        ck.unknown(r, rk, {"up", "stream", "timeout_s"})
        return Ready(
            up=ck.get(r, rk, "up", bool, True),
            stream=ck.get(r, rk, "stream", str, None),
            timeout_s=ck.number(r, rk, "timeout_s", timeout, lo=0.1),
        )
    ck.error(rk, f"must be 'up', 'none' or {{ stream = 'name' }}, got {r!r}")
    return Ready()
