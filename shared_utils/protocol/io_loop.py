"""The I/O thread of :class:`~shared_utils.protocol.server.DefaultServer`: accept connections and
serve the ones that have only sent health checks, from one selector.

Health checks (``UP``) are most of what a module's server does: answering them here, with no
thread switch and no parsing, keeps a module cheap to watch. A connection leaves this loop for its
own thread (``_hand_off``) as soon as it sends anything else. A base class rather than an object so
the hot path pays no extra attribute lookups; the state it uses is created by
``DefaultServer.__init__`` and ``init_server``.
"""

from __future__ import annotations

import socket

from shared_utils.protocol.connection import Connection, Poller, send_all
from shared_utils.protocol.framing import LineTooLong, Mode, encode_reply

IO_RECV_BYTES = 4096  # reads by the I/O thread (mostly "UP\n"; a smaller buffer is cheaper)
_LONE_UP = frozenset({b"UP\n", b"UP\r\n", b"UP;"})
_UNSET = Mode.UNSET


class IoLoop:
    """Accepting and the health-check fast path (see the module notes)."""

    def _io_loop(self) -> None:
        """Accept and read every connection that has sent only UPs so far; answer those UPs."""
        assert self._sock is not None
        assert self._wake_r is not None
        sel = Poller()
        sel.register(self._sock, None)
        sel.register(self._wake_r, self._wake_r)
        stop, events, read_ready, wake = self._stop, sel.events, self._read_ready, self._wake_r
        lone_up, conn_cls, nbytes = _LONE_UP, Connection, IO_RECV_BYTES
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
                            self._after_signal()
                    except Exception:  # never let one connection's trouble stop the loop
                        self.log.exception("I/O loop error", peer=str(getattr(c, "peer", "")))
        finally:
            sel.close()

    def _accept_ready(self, sel: Poller) -> None:
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
            c = Connection(conn, peer, authed=not self.requires_auth)
            with self._conns_lock:
                full = len(self._conns) >= self.max_connections
                if not full:
                    self._conns.add(c)
            if full:
                self.log.warning("too many connections, refusing one", peer=str(peer))
                msg = f"server full: {self.max_connections} connections open; close one and retry"
                try:
                    send_all(conn, encode_reply("?", False, error=msg), timeout_s=0.5)
                except OSError:
                    pass
                conn.close()
                continue
            sel.register(conn, c)

    def _read_ready(self, sel: Poller, c: Connection, data: bytes | None) -> None:
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
            c.up = self._up_bytes(c)

    def _send_up_inline(self, c: Connection) -> bytes | None:
        """Write UP's reply without blocking the I/O thread; returns what could not be written."""
        data = self._up_bytes(c)
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
