"""Command map of the presenter module: names onto :class:`Presenter` methods, nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.presenter.core import Presenter


def build_commands(presenter: Presenter) -> dict[str, Callable[..., Any]]:
    """The public command names (issue 7) bound to one presenter."""

    def close() -> None:
        """Stop the PsychoPy child before the module exits."""
        presenter.shutdown()

    return {
        "OPEN": presenter.open,
        "CLOSE_WINDOW": presenter.close_window,
        "SHOW_TEXT": presenter.show_text,
        "SHOW_IMAGE": presenter.show_image,
        "FIXATION": presenter.fixation,
        "CLEAR": presenter.clear,
        "RUN_BLOCK": presenter.run_block,
        "FEEDBACK": presenter.feedback,
        "PAUSE": presenter.pause,
        "RESUME": presenter.resume,
        "STOP": presenter.stop,
        "SCREENSHOT": presenter.screenshot,
        "RUN_EXPERIMENT": presenter.run_experiment,
        "STATUS": presenter.status,
        "CLOSE": close,
    }
