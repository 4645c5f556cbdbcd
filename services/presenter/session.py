"""The presenter's part in an experiment session (the EXP* messages, docs/sessions.md).

At the end of a session (``EXPEND`` or ``EXPINTERRUPT``) whatever block, feedback or experiment is
still running is stopped, and the presenter leaves in ``<session folder>/presenter/`` what the
session looked like: ``last_frame.png`` (the window as the subject last saw it, when a window is
open) and ``status.json`` (frame rate, dropped frames, the last stimulus).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.presenter.core import Presenter
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger
from shared_utils.protocol.session import session_handlers
from shared_utils.session_layout import part_folder, write_json_atomic

log = get_logger("presenter.session")


class PresenterSession:
    """Where the current session's presenter files go, and what was written at its end."""

    def __init__(self, core: Presenter) -> None:
        self.core = core
        self.folder: Path | None = None
        self.summary: dict[str, Any] | None = None

    def init(self, exp_ref: str, **_: Any) -> dict[str, Any]:
        """Create the session's presenter folder."""
        self.folder, self.summary = part_folder(exp_ref, "presenter"), None
        return {"folder": str(self.folder)}

    def end(self, **_: Any) -> dict[str, Any]:
        """Stop what runs; keep the last frame and the display statistics."""
        if self.summary is not None or self.folder is None:
            return self.summary or {"files": []}
        files, problems = [], []
        try:
            stopped = self.core.stop().get("stopped", [])
        except CommandError as exc:
            stopped, problems = [], [f"stop: {exc}"]
        status = self.core.status()
        if status.get("window_open"):
            try:
                self.core.screenshot(str(self.folder / "last_frame.png"))
                files.append("presenter/last_frame.png")
            except CommandError as exc:
                problems.append(f"screenshot: {exc}")
        write_json_atomic(self.folder / "status.json", status)
        files.append("presenter/status.json")
        if problems:
            log.warning("session end incomplete", problems=problems)
        self.summary = {"files": files, "stopped": stopped, "problems": problems}
        return self.summary

    def cleanup(self, **_: Any) -> dict[str, Any]:
        self.folder = self.summary = None
        return {}


def session_commands(core: Presenter) -> dict[str, Callable[..., Any]]:
    """The presenter's EXP* handlers (the built-ins of shared_utils.protocol wrap them)."""
    return session_handlers(PresenterSession(core))
