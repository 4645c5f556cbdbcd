"""The presenter child's PsychoPy window, its lifetime without leaks, and its frame clock.

Under Xvfb there is no vsync: a flip returns in ~2 ms. :class:`FrameClock` then keeps a grid of
software frame deadlines at ``--refresh-hz`` (``--pace auto`` decides by timing a few flips after
the window opens), so stimulus onsets and frame statistics look like a real display's.

Memory: a presenter runs for hours, so what PsychoPy and pyglet keep must not grow with the
number of stimuli or windows. Three things did (measured: ~8 kB per SHOW_TEXT, ~3.5 MB per
CLOSE_WINDOW + OPEN):
- pyglet never deletes a vertex buffer at once: it queues the id and deletes the queue the next
  time a context is made current, which PsychoPy never does again -> :func:`release_gl_garbage`
  once per frame;
- PsychoPy's pyglet backend opens a new X display connection for every window and nothing closes
  it (each costs Mesa a screen's worth of state) -> one cached connection per X screen;
- a new window's context is created sharing the *closed* window's context, and PsychoPy keeps
  every window alive through an ``atexit`` hook -> :func:`close_window` forgets both.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import gc
import os
import time
from typing import Any

_displays: dict[tuple, Any] = {}


def _share_displays() -> None:
    """Make ``pyglet.canvas.Display(...)`` return one connection per arguments (X screen)."""
    import pyglet.canvas

    make = pyglet.canvas.Display
    if getattr(make, "_presenter_cached", False):
        return

    def cached(*args: Any, **kwargs: Any) -> Any:
        key = (args, tuple(sorted(kwargs.items())))
        if key not in _displays:
            _displays[key] = make(*args, **kwargs)
        return _displays[key]

    cached._presenter_cached = True  # type: ignore[attr-defined]
    pyglet.canvas.Display = cached


def release_gl_garbage(win: Any) -> None:
    """Delete the GL buffers and textures pyglet queued for deletion (see the module notes)."""
    ctx = getattr(getattr(win, "winHandle", None), "context", None)
    space = getattr(ctx, "object_space", None)
    if space is not None and (space._doomed_buffers or space._doomed_textures):
        ctx.set_current()  # pyglet deletes the queued objects when a context is made current


def close_window(win: Any) -> None:
    """Close ``win`` so that nothing of it stays in memory (see the module notes)."""
    import pyglet.gl

    gc.collect()  # stims of the last scene: their buffers join the queue while ours is current
    release_gl_garbage(win)
    win.close()
    for hook in getattr(win, "_presenter_exit_hooks", ()):
        atexit.unregister(hook)
    win._presenter_exit_hooks = ()
    pyglet.gl.current_context = None  # the next window must not share the closed one's context
    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    """Give freed heap pages back to the system (glibc only; elsewhere nothing to do)."""
    path = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(path).malloc_trim(0)


def open_window(
    size: tuple[int, int], fullscreen: bool, screen: int, color: Any, refresh_hz: float
) -> Any:
    """A pyglet PsychoPy window; a bad colour raises ValueError, any other failure says why."""
    try:  # PsychoPy may need the X display as soon as psychopy.visual is imported
        from psychopy import visual

        from services.presenter import scene as sc

        sc.check_color(color)
        _share_displays()
        hooks: list[Any] = []
        register = atexit.register

        def remember(fn: Any, *a: Any, **kw: Any) -> Any:
            hooks.append(fn)
            return register(fn, *a, **kw)

        atexit.register = remember  # PsychoPy's close-at-exit hook holds the window forever
        try:
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
        finally:
            atexit.register = register
        win._presenter_exit_hooks = tuple(hooks)
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
