"""Central log receiver: collects length-prefixed JSON log frames from every module.

Run it as ``python -m shared_utils.log_receiver --port 9020 --log-dir DIR``, or embed
:class:`LogReceiver` (the control room does, with ``on_record`` to show module logs).

Each run writes one JSON-lines file (``DIR/mesh-logs-<date>-<time>.jsonl``) with normalised
records, and optionally prints a readable line per record. Records from Dareplane's
``UJsonSocketHandler`` (unformatted ``msg`` + ``args``, values stringified) are normalised into the
same shape as ours. One thread serves all connections through a selector: one connection's garbage,
oversized frame or abrupt disconnect closes that connection only and is itself logged.

Off loopback (modules on other hosts log here) two checks guard the file: ``allow`` lists the
peer addresses accepted beyond loopback (the configured module hosts), and ``token`` makes such a
peer send ``{"mesh_auth": "<token>"}`` as its first frame. A peer on loopback needs neither (a
Dareplane module on this PC keeps working). An auth frame is never stored, token or not.
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from shared_utils.logging.peers import AUTH_KEY, PeerGate
from shared_utils.logging.records import Record, format_line, normalise
from shared_utils.logging.wire import MAX_FRAME_BYTES

__all__ = ["LogReceiver", "normalise", "format_line"]

_HEADER = struct.Struct(">L")
_DECODER = json.JSONDecoder()
_RECV_BYTES = 1 << 18


class _Conn:
    """Per-connection read buffer."""

    __slots__ = ("sock", "peer", "buf", "authed")

    def __init__(self, sock: socket.socket, peer: str, authed: bool = True) -> None:
        self.sock = sock
        self.peer = peer
        self.buf = bytearray()
        self.authed = authed


class LogReceiver:
    """Accept log frames on ``host:port``; write JSON lines, print, and call ``on_record``.

    ``port=0`` picks a free port (read it from :attr:`port` after :meth:`start`). ``on_record`` is
    called with each normalised record on the receiver thread, so it must be quick; its exceptions
    are counted, never fatal. ``console`` is a text stream for readable lines (None: silent).
    ``recent`` keeps the last ``recent`` records (a GUI can show them on connect). ``allow``:
    addresses accepted beyond loopback (None: any); ``token``: what such peers must send first;
    ``trust_loopback=False`` applies both to this PC's own peers too (a PC shared by users).
    Counters: ``records``, ``bad_frames``, ``connections``, ``refused``, ``callback_errors``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9020,
        log_dir: str | Path | None = None,
        on_record: Callable[[Record], None] | None = None,
        console: TextIO | None = None,
        max_frame: int = MAX_FRAME_BYTES,
        recent: int = 1000,
        allow: Collection[str] | None = None,
        token: str | None = None,
        trust_loopback: bool = True,
    ) -> None:
        self.host = host
        self.gate = PeerGate(allow, token, trust_loopback)
        self._requested_port = port
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.on_record = on_record
        self.console = console
        self.max_frame = max_frame
        self.path: Path | None = None
        self.records = 0
        self.bad_frames = 0
        self.connections = 0
        self.callback_errors = 0
        self.recent: deque[Record] = deque(maxlen=recent)
        self._listener: socket.socket | None = None
        self._file: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conns: dict[socket.socket, _Conn] = {}

    @property
    def port(self) -> int:
        """The bound port (differs from the requested one when that was 0)."""
        if self._listener is None:
            return self._requested_port
        return self._listener.getsockname()[1]

    def start(self) -> LogReceiver:
        """Bind, open the log file and serve on a background thread; raises OSError if busy."""
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            lst.bind((self.host, self._requested_port))
            lst.listen(128)
        except OSError:
            lst.close()
            raise
        lst.setblocking(False)
        self._listener = lst
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.path = self._new_path(self.log_dir)
            self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self._thread = threading.Thread(target=self._serve, name="log-receiver", daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _new_path(log_dir: Path) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = log_dir / f"mesh-logs-{stamp}.jsonl"
        n = 1
        while path.exists():
            n += 1
            path = log_dir / f"mesh-logs-{stamp}-{n}.jsonl"
        return path

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving, write what already arrived, close connections and the file. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            if self._thread is not threading.current_thread():
                self._thread.join(timeout)
        else:
            self._cleanup()  # never started serving: release the socket and file here

    def __enter__(self) -> LogReceiver:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def serve_forever(self) -> None:
        """Block until :meth:`close` (from another thread or a signal handler)."""
        if self._thread is None:
            self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(0.5)

    # -- receiver thread ----------------------------------------------------------------------

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        assert self._listener is not None
        sel.register(self._listener, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                self._round(sel, 0.1)
            # On close, keep what modules already sent: read until the sockets are idle.
            sel.unregister(self._listener)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and self._round(sel, 0.0):
                pass
        finally:
            sel.close()
            self._cleanup()

    def _round(self, sel: selectors.BaseSelector, timeout: float) -> bool:
        """One select round; returns whether any socket was ready."""
        out: list[Record] = []
        ready = sel.select(timeout=timeout)
        for key, _ in ready:
            if key.data is None:
                self._accept(sel)
            else:
                self._read(sel, key.data, out)
        if out:
            self._emit(out)
        return bool(ready)

    def _cleanup(self) -> None:
        """Release sockets and the file (on the serving thread, so no write races a close)."""
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        if self._listener is not None:
            self._listener.close()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self._listener is not None
        try:
            sock, addr = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        accepted, authed = self.gate.admit(addr[0])
        if not accepted:
            sock.close()
            self._refuse_note(
                addr[0], "address not in the allowed hosts ([control_room] log_allow)"
            )
            return
        sock.setblocking(False)
        conn = _Conn(sock, f"{addr[0]}:{addr[1]}", authed=authed)
        self._conns[sock] = conn
        self.connections += 1
        sel.register(sock, selectors.EVENT_READ, conn)

    @property
    def refused(self) -> int:
        """Connections refused (address not allowed, no or wrong auth frame)."""
        return self.gate.refused

    def _refuse_note(self, ip: str, why: str) -> None:
        if self.gate.first_refusal(ip):
            self._emit([self._own("warning", "log connection refused", peer=ip, reason=why)])

    def _drop(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        try:
            sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        self._conns.pop(conn.sock, None)

    def _read(self, sel: selectors.BaseSelector, conn: _Conn, out: list[Record]) -> None:
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # reset by peer and friends
            data = b""
            out.append(
                self._own("warning", "log connection failed", peer=conn.peer, error=str(exc))
            )
        if not data:
            if conn.buf:
                out.append(
                    self._own(
                        "warning",
                        "log connection closed mid-frame",
                        peer=conn.peer,
                        discarded_bytes=len(conn.buf),
                    )
                )
            self._drop(sel, conn)
            return
        buf = conn.buf
        buf += data
        pos, end = 0, len(buf)
        decode = _DECODER.raw_decode
        while end - pos >= 4:
            (n,) = _HEADER.unpack_from(buf, pos)
            if n > self.max_frame:
                self.bad_frames += 1
                out.append(
                    self._own(
                        "error",
                        "oversized log frame; connection closed",
                        peer=conn.peer,
                        frame_bytes=n,
                        limit=self.max_frame,
                    )
                )
                self._drop(sel, conn)
                return
            if end - pos - 4 < n:
                break
            body = buf[pos + 4 : pos + 4 + n]
            pos += 4 + n
            try:
                text = body.decode().strip()
                raw, stop = decode(text)  # raw_decode skips json.loads' per-call overhead
                if stop != len(text):
                    raise ValueError("extra data after the JSON object")
                if not isinstance(raw, dict):
                    raise ValueError("frame is not a JSON object")
                if AUTH_KEY in raw or not conn.authed:
                    why = self.gate.authenticate(raw, conn.authed)
                    if why is not None:
                        self._drop(sel, conn)
                        self._refuse_note(conn.peer.rsplit(":", 1)[0], why)
                        return
                    conn.authed = True
                    continue
                out.append(normalise(raw))
            except Exception as exc:  # garbage must never stop the receiver
                self.bad_frames += 1
                out.append(
                    self._own(
                        "warning",
                        "bad log frame skipped",
                        peer=conn.peer,
                        error=str(exc)[:200],
                        head=body[:60].decode("utf-8", "replace"),
                    )
                )
        if pos:
            del buf[:pos]

    def _own(self, level: str, event: str, **kv: Any) -> Record:
        """A record about the receiver itself (bad input, dropped connections)."""
        now = time.time()
        return {
            "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds"),
            "created": now,
            "level": level,
            "levelno": {"warning": 30, "error": 40}.get(level, 20),
            "module": "log_receiver",
            "logger": "shared_utils.log_receiver",
            "event": event,
            "kv": kv,
            "exc_text": None,
            "pid": None,
            "source": "receiver",
        }

    def _emit(self, records: list[Record]) -> None:
        """Write a batch: one file write and one console write per select round."""
        self.records += len(records)
        self.recent.extend(records)
        if self._file is not None:
            dumps = json.JSONEncoder(default=str, separators=(",", ":")).encode
            self._file.write(("\n".join(map(dumps, records)) + "\n").encode())
            self._file.flush()
        if self.console is not None:
            try:
                self.console.write("\n".join(map(format_line, records)) + "\n")
                self.console.flush()
            except (OSError, ValueError):
                self.console = None  # console gone (closed pipe): keep the file going
        if self.on_record is not None:
            for rec in records:
                try:
                    self.on_record(rec)
                except Exception:
                    self.callback_errors += 1


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m shared_utils.log_receiver --port 9020 --log-dir DIR``."""
    import click

    @click.command()
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
    @click.option("--port", default=9020, show_default=True, help="TCP port (0: pick a free one).")
    @click.option(
        "--log-dir", default="logs", show_default=True, help="Directory for the .jsonl file."
    )
    @click.option("--quiet", is_flag=True, help="Do not print records to the console.")
    def cli(host: str, port: int, log_dir: str, quiet: bool) -> None:
        """Receive module logs, write one JSON-lines file per run and print a readable view."""
        import signal

        rcv = LogReceiver(host, port, log_dir, console=None if quiet else sys.stdout)
        try:
            rcv.start()
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host}:{port} ({exc.strerror}); is another receiver running? "
                "Pick another --port and point modules at it with --log-server/MESH_LOG_SERVER."
            ) from None

        def stop(*_: object) -> None:
            rcv._stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        print(f"log receiver on {host}:{rcv.port}, writing {rcv.path}", flush=True)
        rcv.serve_forever()
        rcv.close()
        print(f"log receiver stopped after {rcv.records} records", flush=True)

    cli.main(args=argv, prog_name="python -m shared_utils.log_receiver")


if __name__ == "__main__":
    main()
