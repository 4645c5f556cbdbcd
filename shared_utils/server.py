"""DefaultServer: the TCP module server every service is built on.

A Dareplane module's ``api/server.py`` ports by changing its import::

    server = DefaultServer(port, ip="127.0.0.1", pcommand_map={"START": start}, name="mymodule")
    server.init_server()
    server.start_listening()   # blocks until CLOSE, SIGTERM or SIGINT

Design: one I/O thread accepts connections and serves those that only send health checks
(``UP``) through a selector, so many clients polling ``UP`` cost no thread switches. From its
first other command on, a connection gets its own thread that reads, runs its commands in order
and writes their replies, so a slow command never delays another connection. Framing and parsing live in :mod:`shared_utils.protocol`,
argument checks in :mod:`shared_utils.commands`, background work in :mod:`shared_utils.tasks`. The
process's main thread stays free for GUI work queued with ``tasks.run_on_main_thread``. No client
input can stop the server except ``CLOSE``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import select
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from shared_utils import __version__
from shared_utils.commands import Command, make_command, resolve_name, unknown_command_message
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger
from shared_utils.protocol import (
    Framer,
    LineTooLong,
    Mode,
    ProtocolError,
    Request,
    encode_reply,
    parse_request,
)
from shared_utils.tasks import Task, TaskManager

log = get_logger("shared_utils.server")

# Dareplane's GET_PCOMMS lists these after the module's own commands, in this order.
DAREPLANE_BUILTINS = ["STOP", "CLOSE", "GET_PCOMMS", "UP"]
OUR_BUILTINS = ["HELP", "STATUS", "AUTH", "SUBSCRIBE"]
# Built-ins that wrap a module's own command of the same name instead of being replaced by it.
_MERGED = ("STOP", "STATUS", "CLOSE")
TOKEN_ENV = "MESH_TOKEN"
RECV_BYTES = 65536  # reads by a connection's own thread
IO_RECV_BYTES = 4096  # reads by the I/O thread (mostly "UP\n"; a smaller buffer is cheaper)
MAX_CONNECTIONS = 512  # one thread each; beyond this a connection is told so and closed
_ROOT_LOG = logging.getLogger()  # configure_logging sets its level for the whole process
_LONE_UP = frozenset({b"UP\n", b"UP\r\n", b"UP;"})
_UNSET, _NEWLINE = Mode.UNSET, Mode.NEWLINE


def is_loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class _Connection:
    """Per-connection state: framer (mode), auth, subscription and a write lock."""

    def __init__(self, sock: socket.socket, peer: Any, authed: bool) -> None:
        self.sock = sock
        self.peer = peer
        self.framer = Framer()
        self.authed = authed
        self.subscribed = False
        self.write_lock = threading.Lock()
        # UP's reply bytes while this connection may take the I/O thread's shortest path
        # (authenticated, reply mode known, nothing half-received); None otherwise.
        self.up: bytes | None = None
        self.recv = sock.recv
        self.send_nowait = sock.send

    def send(self, data: bytes) -> None:
        with self.write_lock:
            _send_all(self.sock, data)


_GONE = object()  # an event for a socket unregistered earlier in the same batch


class _Poller:
    """Readiness for many sockets: epoll where available (cheapest per wake-up), else selectors."""

    def __init__(self) -> None:
        self._data: dict[int, Any] = {}
        self._ep = select.epoll() if hasattr(select, "epoll") else None
        self._sel = None if self._ep is not None else selectors.DefaultSelector()

    def register(self, sock: socket.socket, data: Any) -> None:
        fd = sock.fileno()
        self._data[fd] = data
        if self._ep is not None:
            self._ep.register(fd, select.EPOLLIN)
        else:
            assert self._sel is not None
            self._sel.register(fd, selectors.EVENT_READ)

    def unregister(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        self._data.pop(fd, None)
        if self._ep is not None:
            self._ep.unregister(fd)
        else:
            assert self._sel is not None
            self._sel.unregister(fd)

    def events(self, timeout: float) -> list[Any]:
        """The data of every registered socket that is ready to read."""
        data = self._data
        if self._ep is not None:
            get = data.get
            return [get(fd, _GONE) for fd, _ in self._ep.poll(timeout)]
        assert self._sel is not None
        return [data.get(k.fd, _GONE) for k, _ in self._sel.select(timeout)]

    def close(self) -> None:
        (self._ep or self._sel).close()  # type: ignore[union-attr]


def _send_all(sock: socket.socket, data: bytes, timeout_s: float = 30.0) -> None:
    """``sendall`` for non-blocking sockets: waits for room, gives up on a client that never reads."""
    try:
        n = sock.send(data)
    except BlockingIOError:
        n = 0
    if n == len(data):
        return
    view = memoryview(data)[n:]
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    deadline = time.monotonic() + timeout_s
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"client has not read its replies for {timeout_s} s")
        poller.poll(left * 1000)
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            continue


class DefaultServer:
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
        self.name = name
        self.version = version or __version__
        self.log = logger or log
        self.tasks = TaskManager()
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        # None: decided by the address (anything but loopback needs AUTH); True forces AUTH.
        self._require_auth = require_auth
        self.started = time.time()
        self._commands: dict[str, Command] = {
            k: make_command(k, f) for k, f in (pcommand_map or {}).items()
        }
        self._builtins: dict[str, Callable[..., Any]] = {
            "UP": self._cmd_up,
            "GET_PCOMMS": self._cmd_get_pcomms,
            "STOP": self._cmd_stop,
            "CLOSE": self._cmd_close,
            "HELP": self._cmd_help,
            "STATUS": self._cmd_status,
            "AUTH": self._cmd_auth,
            "SUBSCRIBE": self._cmd_subscribe,
        }
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._closed = threading.Event()
        self._conns: set[_Connection] = set()
        self._conns_lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self._io_thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._builtin_cmds = {k: make_command(k, f) for k, f in self._builtins.items()}
        self._local = threading.local()
        self._up_reply = encode_reply("UP", True, True)

    # -- public API ---------------------------------------------------------------------------
    def set_commands(self, pcommand_map: dict[str, Callable[..., Any]]) -> None:
        """Replace the module's commands (for command maps that need the server, e.g. its tasks)."""
        self._commands = {k: make_command(k, f) for k, f in pcommand_map.items()}

    @property
    def pcommands(self) -> list[str]:
        """All command names in Dareplane's GET_PCOMMS order, then ours."""
        names = list(self._commands)
        names += [b for b in DAREPLANE_BUILTINS + OUR_BUILTINS if b not in self._commands]
        return names

    @property
    def current_conn(self) -> socket.socket | None:
        """The socket of the connection whose command is running (Dareplane modules use it)."""
        conn = getattr(self._local, "conn", None)
        return conn.sock if conn is not None else None

    @property
    def requires_auth(self) -> bool:
        """True when every connection must send ``AUTH`` first (bound beyond loopback)."""
        if self._require_auth is not None:
            return self._require_auth
        return not is_loopback(self.ip)

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
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
            self._io_thread = threading.Thread(target=self._io_loop, name="io", daemon=True)
            self._io_thread.start()
            try:
                self.tasks.serve_main_thread(self._stop)
            finally:
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
            self._run_close_hook()
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
        raw = f"{target}|{cmd}|{json.dumps(kwargs)}".encode()
        n = self._broadcast(raw, lambda c: c.framer.mode is Mode.SEMICOLON)
        return n + self.send_event("callback", target=target, cmd=cmd, kwargs=kwargs)

    # -- socket loops -------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        # Only set the event here: queue operations are not safe inside a signal handler (the
        # main thread may hold the queue's lock); serve_main_thread polls the event.
        self._stop.set()
        self.log.info("signal received, shutting down", signal=signal.Signals(signum).name)

    def _io_loop(self) -> None:
        """Accept and read every connection that has sent only UPs so far; answer those UPs."""
        assert self._sock is not None
        assert self._wake_r is not None
        sel = _Poller()
        sel.register(self._sock, None)
        sel.register(self._wake_r, self._wake_r)
        stop, events, read_ready, wake = self._stop, sel.events, self._read_ready, self._wake_r
        lone_up, conn_cls, nbytes = _LONE_UP, _Connection, IO_RECV_BYTES
        try:
            while not stop.is_set():
                for c in events(0.5):
                    try:
                        if c.__class__ is conn_cls:
                            up = c.up
                            if up is None:
                                read_ready(sel, c, None)
                                continue
                            # The hot path: a health check on an idle connection (kept flat:
                            # it is most of what a module's server does).
                            try:
                                data = c.recv(nbytes)
                            except (BlockingIOError, InterruptedError):
                                continue
                            except OSError:
                                data = b""
                            if data not in lone_up or not c.write_lock.acquire(False):
                                read_ready(sel, c, data)
                                continue
                            try:
                                n = c.send_nowait(up)
                            except BlockingIOError:
                                n = 0
                            except OSError:
                                n = len(up)  # the connection is gone; the next read notices
                            finally:
                                c.write_lock.release()
                            if n != len(up):  # the client stopped reading: its own thread
                                sel.unregister(c.sock)  # finishes the reply
                                self._hand_off(c, [], unsent=up[n:])
                        elif c is None:
                            self._accept_ready(sel)
                        elif c is wake:
                            wake.recv(4096)
                    except Exception:  # never let one connection's trouble stop the loop
                        self.log.exception("I/O loop error", peer=str(getattr(c, "peer", "")))
        finally:
            sel.close()

    def _accept_ready(self, sel: _Poller) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: try again on the next event
                self.log.warning("accept failed", error=str(exc))
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = _Connection(conn, peer, authed=not self.requires_auth)
            with self._conns_lock:
                full = len(self._conns) >= self.max_connections
                if not full:
                    self._conns.add(c)
            if full:
                self.log.warning("too many connections, refusing one", peer=str(peer))
                msg = f"server full: {self.max_connections} connections open; close one and retry"
                try:
                    _send_all(conn, encode_reply("?", False, error=msg), timeout_s=0.5)
                except OSError:
                    pass
                conn.close()
                continue
            sel.register(conn, c)

    def _read_ready(self, sel: _Poller, c: _Connection, data: bytes | None) -> None:
        """Everything but the hot path: first bytes, partial or several commands, EOF."""
        c.up = None
        if data is None:
            try:
                data = c.recv(IO_RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
        if not data:
            sel.unregister(c.sock)
            self._drop(c)
            return
        framer = c.framer
        try:
            lines = framer.feed(data)
        except LineTooLong as exc:
            sel.unregister(c.sock)
            self._hand_off(c, exc.lines, too_long=str(exc))
            return
        for i, line in enumerate(lines):
            if line != b"UP" or not c.authed:
                sel.unregister(c.sock)
                self._hand_off(c, lines[i:])
                return
            unsent = self._send_up_inline(c)
            if unsent is not None:
                sel.unregister(c.sock)
                self._hand_off(c, lines[i + 1 :], unsent=unsent)
                return
        if c.authed and not framer.pending and framer.mode is not _UNSET:
            c.up = self._up_reply if framer.mode is _NEWLINE else b"1"

    def _send_up_inline(self, c: _Connection) -> bytes | None:
        """Write UP's reply without blocking the I/O thread; returns what could not be written."""
        data = self._up_reply if c.framer.mode is Mode.NEWLINE else b"1"
        if not c.write_lock.acquire(blocking=False):
            return data  # an event is being written to this connection right now
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            n = len(data)  # the connection is gone; the next read notices
        finally:
            c.write_lock.release()
        return None if n == len(data) else data[n:]

    def _hand_off(
        self,
        c: _Connection,
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
        self, c: _Connection, lines: list[bytes], unsent: bytes, too_long: str | None
    ) -> None:
        """A connection's own thread: blocking reads, commands in order, replies written here."""
        framer, stop, up_reply = c.framer, self._stop, self._up_reply
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
                if data in _LONE_UP and not framer.pending and c.authed:
                    if framer.mode is Mode.UNSET:
                        framer.mode = Mode.SEMICOLON if data == b"UP;" else Mode.NEWLINE
                    c.send(up_reply if framer.mode is Mode.NEWLINE else b"1")
                    continue
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

    def _serve_lines(self, c: _Connection, lines: list[bytes]) -> None:
        for line in lines:
            if line == b"UP" and c.authed:
                c.send(self._up_reply if c.framer.mode is Mode.NEWLINE else b"1")
                continue
            self._handle_line(c, line)
            if self._stop.is_set():
                break

    def _too_long(self, c: _Connection, message: str) -> None:
        self.log.warning("line too long, closing connection", peer=str(c.peer))
        self._reply(c, Request(cmd="?"), ok=False, error=message)
        _linger_close(c.sock)

    def _drop(self, c: _Connection) -> None:
        with self._conns_lock:
            self._conns.discard(c)
        try:
            c.sock.close()
        except OSError:
            pass

    def _reply(
        self, c: _Connection, req: Request, ok: bool, result: Any = None, error: str | None = None
    ) -> None:
        if c.framer.mode is Mode.SEMICOLON:
            if not ok:
                self.log.warning("command failed", cmd=req.cmd, error=error)
                return
            if req.cmd == "UP":
                c.send(b"1")
            elif req.cmd == "GET_PCOMMS":
                c.send("|".join(self.pcommands).encode())
            return
        try:
            c.send(encode_reply(req.cmd, ok, result, error, req.id, req.has_id))
        except OSError:
            pass

    def _handle_line(self, c: _Connection, line: bytes) -> None:
        try:
            req = parse_request(line)
        except ProtocolError as exc:
            self.log.warning("bad request", error=str(exc), peer=str(c.peer))
            req = exc.request or Request(cmd=_guess_cmd(line))
            self._reply(c, req, ok=False, error=str(exc))
            return
        ok, result, error = self.dispatch(req, c)
        self._reply(c, req, ok, result, error)
        if req.cmd == "CLOSE" and ok:
            self.request_stop()

    # -- dispatch -----------------------------------------------------------------------------
    def dispatch(
        self, req: Request, conn: _Connection | None = None
    ) -> tuple[bool, Any, str | None]:
        """Run one request; returns (ok, result, error). Never raises."""
        if conn is not None and not conn.authed and resolve_name(req.cmd, ["AUTH"]) is None:
            return False, None, 'authentication required: send AUTH|{"token": "..."} first'
        name = resolve_name(req.cmd, [*self._builtins, *self._commands])
        if name is None:
            return False, None, unknown_command_message(req.cmd, self.pcommands)
        req.cmd = name
        self._local.conn = conn
        try:
            if name in self._builtins and (name not in self._commands or name in _MERGED):
                builtin = self._builtin_cmds[name]
                if not builtin.accepts_any:
                    builtin.validate(req.kwargs)
                result = builtin.func(**req.kwargs)
            else:
                result = self._call(name, req.kwargs)
            return True, result, None
        except CommandError as exc:
            return False, None, str(exc)
        except Exception as exc:
            self.log.exception("command raised", cmd=name)
            return (
                False,
                None,
                f"{name} raised {type(exc).__name__}: {exc} (traceback in the module log)",
            )

    def _call(self, name: str, kwargs: dict[str, Any], arg_hint: str = "") -> Any:
        """Validate and run a module command; ``arg_hint`` is added to argument errors."""
        cmd = self._commands[name]
        try:
            cmd.validate(kwargs)
        except CommandError as exc:
            if not arg_hint:
                raise
            raise CommandError(f"{exc} ({arg_hint})") from None
        if _ROOT_LOG.isEnabledFor(logging.DEBUG):  # a structlog call costs µs even when filtered
            self.log.debug("command", cmd=name, kwargs=kwargs)
        return self._track(name, cmd.func(**kwargs))

    def _track(self, name: str, value: Any) -> Any:
        """Apply Dareplane's return conventions: (Thread, Event) and Popen become tracked tasks."""
        if isinstance(value, Task):
            return {"task": value.id, "name": value.name}
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[0], threading.Thread)
            and isinstance(value[1], threading.Event)
        ):
            task = self.tasks.adopt_thread(value[0], value[1], name)
            return {"task": task.id, "name": name}
        if isinstance(value, subprocess.Popen):
            task = self.tasks.adopt_process(value, name)
            return {"task": task.id, "name": name, "pid": value.pid}
        return value

    # -- built-in commands --------------------------------------------------------------------
    def _cmd_up(self) -> bool:
        """Health check: true while the server answers."""
        return True

    def _cmd_get_pcomms(self) -> list[str]:
        """Names of all commands (Dareplane's discovery)."""
        return self.pcommands

    def _cmd_stop(self, task: int | None = None, **kwargs: Any) -> Any:
        """Stop all running tasks (and the module's own STOP), or one task by id."""
        if task is not None:
            if not isinstance(task, int) or isinstance(task, bool):
                raise CommandError(
                    f"STOP: argument 'task' must be an integer task id, got {task!r}"
                )
            try:
                return self.tasks.stop(task)
            except KeyError:
                running = [t["id"] for t in self.tasks.list()]
                raise CommandError(
                    f"STOP: no task {task}; running tasks: {running or 'none'}"
                ) from None
        if kwargs and "STOP" not in self._commands:
            raise CommandError(
                f"STOP: unknown argument {', '.join(map(repr, kwargs))}; valid arguments: task"
            )
        own = (  # the module's STOP runs (and checks its arguments) before any task is stopped
            self._call("STOP", kwargs, arg_hint="STOP also takes task: one task id")
            if "STOP" in self._commands
            else None
        )
        stopped = self.tasks.stop_all()
        if isinstance(own, dict):
            return {**own, "stopped_tasks": stopped}
        return (
            {"stopped_tasks": stopped} if own is None else {"result": own, "stopped_tasks": stopped}
        )

    def _cmd_close(self, **kwargs: Any) -> dict[str, Any]:
        """Stop all tasks, release resources, then exit the process cleanly."""
        if "CLOSE" in self._commands:
            self._commands["CLOSE"].validate(kwargs)  # a typo must not shut the module down
        elif kwargs:
            raise CommandError(f"CLOSE: unknown argument {', '.join(kwargs)}; CLOSE takes none")
        self._run_close_hook(kwargs)
        stopped = self.tasks.stop_all()
        return {"closing": self.name, "stopped_tasks": stopped}

    def _run_close_hook(self, kwargs: dict[str, Any] | None = None) -> None:
        if "CLOSE" in self._commands and not getattr(self, "_close_hook_done", False):
            self._close_hook_done = True
            try:
                self._call("CLOSE", kwargs or {})
            except Exception:
                self.log.exception("module CLOSE hook failed")

    def _cmd_help(self, command: str | None = None) -> dict[str, Any]:
        """Each command with its arguments, defaults and first docstring line."""
        entries = [self._help_entry(n) for n in self.pcommands]
        if command is not None:
            found = [e for e in entries if e["name"] == resolve_name(command, self.pcommands)]
            if not found:
                raise CommandError(unknown_command_message(command, self.pcommands))
            return found[0]
        return {"module": self.name, "commands": entries}

    def _help_entry(self, name: str) -> dict[str, Any]:
        if name in self._commands and name not in _MERGED:
            return self._commands[name].help()
        entry = make_command(name, self._builtins[name]).help()
        if name in self._commands:
            own = self._commands[name].help()
            entry["kwargs"] = entry["kwargs"] + own["kwargs"]
            entry["doc"] = own["doc"] or entry["doc"]
        entry["kwargs"] = [k for k in entry["kwargs"] if k["name"] != "kwargs"]
        return entry

    def _cmd_status(self, **kwargs: Any) -> dict[str, Any]:
        """Module name, version, uptime, running tasks (plus the module's own status)."""
        status: dict[str, Any] = {
            "module": self.name,
            "version": self.version,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "tasks": self.tasks.list(),
            "connections": len(self._conns),
        }
        if "STATUS" in self._commands:
            own = self._call("STATUS", kwargs)
            if isinstance(own, dict):
                status.update({k: v for k, v in own.items() if k not in ("module", "version")})
            elif own is not None:
                status["state"] = own
        elif kwargs:
            raise CommandError(f"STATUS: unknown argument {', '.join(kwargs)}; STATUS takes none")
        return status

    def _cmd_auth(self, token: str) -> bool:
        """Authenticate this connection (needed when the server binds beyond loopback)."""
        if not isinstance(token, str):
            raise CommandError("AUTH: argument 'token' must be a string")
        if self.token is None:
            return True
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise CommandError("AUTH: wrong token")
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.authed = True
        return True

    def _cmd_subscribe(self, enable: bool = True) -> bool:
        """Receive unsolicited ``{"event": ...}`` lines (status changes, callbacks) on this connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.subscribed = bool(enable)
        return bool(enable)

    def _broadcast(self, data: bytes, pred: Callable[[_Connection], bool]) -> int:
        with self._conns_lock:
            targets = [c for c in self._conns if pred(c)]
        n = 0
        for c in targets:
            try:
                c.send(data)
                n += 1
            except OSError:
                pass
        return n


def _linger_close(sock: socket.socket, max_s: float = 2.0) -> None:
    """Half-close, then read and discard what the peer still sends (bounded in time).

    Closing a socket with unread input makes the kernel send RST, which can destroy the error
    reply before the client reads it; draining first lets the reply arrive.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + max_s
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(min(left, 0.5))
            if not sock.recv(RECV_BYTES):
                break
    except OSError:
        pass


def _guess_cmd(line: bytes) -> str:
    head = line.split(b"|", 1)[0][:64]
    try:
        text = head.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "?"
    return text if text and not text.startswith("{") else "?"
