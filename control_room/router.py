"""Module-to-module callbacks: a module asks the control room to send a command to another module.

Two wire forms arrive on a dedicated listening connection per module:
- our modules, after ``SUBSCRIBE``: ``{"event": "callback", "target": ..., "cmd": ..., "kwargs": ...}``
  lines (newline mode);
- Dareplane modules (semicolon mode): unterminated ``target|CMD|{json}`` writes, possibly several
  in one read, on the connection the control room sends commands on. Unlike Dareplane's broker we parse JSON to its end instead of splitting on ``|``, so
  two callbacks in one read, or a payload containing ``|`` or ``1``, are not mangled.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from control_room.handle import ModuleHandle
from shared_utils.protocol import dareplane

Route = Callable[[str, str, str, dict[str, Any]], None]  # (source, target, cmd, kwargs)
_DECODER = json.JSONDecoder()
# Every socket operation here has a timeout: a module whose host vanished must never leave a
# write (a command, a health check) or the shutdown waiting forever.
IO_TIMEOUT_S = 1.0


class DareplaneLink:
    """The one connection to a Dareplane-dialect module: commands, UP and callbacks share it.

    dareplane-utils servers serve a single connection at a time, so a second connection (for
    health checks) would wait in the backlog forever; everything goes through this one, as in
    Dareplane's own control room.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._wlock = threading.Lock()
        self._cond = threading.Condition()
        self.pending_acks = 0
        self.acks = 0

    def write(self, data: bytes) -> None:
        """Send ``data``; ``OSError`` (a timeout too) if the module does not take it in time."""
        with self._wlock:
            self.sock.sendall(data)

    def up(self, timeout: float = 1.0) -> bool:
        """Send ``UP;`` and wait for its ``1``."""
        with self._cond:
            target = self.acks + self.pending_acks + 1
            self.pending_acks += 1
        try:
            self.write(b"UP;")
        except OSError:
            return False
        with self._cond:
            return self._cond.wait_for(lambda: self.acks >= target, timeout)

    def acked(self, n: int) -> None:
        if n:
            with self._cond:
                self.acks += n
                self.pending_acks -= n
                self._cond.notify_all()


class CallbackRouter:
    """One listener thread per ready module; calls ``route`` for each callback it reads."""

    def __init__(self, route: Route) -> None:
        self._route = route
        self._stop = threading.Event()
        self._socks: dict[str, socket.socket] = {}
        self._lock = threading.Lock()

    def attach(self, h: ModuleHandle) -> None:
        """Open the listening connection for ``h`` (called each time it becomes ready)."""
        offered = {c.upper() for c in h.commands}
        if h.protocol != "dareplane" and offered and "SUBSCRIBE" not in offered:
            return  # a module without SUBSCRIBE sends no callbacks (a minimal foreign module)
        try:
            sock = socket.create_connection((h.host, h.port), timeout=2.0)
            sock.settimeout(IO_TIMEOUT_S)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError:
            return
        with self._lock:
            old = self._socks.pop(h.name, None)
            self._socks[h.name] = sock
        if old is not None:
            old.close()
        if h.protocol == "dareplane":
            link = DareplaneLink(sock)
            h.link = link
            target, args, thread_name = self._listen_dareplane, (h.name, link), f"link-{h.name}"
        else:
            target, args = self._listen_json, (h.name, sock, h.auth_request())
            thread_name = f"callbacks-{h.name}"
        threading.Thread(target=target, args=args, name=thread_name, daemon=True).start()

    def _listen_json(self, name: str, sock: socket.socket, auth: bytes) -> None:
        try:
            # AUTH first when the module has a token (its reply, like SUBSCRIBE's, is skipped below)
            sock.sendall(auth + b"SUBSCRIBE\n")
            buf = b""
            for data in self._received(sock):
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

    def _listen_dareplane(self, name: str, link: DareplaneLink) -> None:
        sock = link.sock
        try:
            sock.settimeout(0.3)
            try:  # greeting, if any
                data = sock.recv(4096)
            except TimeoutError:
                data = b""
            text = dareplane.split_banner(data)[1].decode(errors="replace")
            sock.settimeout(IO_TIMEOUT_S)
            text = self._route_dareplane(name, link, text)
            for data in self._received(sock):
                text = self._route_dareplane(name, link, text + data.decode(errors="replace"))
        except OSError:
            return
        finally:
            sock.close()

    def _route_dareplane(self, name: str, link: DareplaneLink, text: str) -> str:
        """Route the complete callbacks in ``text``, count its acks; returns the unparsed rest."""
        callbacks, rest, acks = dareplane.parse_callbacks(text, link.pending_acks)
        link.acked(acks)
        for target, cmd, kwargs in callbacks:
            self._route(name, target, cmd, kwargs)
        return rest

    def _received(self, sock: socket.socket) -> Iterator[bytes]:
        """What ``sock`` delivers until the router stops or the peer closes (timeouts re-check)."""
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            yield data

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
