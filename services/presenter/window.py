"""The presenter child's PsychoPy window and its frame clock.

Under Xvfb there is no vsync: a flip returns in ~2 ms. :class:`FrameClock` then keeps a grid of
software frame deadlines at ``--refresh-hz`` (``--pace auto`` decides by timing a few flips after
the window opens), so stimulus onsets and frame statistics look like a real display's.
"""

from __future__ import annotations

import os
import time
from typing import Any


def open_window(
    size: tuple[int, int], fullscreen: bool, screen: int, color: Any, refresh_hz: float
) -> Any:
    """A pyglet PsychoPy window; a bad colour raises ValueError, any other failure says why."""
    try:  # PsychoPy may need the X display as soon as psychopy.visual is imported
        from psychopy import visual

        from services.presenter import scene as sc

        sc.check_color(color)
        win = visual.Window(
            size=size,
            fullscr=fullscreen,
            screen=screen,
            color=color,
            colorSpace="rgb",
            units="height",
            winType="pyglet",
            allowGUI=not fullscreen,
            checkTiming=False,
            waitBlanking=True,
        )
    except ValueError:
        raise
    except Exception as exc:
        raise RuntimeError(
            f"cannot open a window (DISPLAY={os.environ.get('DISPLAY')!r}, screen {screen}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    win._monitorFrameRate = refresh_hz  # Builder code reads this; Xvfb would say ~600
    win.recordFrameIntervals = False
    return win


class FrameClock:
    """Frame deadlines every ``1 / refresh_hz`` s; ``paced`` says whether flips wait for them."""

    def __init__(self, refresh_hz: float, mode: str = "auto") -> None:
        self.period = 1.0 / refresh_hz
        self.mode = mode  # "auto" | "on" | "off"
        self.paced = False
        self.deadline = 0.0

    def calibrate(self, win: Any) -> bool:
        """Decide pacing for ``win`` (``auto``: pace when flips return much faster than a
        frame, i.e. do not wait for vsync) and restart the grid from now."""
        if self.mode in ("on", "off"):
            self.paced = self.mode == "on"
        else:
            times = []
            for _ in range(8):
                win.flip()
                times.append(time.monotonic())
            gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
            self.paced = gaps[len(gaps) // 2] < 0.5 * self.period
        self.restart()
        return self.paced

    def restart(self) -> None:
        self.deadline = time.monotonic()

    def next_deadline(self) -> float:
        return self.deadline + self.period

    def advance(self) -> None:
        """Move to the next deadline; if more than a frame behind, restart the grid from now."""
        self.deadline += self.period
        now = time.monotonic()
        if now > self.deadline + self.period:
            self.deadline = now

    def wait(self) -> None:
        """Software vsync: hold the caller (a flip) until the next frame deadline."""
        if not self.paced:
            return
        self.advance()
        delay = self.deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
