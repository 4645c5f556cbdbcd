"""DefaultServer: the TCP transport every module is built on (listening, connections, framing,
writing replies). What a line means is decided by :mod:`shared_utils.protocol.dispatch`.

A Dareplane module's ``api/server.py`` ports by changing its import::

    server = DefaultServer(port, ip="127.0.0.1", pcommand_map={"START": start}, name="mymodule")
    server.init_server()
    server.start_listening()   # blocks until CLOSE, SIGTERM or SIGINT

Design: one I/O thread accepts connections and serves those that only send health checks
(``UP``) through a selector, so many clients polling ``UP`` cost no thread switches. From its
first other command on, a connection gets its own thread that reads, runs its commands in order
and writes their replies, so a slow command never delays another connection. A bare ``UP`` is
answered here, without dispatch (:meth:`DefaultServer._up_bytes`); everything else goes through
the dispatcher. The process's main thread stays free for GUI work queued with
``tasks.run_on_main_thread``. No client input can stop the server except ``CLOSE``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared_utils.logging import get_logger
from shared_utils.platform.processes import install_stop_signals
from shared_utils.protocol import dareplane
from shared_utils.protocol.connection import RECV_BYTES, Connection, linger_close
from shared_utils.protocol.dispatch import Dispatcher
from shared_utils.protocol.framing import LineTooLong, Mode, Request, encode_reply, looks_like_http
from shared_utils.protocol.io_loop import IoLoop

log = get_logger("shared_utils.server")

TOKEN_ENV = "MESH_TOKEN"
MAX_CONNECTIONS = 512  # one thread each; beyond this a connection is told so and closed


class CloseConnection(OSError):
    """This connection ends here (the peer spoke HTTP, or failed AUTH too often)."""


def is_loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class DefaultServer(IoLoop):
    """A module's command server (see module docstring)."""

    def __init__(
        self,
        port: int = 8080,
        ip: str = "127.0.0.1",
        pcommand_map: dict[str, Callable[..., Any]] | None = None,
        name: str = "default_server",
        version: str | None = None,
        token: str | None = None,
        logger: Any = None,
        require_auth: bool | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.port = port
        self.max_connections = max_connections
        self.ip = ip
        self.log = logger or log
        # None: decided by the address (anything but loopback needs AUTH); True forces AUTH.
        self._require_auth = require_auth
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._conns: set[Connection] = set()
        self._conns_lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self._io_thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._up_reply = encode_reply("UP", True, True)
        self._signalled: int | None = None  # set by the signal handler, read by the threads
        self.dispatcher = Dispatcher(
            name,
            version=version,
            token=token if token is not None else os.environ.get(TOKEN_ENV) or None,
            log=self.log,
            connections=lambda: len(self._conns),
        )
        self.dispatcher.set_commands(pcommand_map or {})
        self.tasks = self.dispatcher.tasks
        # Set by run_module from --data-dir / --allow-absolute-paths (see shared_utils.paths).
        self.data_dir: Path | None = None
        self.allow_absolute_paths = False

    # -- public API ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.dispatcher.name

    @property
    def version(self) -> str:
        return self.dispatcher.version

    @property
    def token(self) -> str | None:
        return self.dispatcher.token

    def set_commands(self, pcommand_map: dict[str, Callable[..., Any]]) -> None:
        """Replace the module's commands (for command maps that need the server, e.g. its tasks)."""
        self.dispatcher.set_commands(pcommand_map)

    @property
    def pcommands(self) -> list[str]:
        """All command names in Dareplane's GET_PCOMMS order, then ours."""
        return self.dispatcher.pcommands

    @property
    def current_conn(self) -> socket.socket | None:
        """The socket of the connection whose command is running (Dareplane modules use it)."""
        session = self.dispatcher.session
        return session.sock if isinstance(session, Connection) else None

    def dispatch(
        self, req: Request, conn: Connection | None = None
    ) -> tuple[bool, Any, str | None]:
        """Run one request as if it came from ``conn``; returns (ok, result, error)."""
        return self.dispatcher.dispatch(req, conn)

    @property
    def requires_auth(self) -> bool:
        """True when every connection must send ``AUTH`` first: bound beyond loopback, or a token
        was given (a token that is not enforced would be a false sense of safety)."""
        if self._require_auth is not None:
            return self._require_auth
        return not is_loopback(self.ip) or self.token is not None

    def init_server(self) -> None:
        """Bind and listen. Port 0 picks a free port (read it back from ``.port``)."""
        if self.requires_auth and not self.token:
            raise RuntimeError(
                f"refusing to bind {self.ip}: binding beyond loopback needs a token "
                f'(set ${TOKEN_ENV} or pass --token); clients then send AUTH|{{"token": ...}} first'
            )
        family = socket.AF_INET6 if ":" in self.ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.ip, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno, f"cannot bind {self.ip}:{self.port} for {self.name}: {exc.strerror}"
            ) from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._wake_r, self._wake_w = socket.socketpair()  # request_stop wakes the selector
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.log.info("listening", module=self.name, ip=self.ip, port=self.port)

    def start_listening(self) -> None:
        """Serve until CLOSE or a signal; then clean up. Blocks.

        On the main thread the I/O loop runs in a helper thread and the main thread executes
        work queued with ``tasks.run_on_main_thread`` (GUI toolkits need that thread).
        """
        if self._sock is None:
            self.init_server()
        if threading.current_thread() is threading.main_thread():
            install_stop_signals(self._on_signal)
            self._io_thread = threading.Thread(target=self._io_loop, name="io", daemon=True)
            self._io_thread.start()
            try:
                self.tasks.serve_main_thread(self._stop, also=self._signal_seen)
            finally:
                self._after_signal()
                self.shutdown()
        else:
            self._io_thread = threading.current_thread()
            try:
                self._io_loop()
            finally:
                self.shutdown()

    def start_in_thread(self) -> threading.Thread:
        """Serve from a background thread (tests, embedding); stop with ``request_stop()``."""
        if self._sock is None:
            self.init_server()
        t = threading.Thread(target=self.start_listening, name=f"{self.name}-server", daemon=True)
        t.start()
        return t

    def request_stop(self) -> None:
        """Ask the server to stop serving; ``start_listening`` then cleans up and returns."""
        self._stop.set()
        self.tasks.wake_main_thread()
        self._wake_io()

    def _wake_io(self) -> None:
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` finished (a plain read: safe from any thread, any time)."""
        return self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    def shutdown(self) -> None:
        """Stop tasks, run the module's CLOSE hook, close sockets. Idempotent."""
        self._stop.set()
        self._wake_io()
        io = self._io_thread
        if io is not None and io is not threading.current_thread():
            io.join(2.0)  # the selector is not used any more after this
        with self._shutdown_lock:
            if self._closed.is_set():
                return
            self.dispatcher.run_close_hook()
            self.tasks.stop_all()
            for s in (self._sock, self._wake_r, self._wake_w):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
            with self._conns_lock:
                conns = list(self._conns)
            for c in conns:
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                if c.sock.getblocking() is False:  # still on the I/O thread, which has ended
                    self._drop(c)
            self._closed.set()
            self.log.info("server closed", module=self.name)

    def send_event(self, event: str, **data: Any) -> int:
        """Push ``{"event": ..., ...}`` to connections that sent SUBSCRIBE; returns how many got it."""
        line = (
            json.dumps({"event": event, "module": self.name, **data}, default=str).encode() + b"\n"
        )
        return self._broadcast(line, lambda c: c.subscribed and c.framer.mode is not Mode.SEMICOLON)

    def send_callback(self, target: str, cmd: str, **kwargs: Any) -> int:
        """Ask the control room to run ``cmd`` on ``target`` (Dareplane's ``target|CMD|json``)."""
        raw = dareplane.encode_callback(target, cmd, kwargs)
        n = self._broadcast(raw, lambda c: c.framer.mode is Mode.SEMICOLON)
        return n + self.send_event("callback", target=target, cmd=cmd, kwargs=kwargs)

    # -- socket loops -------------------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        # Inside a signal handler: only store the number and poke the I/O thread's wake-up
        # socket. Setting an Event or logging takes locks, and a second signal arriving while the
        # first handler holds one would deadlock the process (it then never exits).
        self._signalled = signum
        self._wake_io()

    def _signal_seen(self) -> bool:
        """True once a stop signal arrived; the I/O thread or the main thread then shuts down."""
        return self._signalled is not None

    def _after_signal(self) -> None:
        """Called on a normal thread after a stop signal: log it and stop (safe to take locks)."""
        if self._signalled is not None and not self._stop.is_set():
            name = signal.Signals(self._signalled).name
            self.log.info("signal received, shutting down", signal=name)
            self.request_stop()

    def _hand_off(
        self,
        c: Connection,
        lines: list[bytes],
        unsent: bytes = b"",
        too_long: str | None = None,
    ) -> None:
        """Give the connection its own thread (it sent a command); the I/O thread lets go of it."""
        c.sock.setblocking(True)  # from now on only its own thread reads it
        threading.Thread(
            target=self._serve_connection,
            args=(c, lines, unsent, too_long),
            name=f"conn-{c.peer}",
            daemon=True,
        ).start()

    def _serve_connection(
        self, c: Connection, lines: list[bytes], unsent: bytes, too_long: str | None
    ) -> None:
        """A connection's own thread: blocking reads, commands in order, replies written here."""
        framer, stop = c.framer, self._stop
        try:
            if unsent:
                c.send(unsent)
            self._serve_lines(c, lines)
            if too_long is not None:
                self._too_long(c, too_long)
                return
            while not stop.is_set():
                try:
                    data = c.sock.recv(RECV_BYTES)
                except OSError:
                    break
                if not data:
                    break
                try:
                    lines = framer.feed(data)
                except LineTooLong as exc:
                    self._serve_lines(c, exc.lines)
                    self._too_long(c, str(exc))
                    break
                self._serve_lines(c, lines)
        except OSError:
            pass
        except Exception:  # a bug here must not leave the connection hanging
            self.log.exception("connection thread error", peer=str(c.peer))
        finally:
            self._drop(c)

    def _serve_lines(self, c: Connection, lines: list[bytes]) -> None:
        for line in lines:
            if line == b"UP" and c.authed:  # the health check skips parsing and dispatch
                c.send(self._up_bytes(c))
                continue
            if looks_like_http(line):
                self.log.warning(
                    "closed a connection that spoke HTTP (a web page or curl?); nothing was run",
                    peer=str(c.peer),
                )
                raise CloseConnection(f"{c.peer} spoke HTTP")
            self._handle_line(c, line)
            if self._stop.is_set():
                break

    def _too_long(self, c: Connection, message: str) -> None:
        self.log.warning("line too long, closing connection", peer=str(c.peer))
        self._reply(c, Request(cmd="?"), ok=False, error=message)
        linger_close(c.sock)

    def _drop(self, c: Connection) -> None:
        c.stop_pushing()
        with self._conns_lock:
            self._conns.discard(c)
        try:
            c.sock.close()
        except OSError:
            pass

    def _reply(
        self, c: Connection, req: Request, ok: bool, result: Any = None, error: str | None = None
    ) -> None:
        if c.framer.mode is Mode.SEMICOLON:
            if not ok:
                self.log.warning("command failed", cmd=req.cmd, error=error)
            reply = dareplane.semicolon_reply(req.cmd, ok, self.pcommands)
            if reply is not None:
                c.send(reply)
            return
        try:
            c.send(encode_reply(req.cmd, ok, result, error, req.id, req.has_id))
        except OSError:
            pass

    def _handle_line(self, c: Connection, line: bytes) -> None:
        req, ok, result, error = self.dispatcher.handle_line(line, c)
        self._reply(c, req, ok, result, error)
        if req.cmd == "CLOSE" and ok:
            self.request_stop()
        if c.closing:
            linger_close(c.sock)
            raise CloseConnection(f"closed {c.peer} after its reply")

    def _up_bytes(self, c: Connection) -> bytes:
        """What a bare ``UP`` gets on ``c`` (the transport answers it without dispatch; the reply
        is exactly what :meth:`Builtins.up` would give, in the connection's mode)."""
        return self._up_reply if c.framer.mode is Mode.NEWLINE else b"1"

    def _broadcast(self, data: bytes, pred: Callable[[Connection], bool]) -> int:
        """Queue ``data`` for every connection matching ``pred``; never waits for any of them."""
        with self._conns_lock:
            targets = [c for c in self._conns if pred(c)]
        return sum(c.push(data) for c in targets)
