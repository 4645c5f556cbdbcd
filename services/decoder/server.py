"""Thin protocol layer: command names -> DecoderService methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.decoder.service import DecoderService


def build_commands(service: DecoderService | None = None) -> dict[str, Callable[..., Any]]:
    """The decoder's command map (STOP/STATUS/CLOSE merge with the server's built-ins)."""
    s = service or DecoderService()
    return {
        "FIT": s.fit,
        "SAVE": s.save,
        "LOAD": s.load,
        "START": s.start,
        "STOP": s.stop,
        "SET": s.set,
        "STATUS": s.status,
        "CLOSE": s.close,
    }
