"""Thin protocol layer: command names onto :class:`services.decoder.core.DecoderService` methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.decoder.core import DecoderService


def build_commands(core: DecoderService) -> dict[str, Callable[..., Any]]:
    """The decoder's command map (STOP/STATUS/CLOSE merge with the server's built-ins)."""
    return {
        "FIT": core.fit,
        "SAVE": core.save,
        "LOAD": core.load,
        "START": core.start,
        "STOP": core.stop,
        "SET": core.set,
        "STATUS": core.status,
        "CLOSE": core.close,
    }
