"""Thin command layer: maps protocol commands onto :class:`WatchService` methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.stream_watcher.core import WatchService


def build_commands(
    service: WatchService | None = None, **options: Any
) -> dict[str, Callable[..., Any]]:
    """LIST, WATCH, UNWATCH, STATS, GET_WINDOW, STATUS, CLOSE bound to one service instance."""
    s = service or WatchService(**options)
    return {
        "LIST": s.list_visible,
        "WATCH": s.watch,
        "UNWATCH": s.unwatch,
        "STATS": s.stats,
        "GET_WINDOW": s.get_window,
        "STATUS": s.status,
        "CLOSE": s.close,
    }
