"""Thin command layer: maps protocol commands onto :class:`MockupStreamer` methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.mockup_streamer.core import MockupStreamer


def build_commands(streamer: MockupStreamer | None = None) -> dict[str, Callable[..., Any]]:
    """START, REPLAY, STOP, STATUS, CLOSE bound to one streamer instance."""
    s = streamer or MockupStreamer()
    return {
        "START": s.start,
        "REPLAY": s.replay,
        "STOP": s.stop,
        "STATUS": s.status,
        "CLOSE": s.close,
    }
