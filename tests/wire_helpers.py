"""Raw-socket helpers for the server tests: send bytes, read reply lines, wait on conditions."""

from __future__ import annotations

import json
import os
import socket
from functools import partial
from typing import Any

import helpers

# Generous per-read timeout: a hung server fails the test instead of hanging it. Nothing is
# asserted against wall-clock time.
READ_TIMEOUT_S = 20.0


class Wire:
    """One TCP connection to a module, read line by line."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=READ_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed by the server; unread: {bytes(self.buf)!r}")
            self.buf += data
        i = self.buf.index(b"\n")
        out = bytes(self.buf[:i])
        del self.buf[: i + 1]
        return out

    def reply(self) -> dict[str, Any]:
        return json.loads(self.line())

    def cmd(self, text: str, **kwargs: Any) -> dict[str, Any]:
        """Send ``text`` (plus ``|json`` of kwargs if any) in newline mode; return the reply."""
        payload = f"|{json.dumps(kwargs)}" if kwargs else ""
        self.send(f"{text}{payload}\n".encode())
        return self.reply()

    def read_until_closed(self) -> bytes:
        out = bytearray(self.buf)
        self.buf.clear()
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            out += data
        return bytes(out)

    def read_exact(self, n: int) -> bytes:
        out = bytearray(self.buf[:n])
        del self.buf[:n]
        while len(out) < n:
            data = self.sock.recv(n - len(out))
            if not data:
                break
            out += data
        return bytes(out)


wait_for = partial(helpers.wait_for, every=0.01)


def pid_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (absent or a zombie awaiting its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except ProcessLookupError:
        return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not pid_gone(pid)


def dareplane_server_class() -> Any:
    """dareplane-utils' DefaultServer, imported without leaving its logging set-up behind.

    Importing it runs ``logging.config.dictConfig`` (root console + socket handlers to port 9020,
    existing loggers disabled), which would leak into every later test in this process.
    """
    import logging
    import logging.handlers

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = logging.Logger.manager.loggerDict
    disabled = {n: lg.disabled for n, lg in loggers.items() if isinstance(lg, logging.Logger)}
    try:
        from dareplane_utils.default_server.server import DefaultServer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lg in list(loggers.items()):
            if not isinstance(lg, logging.Logger):
                continue
            if name in disabled:
                lg.disabled = disabled[name]
            if name.startswith("dareplane_utils"):  # no records to whatever listens on 9020
                lg.handlers = [
                    h for h in lg.handlers if not isinstance(h, logging.handlers.SocketHandler)
                ]
    return DefaultServer
