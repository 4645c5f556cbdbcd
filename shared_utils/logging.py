"""Structured logging for every module: readable console output plus the central log receiver.

``get_logger(name)`` may be called at import time; nothing is configured, no thread or socket
exists, until the entry point calls :func:`configure_logging` (importing has no side effects).

Every record goes two ways: a console line on stderr, and a frame to the log receiver
(``shared_utils.log_receiver``, default ``127.0.0.1:9020``). A frame is a 4-byte big-endian length
plus UTF-8 JSON, the wire format Dareplane's socket handler uses, and it carries the keys
Dareplane's receiver reads (``name``, ``msg``, ``levelname``, ``created``, ...) so the two systems
can log into each other. Sending happens on a background thread with a bounded queue, so a slow or
absent receiver never blocks a control loop; what cannot be queued is counted and reported.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import select
import socket
import struct
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import structlog

__all__ = [
    "DEFAULT_LOG_SERVER",
    "LOG_SERVER_ENV",
    "MAX_FRAME_BYTES",
    "LogShipper",
    "configure_logging",
    "encode_frame",
    "get_logger",
    "parse_log_server",
    "shutdown_logging",
    "shipper",
]

DEFAULT_LOG_SERVER = "127.0.0.1:9020"
LOG_SERVER_ENV = "MESH_LOG_SERVER"
MAX_FRAME_BYTES = 1 << 20  # the receiver closes a connection that announces a bigger frame
SCHEMA = 1  # the "mesh" key of our frames; lets the receiver skip Dareplane normalisation
_OFF = {"", "none", "off", "0", "false", "no", "disabled"}
_HEADER = struct.Struct(">L")
_START = time.time()

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def parse_log_server(value: str | None = None) -> tuple[str, int] | None:
    """Receiver address from ``value``, else ``$MESH_LOG_SERVER``, else the default.

    ``"host:port"`` or a bare port; ``"none"``/``"off"`` disables sending (returns ``None``).
    """
    if value is None:
        value = os.environ.get(LOG_SERVER_ENV, DEFAULT_LOG_SERVER)
    value = value.strip()
    if value.lower() in _OFF:
        return None
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    try:
        return (host.strip("[]") or "127.0.0.1", int(port))
    except ValueError:
        raise ValueError(
            f"log server must be 'host:port', a port, or 'none'; got {value!r}"
        ) from None


def _json_default(obj: object) -> object:
    """Make numpy scalars, bytes, paths and anything else serialisable instead of failing."""
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


def encode_frame(record: dict[str, Any]) -> bytes:
    """One wire frame: 4-byte big-endian length, then the record as compact UTF-8 JSON."""
    try:
        body = json.dumps(record, default=_json_default, separators=(",", ":")).encode()
    except (TypeError, ValueError):  # e.g. non-string dict keys, circular structures
        safe = {
            k: v if isinstance(v, int | float | str | None) else repr(v) for k, v in record.items()
        }
        body = json.dumps(safe, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME_BYTES - 1024:
        body = _shrink(record)
    return _HEADER.pack(len(body)) + body


def _shrink(record: dict[str, Any]) -> bytes:
    """Cut an oversized record down so the receiver accepts it, and say that it was cut."""
    small = dict(record)
    for key in ("msg", "event", "exc_text"):
        if isinstance(small.get(key), str):
            small[key] = small[key][:20_000]
    small["kv"] = {"truncated": repr(record.get("kv"))[:20_000]}
    return json.dumps(small, default=str, separators=(",", ":")).encode()


def _render_msg(event: str, kv: dict[str, Any]) -> str:
    """The text Dareplane's receiver shows: the event and the key-values on one line."""
    parts = [event]
    for k, v in kv.items():
        parts.append(f"{k}={v!r}" if isinstance(v, str) and (not v or " " in v) else f"{k}={v}")
    msg = " ".join(parts)
    # Dareplane's receiver runs `msg % args` when it sees "%s"; escape so the text survives.
    return msg.replace("%", "%%") if "%s" in msg else msg


def wire_record(
    *,
    module: str,
    logger: str,
    levelno: int,
    event: str,
    kv: dict[str, Any],
    created: float,
    exc_text: str | None = None,
    pathname: str = "",
    lineno: int = 0,
    func: str = "",
) -> dict[str, Any]:
    """A record with Dareplane's LogRecord keys plus ours (module, level, event, kv, time)."""
    levelname = logging.getLevelName(levelno)
    rec: dict[str, Any] = {
        "mesh": SCHEMA,
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds"),
        "module": module,
        "level": levelname.lower(),
        "event": event,
        "kv": kv,
        # stdlib LogRecord keys; logging.makeLogRecord() fills in any we leave out
        "name": logger or module,
        "msg": _render_msg(event, kv),
        "args": [],
        "levelname": levelname,
        "levelno": levelno,
        "created": created,
        "msecs": (created % 1) * 1000,
        "relativeCreated": (created - _START) * 1000,
        "threadName": threading.current_thread().name,
        "process": os.getpid(),
        "exc_text": exc_text,
    }
    if pathname:  # structlog calls carry no call site; stdlib records do
        rec.update(
            pathname=pathname, filename=os.path.basename(pathname), lineno=lineno, funcName=func
        )
    return rec


class LogShipper:
    """Send frames to the log receiver from a background thread; never block the caller.

    Frames wait in a bounded queue while the receiver is away and go out on reconnect. A frame
    that finds the queue full is dropped and counted; the next successful send is preceded by a
    warning record that says how many were lost. :meth:`close` flushes within a time bound.
    """

    def __init__(
        self,
        address: tuple[str, int],
        module: str = "",
        queue_size: int = 10_000,
        connect_timeout: float = 1.0,
        send_timeout: float = 5.0,
    ) -> None:
        self.address = address
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


# -- process-wide configuration ---------------------------------------------------------------


class _State:
    """What configure_logging set up; replaced as a whole on reconfiguration."""

    module: str = ""
    shipper: LogShipper | None = None
    console: Any = None  # a structlog ConsoleRenderer, or None
    handler: logging.Handler | None = None
    root_level: int | None = None  # the root logger's level before we changed it
    atexit_registered = False


_state = _State()
_LEVELNOS = logging.getLevelNamesMapping()
_RESERVED = {"event", "level", "logger", "logger_name", "exc_info", "timestamp", "stack_info"}


def _exc_text(exc_info: Any) -> str | None:
    """Formatted traceback for structlog's ``exc_info`` value (True, an exception or a tuple)."""
    if not exc_info:
        return None
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[0] is None:
        return None
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")


def _ship(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: send the record to the receiver, add a console timestamp."""
    created = time.time()
    shipper = _state.shipper
    if shipper is not None:
        kv = {k: v for k, v in event_dict.items() if k not in _RESERVED}
        level = event_dict.get("level", method)
        rec = wire_record(
            module=_state.module,
            logger=str(event_dict.get("logger_name") or event_dict.get("logger") or ""),
            levelno=_LEVELNOS.get(str(level).upper(), logging.INFO),
            event=str(event_dict.get("event", "")),
            kv=kv,
            created=created,
            exc_text=_exc_text(event_dict.get("exc_info")),
        )
        shipper.submit(encode_frame(rec))
    event_dict.setdefault("timestamp", _clock(created))
    return event_dict


def _clock(created: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(created)) + f".{int(created % 1 * 1000):03d}"


def _console_or_drop(logger: Any, method: str, event_dict: dict[str, Any]) -> str:
    """Last processor: render for the console, or drop when the console is off."""
    if _state.console is None:
        raise structlog.DropEvent
    return _state.console(logger, method, event_dict)


class _StdlibBridge(logging.Handler):
    """Routes stdlib ``logging`` records (libraries, Dareplane code) through the same sinks."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = record.getMessage()
            exc_text = record.exc_text
            if record.exc_info and record.exc_info[0] is not None:
                exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            if record.stack_info:
                exc_text = f"{exc_text}\n{record.stack_info}" if exc_text else record.stack_info
            kv = {k: v for k, v in record.__dict__.items() if k not in _LOGRECORD_KEYS}
            if _state.shipper is not None:
                rec = wire_record(
                    module=_state.module,
                    logger=record.name,
                    levelno=record.levelno,
                    event=event,
                    kv=kv,
                    created=record.created,
                    exc_text=exc_text,
                    pathname=record.pathname,
                    lineno=record.lineno,
                    func=record.funcName,
                )
                _state.shipper.submit(encode_frame(rec))
            if _state.console is not None:
                ed: dict[str, Any] = {
                    "timestamp": _clock(record.created),
                    "level": record.levelname.lower(),
                    "event": event,
                    "logger_name": record.name,
                    **kv,
                }
                if exc_text:
                    ed["exception"] = exc_text
                line = _state.console(None, record.levelname.lower(), ed)
                sys.stderr.write(line + "\n")
        except Exception:
            self.handleError(record)


_LOGRECORD_KEYS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def configure_logging(
    module: str,
    level: str = "INFO",
    log_server: str | None = None,
    console: bool = True,
    queue_size: int = 10_000,
) -> None:
    """Configure logging once for this process (a module's click entry point calls it).

    ``log_server`` is ``"host:port"``, a port, or ``"none"``; when omitted, ``$MESH_LOG_SERVER``
    and then ``127.0.0.1:9020`` are used. stdlib ``logging`` records are routed through too.
    Calling it again replaces the previous configuration (its queued records are flushed first).
    """
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    address = parse_log_server(log_server)
    shutdown_logging(timeout=0.5)
    _state.module = module
    if console:
        _state.console = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    if address is not None:
        _state.shipper = LogShipper(address, module=module, queue_size=queue_size)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _ship,
            _console_or_drop,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = _StdlibBridge(level=lvl)
    root = logging.getLogger()
    root.addHandler(handler)
    _state.root_level = root.level
    root.setLevel(lvl)
    _state.handler = handler
    if not _state.atexit_registered:
        atexit.register(shutdown_logging, 1.0)
        _state.atexit_registered = True


def shutdown_logging(timeout: float = 1.0) -> None:
    """Flush queued records (bounded by ``timeout``) and undo :func:`configure_logging`.

    Runs at normal interpreter exit; tests and embedding applications may call it directly.
    """
    if _state.handler is not None:
        root = logging.getLogger()
        root.removeHandler(_state.handler)
        if _state.root_level is not None:
            root.setLevel(_state.root_level)
        _state.handler = None
    shipper, _state.shipper = _state.shipper, None
    if shipper is not None:
        shipper.close(timeout)
        if shipper.unreported:  # the receiver cannot be told any more; say it here instead
            print(
                f"[{_state.module}] {shipper.unreported} log records not delivered to the log "
                f"receiver at {shipper.address[0]}:{shipper.address[1]}",
                file=sys.stderr,
            )
    _state.console = None
    if structlog.is_configured():
        structlog.reset_defaults()


def shipper() -> LogShipper | None:
    """The active shipper (stats: ``sent``, ``dropped``, ``connect_failures``, ``connected``)."""
    return _state.shipper


def get_logger(name: str | None = None) -> Any:
    """Return a structlog logger; ``log.info("event", key=value)``.

    Safe at import time: the logger stays lazy (no ``.bind()`` here, which would freeze
    structlog's default configuration into it) and picks up :func:`configure_logging` later.
    """
    return structlog.get_logger() if name is None else structlog.get_logger(logger_name=name)
