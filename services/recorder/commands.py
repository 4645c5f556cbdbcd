"""Thin command layer: START/STOP/STATUS/LIST/EXPORT/CLOSE bound to one :class:`Recorder`, plus
its part in a session (EXP*, services/recorder/session.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.recorder.core import Recorder
from services.recorder.session import session_commands


def build_commands(core: Recorder) -> dict[str, Callable[..., Any]]:
    """The recorder's command map (STOP/STATUS/CLOSE merge with the server's built-ins)."""
    return {
        "START": core.start,
        "STOP": core.stop,
        "STATUS": core.status,
        "LIST": core.list_streams,
        "EXPORT": core.export,
        "CLOSE": core.close,
        **session_commands(core),
    }
