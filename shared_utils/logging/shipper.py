"""LogShipper: frames to the log receiver from a background thread, never blocking the caller."""

from __future__ import annotations

import logging
import queue
import select
import socket
import threading
import time

from shared_utils.logging.peers import auth_frame, is_loopback
from shared_utils.logging.wire import encode_frame, wire_record


class LogShipper:
    """Send frames to the log receiver from a background thread; never block the caller.

    Frames wait in a bounded queue while the receiver is away and go out on reconnect. A frame
    that finds the queue full is dropped and counted; the next successful send is preceded by a
    warning record that says how many were lost. :meth:`close` flushes within a time bound.

    ``token``: sent as the first frame of every connection, ``{"mesh_auth": token}``, when the
    receiver is beyond loopback (a control room on another host accepts nothing else from us).
    """

    def __init__(
        self,
        address: tuple[str, int],
        module: str = "",
        queue_size: int = 10_000,
        connect_timeout: float = 1.0,
        send_timeout: float = 5.0,
        token: str | None = None,
    ) -> None:
        self.address = address
        self.token = token
        self.module = module
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.sent = 0
        self.dropped = 0
        self.connect_failures = 0
        self._reported = 0
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=max(1, queue_size))
        self._drop_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        """True while a connection to the receiver is open."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected (tests and start-up checks use it)."""
        return self._connected.wait(timeout)

    def submit(self, frame: bytes) -> bool:
        """Queue one frame; returns False (and counts it) when the queue is full or closed."""
        if not self._closing.is_set():
            try:
                self._queue.put_nowait(frame)
                return True
            except queue.Full:
                pass
        with self._drop_lock:
            self.dropped += 1
        return False

    def pending(self) -> int:
        """Frames waiting in the queue."""
        return self._queue.qsize()

    @property
    def unreported(self) -> int:
        """Records lost or still queued that the receiver has not been told about."""
        return self.dropped - self._reported + self._queue.qsize()

    def close(self, timeout: float = 1.0) -> None:
        """Flush what is queued (for at most ``timeout`` seconds), then stop the thread."""
        self._closing.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._disconnect()

    # -- sender thread ----------------------------------------------------------------------

    def _take(self, limit: int = 2000) -> list[bytes]:
        """Up to ``limit`` frames; waits briefly for the first unless closing (then no wait)."""
        try:
            if self._closing.is_set():
                batch = [self._queue.get_nowait()]
            else:
                batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        try:
            while len(batch) < limit:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _run(self) -> None:
        backoff = 0.05
        batch: list[bytes] = []
        while True:
            if not batch:
                batch = self._take()
                if not batch:
                    if self._closing.is_set():
                        return
                    continue
            if self._sock is not None and self._peer_closed():
                self._disconnect()  # the receiver went away: do not write into the void
            if self._sock is None and not self._connect():
                if self._closing.is_set():  # receiver gone at exit: give up, do not hang
                    with self._drop_lock:
                        self.dropped += len(batch)
                    return
                self._closing.wait(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            report, n_report = self._drop_report()
            try:
                assert self._sock is not None
                self._sock.sendall(report + b"".join(batch))
            except OSError:
                self._disconnect()
                continue
            self._reported += n_report
            self.sent += len(batch)
            batch = []

    def _connect(self) -> bool:
        try:
            sock = socket.create_connection(self.address, timeout=self.connect_timeout)
        except OSError:
            self.connect_failures += 1
            return False
        sock.settimeout(self.send_timeout)  # a receiver that stops reading cannot wedge us
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.token and not is_loopback(sock.getpeername()[0]):
            try:
                sock.sendall(auth_frame(self.token))
            except OSError:
                sock.close()
                self.connect_failures += 1
                return False
        self._sock = sock
        self._connected.set()
        return True

    def _peer_closed(self) -> bool:
        """The receiver never writes, so a readable socket means it closed or reset."""
        assert self._sock is not None
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
            return bool(readable)
        except (OSError, ValueError):
            return True

    def _disconnect(self) -> None:
        self._connected.clear()
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _drop_report(self) -> tuple[bytes, int]:
        """A warning frame for drops not yet reported (empty when there were none)."""
        n = self.dropped - self._reported
        if n <= 0:
            return b"", 0
        rec = wire_record(
            module=self.module,
            logger="shared_utils.logging",
            levelno=logging.WARNING,
            event="log records dropped",
            kv={"dropped": n, "dropped_total": self.dropped, "queue_size": self._queue.maxsize},
            created=time.time(),
        )
        return encode_frame(rec), n
