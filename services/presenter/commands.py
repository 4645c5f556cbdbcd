"""Command map of the presenter module: names onto :class:`Presenter` methods, nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.presenter.core import Presenter
from services.presenter.session import session_commands


def build_commands(core: Presenter) -> dict[str, Callable[..., Any]]:
    """The public command names (issue 7) bound to one presenter."""
    return {
        "OPEN": core.open,
        "CLOSE_WINDOW": core.close_window,
        "SHOW_TEXT": core.show_text,
        "SHOW_IMAGE": core.show_image,
        "FIXATION": core.fixation,
        "CLEAR": core.clear,
        "RUN_BLOCK": core.run_block,
        "FEEDBACK": core.feedback,
        "PAUSE": core.pause,
        "RESUME": core.resume,
        "STOP": core.stop,
        "SCREENSHOT": core.screenshot,
        "RUN_EXPERIMENT": core.run_experiment,
        "STATUS": core.status,
        "CLOSE": core.close,
        **session_commands(core),  # its part in a session: last frame and display statistics
    }
