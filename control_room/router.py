"""Module-to-module callbacks: a module asks the control room to send a command to another module.

Two wire forms arrive on a dedicated listening connection per module:
- our modules, after ``SUBSCRIBE``: ``{"event": "callback", "target": ..., "cmd": ..., "kwargs": ...}``
  lines (newline mode);
- Dareplane modules (semicolon mode): unterminated ``target|CMD|{json}`` writes, possibly several
  in one read. Unlike Dareplane's broker we parse JSON to its end instead of splitting on ``|``, so
  two callbacks in one read, or a payload containing ``|`` or ``1``, are not mangled.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any

from control_room.handle import ModuleHandle

Route = Callable[[str, str, str, dict[str, Any]], None]  # (source, target, cmd, kwargs)
_DECODER = json.JSONDecoder()


def parse_dareplane_callbacks(buf: str) -> tuple[list[tuple[str, str, dict[str, Any]]], str]:
    """Split ``buf`` into complete ``target|CMD|payload`` callbacks; returns (callbacks, rest)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    while True:
        buf = buf.lstrip(" \r\n\t;")
        if buf.startswith("1") and not buf[1:2].isalnum():
            buf = buf[1:]  # a stray UP acknowledgement
            continue
        parts = buf.split("|", 2)
        if len(parts) < 3:
            return out, buf
        target, cmd, rest = parts[0].strip(), parts[1].strip(), parts[2]
        body = rest.lstrip()
        if body.startswith("{"):
            try:
                kwargs, end = _DECODER.raw_decode(body)
            except json.JSONDecodeError:
                if any(c in body for c in "\n;") or len(body) > 1 << 20:
                    # malformed and terminated: drop up to the terminator
                    cut = min(i for i in (body.find("\n"), body.find(";")) if i >= 0)
                    buf = body[cut + 1 :]
                    continue
                return out, buf  # incomplete: wait for more bytes
            buf = body[end:]
            out.append((target, cmd, kwargs if isinstance(kwargs, dict) else {"value": kwargs}))
            continue
        # empty payload: ends at a terminator or the next callback's start
        cut = [i for i in (body.find(";"), body.find("\n")) if i >= 0]
        if not cut:
            if body.strip() == "":
                out.append((target, cmd, {}))
                return out, ""
            return out, buf
        out.append((target, cmd, {}))
        buf = body[min(cut) + 1 :]


class CallbackRouter:
    """One listener thread per ready module; calls ``route`` for each callback it reads."""

    def __init__(self, route: Route) -> None:
        self._route = route
        self._stop = threading.Event()
        self._socks: dict[str, socket.socket] = {}
        self._lock = threading.Lock()

    def attach(self, h: ModuleHandle) -> None:
        """Open the listening connection for ``h`` (called each time it becomes ready)."""
        try:
            sock = socket.create_connection((h.host, h.port), timeout=2.0)
        except OSError:
            return
        with self._lock:
            old = self._socks.pop(h.name, None)
            self._socks[h.name] = sock
        if old is not None:
            old.close()
        dareplane = h.protocol == "dareplane"
        if dareplane:
            wlock = threading.Lock()

            def write(data: bytes, sock: socket.socket = sock) -> None:
                with wlock:
                    sock.sendall(data)

            h.raw_writer = write
        target = self._listen_dareplane if dareplane else self._listen_json
        threading.Thread(
            target=target, args=(h.name, sock), name=f"callbacks-{h.name}", daemon=True
        ).start()

    def _listen_json(self, name: str, sock: socket.socket) -> None:
        try:
            sock.sendall(b"SUBSCRIBE\n")
            sock.settimeout(None)
            buf = b""
            while not self._stop.is_set():
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(msg, dict) and msg.get("event") == "callback":
                        kwargs = msg.get("kwargs") or {}
                        self._route(name, str(msg.get("target")), str(msg.get("cmd")), kwargs)
        except OSError:
            return
        finally:
            sock.close()

    def _listen_dareplane(self, name: str, sock: socket.socket) -> None:
        try:
            sock.settimeout(0.3)
            try:  # greeting, if any
                data = sock.recv(4096)
            except TimeoutError:
                data = b""
            text = data.partition(b"\n")[2].decode(errors="replace") if data.startswith(
                b"Connected to"
            ) else data.decode(errors="replace")
            sock.sendall(b";")  # an empty command: selects semicolon mode, gets no reply
            sock.settimeout(None)
            while not self._stop.is_set():
                callbacks, text = parse_dareplane_callbacks(text)
                for target, cmd, kwargs in callbacks:
                    self._route(name, target, cmd, kwargs)
                data = sock.recv(65536)
                if not data:
                    return
                text += data.decode(errors="replace")
        except OSError:
            return
        finally:
            sock.close()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            socks = list(self._socks.values())
            self._socks.clear()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
