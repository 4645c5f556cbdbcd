"""Thin command layer: maps protocol commands onto :class:`WatchService` methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.stream_watcher.core import WatchService


def build_commands(core: WatchService) -> dict[str, Callable[..., Any]]:
    """LIST, WATCH, UNWATCH, STATS, GET_WINDOW, STATUS, CLOSE bound to one service instance."""
    return {
        "LIST": core.list_visible,
        "WATCH": core.watch,
        "UNWATCH": core.unwatch,
        "STATS": core.stats,
        "GET_WINDOW": core.get_window,
        "STATUS": core.status,
        "CLOSE": core.close,
    }
