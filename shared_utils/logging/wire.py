"""The log wire format: one frame = 4-byte big-endian length + UTF-8 JSON.

It is the format Dareplane's socket handler uses, and a frame carries the keys Dareplane's
receiver reads (``name``, ``msg``, ``levelname``, ``created``, ...) so the two systems can log into
each other. Pure functions: the shipper sends these frames, the receiver reads them.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

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
