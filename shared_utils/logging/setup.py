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
import logging
import os
import sys
import time
import traceback
from typing import Any

import structlog

from shared_utils.logging.shipper import LogShipper
from shared_utils.logging.wire import encode_frame, parse_log_server, wire_record

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
    token: str | None = None,
) -> None:
    """Configure logging once for this process (a module's click entry point calls it).

    ``log_server`` is ``"host:port"``, a port, or ``"none"``; when omitted, ``$MESH_LOG_SERVER``
    and then ``127.0.0.1:9020`` are used. stdlib ``logging`` records are routed through too.
    ``token`` (default ``$MESH_TOKEN``) authenticates us to a receiver beyond loopback.
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
        _state.shipper = LogShipper(
            address,
            module=module,
            queue_size=queue_size,
            token=token if token is not None else os.environ.get("MESH_TOKEN") or None,
        )
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
