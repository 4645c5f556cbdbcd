"""Log records as the receiver keeps them: ours and Dareplane's normalised to one shape.

Records from Dareplane's ``UJsonSocketHandler`` (unformatted ``msg`` + ``args``, values stringified)
become the same shape as ours; :func:`format_line` renders either for a console.
"""

from __future__ import annotations

import ast
import functools
import time
from datetime import UTC, datetime
from typing import Any

from shared_utils.logging.wire import SCHEMA

_LEVELS = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}
# Keys of a stdlib LogRecord: everything else in a foreign record is an "extra" -> kv.
_STD_KEYS = {
    "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module",
    "exc_info", "exc_text", "stack_info", "lineno", "funcName", "created", "msecs",
    "relativeCreated", "thread", "threadName", "processName", "process", "taskName", "message",
    "asctime",
}  # fmt: skip

Record = dict[str, Any]


def _none(value: Any) -> Any:
    """Dareplane's fallback stringifies None into "None"; undo that."""
    return None if value in (None, "None", "") else value


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _format_foreign_msg(msg: Any, args: Any) -> str:
    """``msg % args`` as stdlib logging would, tolerating args that arrived as a repr string."""
    msg = str(msg)
    if isinstance(args, str):
        if _none(args) is None or args == "()":
            return msg
        try:
            args = ast.literal_eval(args)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return f"{msg} {args}"
    if not args:
        return msg
    if isinstance(args, list):
        args = tuple(args)
    try:
        return msg % args
    except (TypeError, ValueError, KeyError):
        return f"{msg} {args!r}"


def normalise(raw: Record) -> Record:
    """Turn a decoded frame (ours or a Dareplane/stdlib one) into the stored record shape.

    Shape: ``time`` (ISO UTC), ``created`` (epoch s), ``level``, ``levelno``, ``module``,
    ``logger``, ``event``, ``kv`` (dict), ``exc_text`` (formatted traceback or None), ``pid``,
    ``source`` ("mesh" or "stdlib").
    """
    if raw.get("mesh") == SCHEMA:
        kv = raw.get("kv")
        return {
            "time": raw.get("time"),
            "created": raw.get("created"),
            "level": raw.get("level"),
            "levelno": raw.get("levelno"),
            "module": raw.get("module"),
            "logger": raw.get("name"),
            "event": raw.get("event"),
            "kv": kv if isinstance(kv, dict) else {},
            "exc_text": raw.get("exc_text"),
            "pid": raw.get("process"),
            "source": "mesh",
        }
    created = _float(raw.get("created"), time.time())
    try:
        levelno = int(raw.get("levelno", 20))
    except (TypeError, ValueError):
        levelno = 20
    levelname = raw.get("levelname")
    level = str(levelname).lower() if levelname else _LEVELS.get(levelno, "info")
    exc_text = _none(raw.get("exc_text")) or _none(raw.get("exc_info"))
    stack = _none(raw.get("stack_info"))
    if stack:
        exc_text = f"{exc_text}\n{stack}" if exc_text else stack
    name = str(raw.get("name", "") or "")
    return {
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds"),
        "created": created,
        "level": level,
        "levelno": levelno,
        "module": name.split(".")[0] if name else str(raw.get("module", "")),
        "logger": name,
        "event": _format_foreign_msg(raw.get("msg", ""), raw.get("args")),
        "kv": {k: v for k, v in raw.items() if k not in _STD_KEYS},
        "exc_text": exc_text if exc_text is None else str(exc_text),
        "pid": raw.get("process"),
        "source": "stdlib",
    }


@functools.lru_cache(maxsize=4)
def _hms(second: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(second))


def format_line(rec: Record) -> str:
    """A readable console line: local time, level, module, logger, event, key-values, traceback."""
    created = rec.get("created") or 0.0
    clock = f"{_hms(int(created))}.{int(created % 1 * 1000):03d}"
    logger = rec.get("logger") or ""
    module = rec.get("module") or ""
    where = module if logger in ("", module) else f"{module} {logger}"
    kv = " ".join(f"{k}={v}" for k, v in (rec.get("kv") or {}).items())
    line = f"{clock} {str(rec.get('level', '')).upper():<8} [{where}] {rec.get('event', '')}"
    if kv:
        line = f"{line}  {kv}"
    if rec.get("exc_text"):
        line += "\n    " + str(rec["exc_text"]).replace("\n", "\n    ")
    return line
