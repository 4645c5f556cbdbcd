"""The presenter child's window commands: OPEN (and changing an open window), CLOSE_WINDOW and
SCREENSHOT.

A mixin of :class:`~services.presenter.child.PresenterChild` (like
:class:`~services.presenter.activities.Activities`), over its ``win``, ``scene``, ``photodiode``,
frame clock and statistics. The window itself (opening without leaks, pacing) is in
:mod:`services.presenter.window`.
"""

from __future__ import annotations

from typing import Any

from services.presenter.ipc import DEFERRED
from services.presenter.stats import FrameStats
from services.presenter.window import close_window, open_window


class WindowCommands:
    """Mixin: window lifetime and screenshots."""

    def cmd_open(
        self,
        req_id: Any,
        size: list[int] | None = None,
        fullscreen: bool = False,
        screen: int = 0,
        color: Any = "grey",
        photodiode: str | None = None,
        photodiode_size: int = 50,
        given: list[str] | None = None,
    ) -> dict[str, Any]:
        """Open the window; on an open one, apply what was given (``given``: the names the
        client passed) or refuse what needs a new window."""
        from services.presenter import scene as sc  # importable once a window could open

        if self.win is not None:
            return self._reconfigure(
                given or [], size, fullscreen, screen, color, photodiode, photodiode_size
            )
        win = open_window(tuple(size or (800, 600)), fullscreen, screen, color, self.refresh_hz)
        self.win = win
        self._window_config = (list(size or (800, 600)), fullscreen, screen)
        try:
            self.photodiode = (
                sc.PhotodiodePatch(win, photodiode, photodiode_size) if photodiode else None
            )
        except ValueError:
            close_window(win)
            self.win = None
            raise
        self.scene = sc.Scene()
        self.frames.calibrate(win)
        self.stats = FrameStats(self.refresh_hz)
        return {
            "already_open": False,
            "size": [int(v) for v in win.size],
            "paced": self.frames.paced,
            "refresh_hz": self.refresh_hz,
        }

    def _reconfigure(
        self,
        given: list[str],
        size: Any,
        fullscreen: bool,
        screen: int,
        color: Any,
        photodiode: str | None,
        photodiode_size: int,
    ) -> dict[str, Any]:
        from services.presenter import scene as sc

        wanted = {"size": list(size or ()), "fullscreen": fullscreen, "screen": screen}
        current = dict(zip(("size", "fullscreen", "screen"), self._window_config, strict=True))
        changed = [k for k in wanted if k in given and wanted[k] != current[k]]
        if changed:
            now = ", ".join(f"{k} {current[k]}" for k in changed)
            raise ValueError(
                f"the window is already open ({now}); {', '.join(changed)} cannot change on an "
                "open window: send CLOSE_WINDOW first, then OPEN with the new values"
            )
        applied = []
        if "color" in given:
            self.win.color = sc.check_color(color)
            applied.append("color")
        if "photodiode" in given or "photodiode_size" in given:
            old = self.photodiode
            corner = photodiode if "photodiode" in given else (old.corner if old else None)
            self.photodiode = (
                sc.PhotodiodePatch(self.win, corner, photodiode_size) if corner else None
            )
            applied += [k for k in ("photodiode", "photodiode_size") if k in given]
        return {
            "already_open": True,
            "size": [int(v) for v in self.win.size],
            "paced": self.frames.paced,
            "applied": applied,
        }

    def cmd_close_window(self, req_id: Any) -> dict[str, Any]:
        self._stop_all()
        win, self.win = self.win, None
        self.scene = self.photodiode = None
        close_window(win)
        return {"closed": True}

    def cmd_screenshot(self, req_id: Any, file: str, overwrite: bool = False) -> Any:
        self._shots.append((req_id, file, overwrite))
        return DEFERRED

    def _take_screenshot(self) -> None:
        """Save the frame about to be flipped (back buffer: under Xvfb the front one is black)."""
        shots, self._shots = self._shots, []
        try:
            image = self.win.getMovieFrame(buffer="back")
        except Exception as exc:
            for req_id, *_ in shots:
                self.emit.reply(req_id, error=f"screenshot failed: {exc}")
            return
        finally:
            self.win.movieFrames = []
        for req_id, file, overwrite in shots:
            try:  # "x": a file that appeared since the server checked is not overwritten either
                with open(file, "wb" if overwrite else "xb") as f:
                    image.save(f, format="PNG")
            except FileExistsError:
                self.emit.reply(
                    req_id,
                    error=f"{file} already exists; choose another name or pass overwrite: true",
                )
                continue
            except Exception as exc:
                self.emit.reply(req_id, error=f"screenshot failed: {exc}")
                continue
            size = [int(v) for v in self.win.size]
            self.emit.reply(req_id, {"file": file, "size": size, "stimulus": self.scene.kind})
