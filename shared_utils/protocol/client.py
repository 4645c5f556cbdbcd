"""ModuleClient: send commands to any module on the protocol, ours or an unmodified Dareplane one.

``send`` returns the reply's result or raises :class:`CommandFailed` with the module's message.
A connection the module has closed (restart, idle drop) is noticed before sending and re-opened;
a command is never sent twice, so a connection lost after sending raises
:class:`ModuleUnreachable` (the command may or may not have run), as do timeouts.

Dareplane modules (dareplane-utils) greet with ``Connected to <name>\\n``, need ``;`` after every
command and answer only ``UP`` (``1``) and ``GET_PCOMMS`` (``A|B|...``). With
``protocol="auto"`` the client waits briefly for that greeting after connecting and switches to
that dialect when it sees one; pass ``protocol="json"`` to skip the wait for modules known to be ours.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import threading
import time
from collections import deque
from typing import Any, Literal

from shared_utils.errors import CommandFailed, ModuleError, ModuleUnreachable
from shared_utils.protocol import dareplane

Protocol = Literal["auto", "json", "dareplane"]


class ModuleClient:
    """A connection to one module (thread-safe: one request at a time)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        timeout: float = 5.0,
        protocol: Protocol = "auto",
        token: str | None = None,
        banner_wait_s: float = 0.15,
        connect_timeout: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        # A host that is gone answers no SYN: give up on connecting within seconds even when
        # replies may take long (FIT, a recording's STOP). None: the reply timeout.
        self.connect_timeout = connect_timeout
        self.protocol: Protocol = protocol
        self.token = token
        self.banner_wait_s = banner_wait_s
        self.banner: str | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=1000)
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    # -- connection ---------------------------------------------------------------------------
    def __enter__(self) -> ModuleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buf.clear()

    def abort(self) -> None:
        """Make a request waiting in another thread fail now (``ModuleUnreachable``) by shutting
        the connection down; for a supervisor that knows the module stopped answering."""
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def connect(self) -> None:
        """Open the connection (done lazily by ``send``)."""
        if self._sock is not None:
            return
        limit = self.timeout
        if self.connect_timeout is not None:
            limit = self.connect_timeout if limit is None else min(limit, self.connect_timeout)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=limit)
        except OSError as exc:
            raise ModuleUnreachable(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeout)
        self._sock = sock
        self._buf.clear()
        if self.protocol == "auto":
            self.protocol = "dareplane" if self._read_banner() else "json"
        elif self.protocol == "dareplane":
            self._read_banner()
        # A banner means dareplane-utils, which has no AUTH (and would log the line, token and all).
        if self.token and self.banner is None:
            try:
                self._request("AUTH", {"token": self.token})
            except ConnectionError as exc:
                self.close()
                raise ModuleUnreachable(
                    f"{self.host}:{self.port}: connection lost during AUTH ({exc})"
                ) from exc
            except BaseException:
                self.close()  # never leave an unauthenticated connection behind for the next call
                raise

    def _read_banner(self) -> bool:
        assert self._sock is not None
        self._sock.settimeout(self.banner_wait_s)
        try:
            data = self._sock.recv(4096)
        except TimeoutError:
            data = b""
        except OSError as exc:
            self.close()
            raise ModuleUnreachable(
                f"{self.host}:{self.port} dropped the connection: {exc}"
            ) from exc
        finally:
            if self._sock is not None:
                self._sock.settimeout(self.timeout)
        banner, rest = dareplane.split_banner(data)
        self._buf += rest
        if banner is None:
            return False
        self.banner = banner
        return True

    # -- requests -----------------------------------------------------------------------------
    def send(self, cmd: str, /, **kwargs: Any) -> Any:
        """Send ``cmd`` with keyword arguments; return the result or raise ``CommandFailed``."""
        return self.call(cmd, kwargs)

    def call(self, cmd: str, kwargs: dict[str, Any] | None = None) -> Any:
        """Like :meth:`send`, with the arguments as a dict (any names, including ``cmd``)."""
        kwargs = kwargs or {}
        with self._lock:
            for attempt in (0, 1):
                self.connect()
                if self._peer_closed():
                    self.close()  # stale connection: re-open before sending anything
                    continue
                try:
                    return self._request(cmd, kwargs)
                except _NotSent as exc:
                    self.close()
                    if attempt:
                        raise ModuleUnreachable(f"{self.host}:{self.port}: {exc}") from exc
                except ConnectionError as exc:
                    self.close()
                    raise ModuleUnreachable(
                        f"{self.host}:{self.port}: connection lost after sending {cmd} ({exc}); "
                        "it may or may not have run"
                    ) from exc
            raise ModuleUnreachable(f"{self.host}:{self.port}: connection closed on every attempt")

    def _peer_closed(self) -> bool:
        """True if the module has closed this connection (EOF or reset waiting to be read)."""
        if self._sock is None or self._buf:
            return False
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        if not poller.poll(0):
            return False  # nothing to read: the connection is open
        try:  # readable: data (events, late replies) or EOF; peeking cannot block now
            return self._sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def up(self) -> bool:
        """True if the module answers ``UP``; never raises."""
        try:
            return bool(self.send("UP"))
        except Exception:
            return False

    def _request(self, cmd: str, kwargs: dict[str, Any]) -> Any:
        if self.protocol == "dareplane":
            return self._request_dareplane(cmd, kwargs)
        assert self._sock is not None
        req_id = next(self._ids)
        line = json.dumps({"id": req_id, "cmd": cmd, "kwargs": kwargs}).encode() + b"\n"
        self._send_bytes(line)
        while True:
            raw = self._read_line()
            try:
                reply = json.loads(raw)
            except ValueError:
                reply = None
            if not isinstance(reply, dict):
                raise ModuleError(
                    f"{self.host}:{self.port} sent a line that is not a JSON reply: {raw[:80]!r} "
                    "(is it a module following docs/protocol.md?)"
                )
            if "event" in reply and "ok" not in reply:
                self.events.append(reply)
                continue
            if reply.get("id") not in (req_id, None):
                continue  # a late reply to an earlier, timed-out request
            if reply.get("ok"):
                return reply.get("result")
            raise CommandFailed(reply.get("cmd", cmd), reply.get("error", "unknown error"))

    def _request_dareplane(self, cmd: str, kwargs: dict[str, Any]) -> Any:
        try:
            line = dareplane.encode_command(cmd, kwargs, who=f"{self.host}:{self.port}")
        except dareplane.DialectError as exc:
            raise ModuleError(str(exc)) from None
        self._send_bytes(line)
        if cmd == "UP":
            return self._read_some() == b"1"
        if cmd == "GET_PCOMMS":
            return self._read_some().decode(errors="replace").split("|")
        return None  # Dareplane modules never answer other commands

    def _send_bytes(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise _NotSent(str(exc)) from exc

    def _read_line(self) -> bytes:
        assert self._sock is not None
        timeout = self.timeout if self.timeout is not None else float("inf")
        deadline = time.monotonic() + timeout
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[: i + 1]
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise ModuleUnreachable(
                    f"{self.host}:{self.port}: no reply within {self.timeout} s"
                )
            self._sock.settimeout(remaining if remaining != float("inf") else None)
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise ConnectionError(str(exc)) from exc
            if not data:
                raise ConnectionError("connection closed by the module")
            self._buf += data

    def _read_some(self) -> bytes:
        """Dareplane replies have no terminator: read what arrives, then a short quiet period."""
        assert self._sock is not None
        out = bytearray(self._buf)
        self._buf.clear()
        self._sock.settimeout(self.timeout)
        try:
            if not out:
                out += self._sock.recv(65536)
            self._sock.settimeout(0.05)
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
        except OSError as exc:
            raise ConnectionError(str(exc)) from exc
        finally:
            if self._sock is not None:
                self._sock.settimeout(self.timeout)
        return bytes(out)


class _NotSent(ConnectionError):
    """Sending failed, so the module cannot have received the command: safe to retry."""
