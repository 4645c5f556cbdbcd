"""Structured logging for every module: readable console output plus the central log receiver.

``get_logger(name)`` may be called at import time; nothing is configured until the entry point
calls :func:`configure_logging` (so importing a module has no side effects).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


def configure_logging(
    module: str,
    level: str = "INFO",
    log_server: str | None = None,
    console: bool = True,
) -> None:
    """Configure structlog once for this process (called by a module's click entry point)."""
    global _configured
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(module=module)
    _configured = True


def get_logger(name: str | None = None) -> Any:
    """Return a structlog logger; ``log.info("event", key=value)``."""
    return structlog.get_logger(name) if name is None else structlog.get_logger(name).bind(logger=name)
