"""Per-connection state and the socket helpers the transport needs (no protocol logic here)."""

from __future__ import annotations

import collections
import select
import selectors
import socket
import threading
import time
from typing import Any

from shared_utils.protocol.framing import Framer

RECV_BYTES = 65536  # reads by a connection's own thread
OUTBOX_BYTES = 8 << 20  # unsent event bytes one slow client may hold before it is disconnected


class Connection:
    """Per-connection state: framer (mode), auth, subscription and a write lock.

    It is the dispatcher's ``Session`` (``authed``, ``subscribed``).
    """

    def __init__(self, sock: socket.socket, peer: Any, authed: bool) -> None:
        self.sock = sock
        self.peer = peer
        self.framer = Framer()
        self.authed = authed
        self.subscribed = False
        self.auth_failures = 0
        self.closing = False  # close after the reply being written (e.g. too many wrong tokens)
        self.write_lock = threading.Lock()
        # UP's reply bytes while this connection may take the I/O thread's shortest path
        # (authenticated, reply mode known, nothing half-received); None otherwise.
        self.up: bytes | None = None
        self.recv = sock.recv
        self.send_nowait = sock.send
        self._outbox: collections.deque[bytes] = collections.deque()
        self._outbox_cond = threading.Condition()
        self._outbox_dead = False
        self._unsent = 0  # bytes pushed and not yet handed to the kernel
        self._writer: threading.Thread | None = None

    def send(self, data: bytes) -> None:
        """Write ``data`` (a reply) after any events queued before it, so order is kept."""
        with self.write_lock:
            queued = 0
            if self._outbox:
                with self._outbox_cond:
                    queued = sum(map(len, self._outbox))
                    data = b"".join(self._outbox) + data
                    self._outbox.clear()
            send_all(self.sock, data)
            if queued:
                with self._outbox_cond:
                    self._unsent -= queued

    def push(self, data: bytes) -> bool:
        """Queue an unsolicited line (event, callback) without waiting; False if it was dropped.

        Each receiving connection has its own writer thread and a bounded queue, so a client that
        stops reading costs nobody else anything: the sender never blocks, and a client more than
        ``OUTBOX_BYTES`` behind (queued or stuck in the socket) is disconnected: it has lost events
        and must reconnect and resync.
        """
        with self._outbox_cond:
            if self._outbox_dead:
                return False
            if self._unsent + len(data) > OUTBOX_BYTES:
                self._outbox_dead = True
                self._outbox_cond.notify()
                _shut(self.sock)
                return False
            self._outbox.append(data)
            self._unsent += len(data)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._pump, name=f"events-{self.peer}", daemon=True
                )
                self._writer.start()
            self._outbox_cond.notify()
        return True

    def _pump(self) -> None:
        """The writer thread: sends queued lines in order until the connection goes away."""
        while True:
            with self._outbox_cond:
                while not self._outbox and not self._outbox_dead:
                    self._outbox_cond.wait()
                if self._outbox_dead:
                    return
            try:
                self.send(b"")  # takes the write lock, then whatever is queued by then
            except (OSError, ValueError):  # timeout of a client that never reads; closed socket
                self.stop_pushing()
                _shut(self.sock)
                return

    def stop_pushing(self) -> None:
        """End the writer thread (the connection is closing)."""
        with self._outbox_cond:
            self._outbox_dead = True
            self._outbox.clear()
            self._outbox_cond.notify()


GONE = object()  # an event for a socket unregistered earlier in the same batch


class Poller:
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
            return [get(fd, GONE) for fd, _ in self._ep.poll(timeout)]
        assert self._sel is not None
        return [data.get(k.fd, GONE) for k, _ in self._sel.select(timeout)]

    def close(self) -> None:
        (self._ep or self._sel).close()  # type: ignore[union-attr]


def send_all(sock: socket.socket, data: bytes, timeout_s: float = 30.0) -> None:
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


def linger_close(sock: socket.socket, max_s: float = 2.0) -> None:
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


def _shut(sock: socket.socket) -> None:
    """Shut a socket down in both directions so its reader and writer threads wake and end."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
