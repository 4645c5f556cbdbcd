"""Who holds a TCP port? Read from /proc so the answer needs no extra package.

Why: the most common start-up failure is a module left over from an earlier run still listening.
"port 8101 in use" is not actionable; "port 8101 is held by pid 4242 (python -m services.recorder)"
is. /proc/net/tcp{,6} gives the socket inode of each listener, and /proc/<pid>/fd links name the
inodes a process holds. Processes of other users cannot be inspected; then only the port is named.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_LISTEN = "0A"


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (any address, IPv4 or IPv6)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != _LISTEN:
                continue
            local = parts[1]
            if int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return inodes


def pids_holding(inodes: set[str]) -> list[int]:
    """Processes with an open fd on one of ``inodes``."""
    if not inodes:
        return []
    targets = {f"socket:[{i}]" for i in inodes}
    pids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in targets:
                        pids.append(int(entry.name))
                        break
                except OSError:
                    continue
    return pids


def cmdline(pid: int) -> str:
    """The command line of ``pid`` as one string ('' when unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(p.decode(errors="replace") for p in raw.split(b"\0") if p)


def port_holder(port: int) -> str | None:
    """A human description of who listens on ``port``, or None when nobody does."""
    inodes = listening_inodes(port)
    if not inodes:
        return None
    pids = pids_holding(inodes)
    if not pids:
        return f"port {port} is held by a process this user cannot inspect"
    who = ", ".join(f"pid {p} ({cmdline(p)[:160] or '?'})" for p in pids)
    return f"port {port} is held by {who}"


def port_in_use(host: str, port: int) -> bool:
    """True when binding ``host:port`` fails (covers ports held by other users too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the module binds it right after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
