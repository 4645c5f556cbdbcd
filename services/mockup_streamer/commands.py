"""Thin command layer: maps protocol commands onto :class:`MockupStreamer` methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.mockup_streamer.core import MockupStreamer


def build_commands(core: MockupStreamer) -> dict[str, Callable[..., Any]]:
    """START, REPLAY, STOP, STATUS, CLOSE bound to one streamer instance."""
    return {
        "START": core.start,
        "REPLAY": core.replay,
        "STOP": core.stop,
        "STATUS": core.status,
        "CLOSE": core.close,
    }
