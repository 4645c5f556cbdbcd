"""What the child draws: stimulus builders, the feedback bar and the photodiode patch.

Only the child imports this module (it imports PsychoPy). Builders raise ``ValueError`` with a
message meant for the person who sent the command; the child turns it into an error reply.
Stimuli use the window's ``height`` units: 1.0 is the window height, (0, 0) the centre.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psychopy import colors, visual

from shared_utils.checks import unknown_message

CORNERS = ("bottom_left", "bottom_right", "top_left", "top_right")
# Named colours shown first when a name is unknown (PsychoPy knows ~150, all accepted).
BASIC_COLOURS = ("white", "black", "grey", "red", "green", "blue", "yellow", "orange", "purple")


def check_color(value: Any) -> Any:
    """Return ``value`` if PsychoPy understands it as an RGB colour, else raise ``ValueError``."""
    if isinstance(value, (list, tuple)):
        if len(value) != 3 or not all(isinstance(v, (int, float)) and -1 <= v <= 1 for v in value):
            raise ValueError(f"colour {value!r}: an [r, g, b] list needs three numbers in -1..1")
        return list(value)
    if not isinstance(value, str) or not colors.Color(value, "rgb").valid:
        rest = sorted(set(colors.colorNames) - set(BASIC_COLOURS))
        named = unknown_message("colour", value, [*BASIC_COLOURS, *rest], limit=len(BASIC_COLOURS))
        raise ValueError(f"{named}; or a hex string ('#ff8800'), or [r, g, b] in -1..1")
    return value


def check_pos(pos: Any) -> tuple[float, float]:
    if not isinstance(pos, (list, tuple)) or len(pos) != 2:
        raise ValueError(f"pos must be [x, y] in height units, got {pos!r}")
    return float(pos[0]), float(pos[1])


class Scene:
    """The stimulus currently on screen: a list of stims plus a label for STATUS and markers."""

    def __init__(self, kind: str = "blank", label: str = "", stims: list[Any] | None = None):
        self.kind = kind
        self.label = label
        self.stims = stims or []

    def draw(self) -> None:
        for s in self.stims:
            s.draw()


def text_scene(
    win: visual.Window,
    text: str,
    color: Any = "white",
    height: float = 0.08,
    pos: Any = (0, 0),
    wrap_width: float | None = None,
) -> Scene:
    if height <= 0:
        raise ValueError(f"height must be > 0 (fraction of window height), got {height}")
    stim = visual.TextStim(
        win,
        text=text,
        color=check_color(color),
        height=height,
        pos=check_pos(pos),
        wrapWidth=wrap_width or 1.5,
        units="height",
    )
    return Scene("text", text, [stim])


def image_scene(win: visual.Window, file: str, size: Any = None, pos: Any = (0, 0)) -> Scene:
    path = Path(file)
    if not path.is_file():
        raise ValueError(f"image file not found: {file}")
    try:
        stim = visual.ImageStim(
            win,
            image=str(path),
            pos=check_pos(pos),
            units="height",
            size=tuple(size) if size else None,
        )
    except Exception as exc:  # PIL and PsychoPy raise many kinds for unreadable images
        raise ValueError(f"cannot load image {file}: {exc}") from exc
    if size is None:  # fit inside the window, keeping the aspect ratio
        w, h = stim.size
        scale = min(1.0 / h, (win.size[0] / win.size[1]) / w) if w and h else 1.0
        if scale < 1.0:
            stim.size = (w * scale, h * scale)
    return Scene("image", path.name, [stim])


def fixation_scene(win: visual.Window, color: Any = "white", size: float = 0.1) -> Scene:
    stim = visual.ShapeStim(
        win,
        vertices="cross",
        size=size,
        fillColor=check_color(color),
        lineColor=None,
        units="height",
    )
    return Scene("fixation", "+", [stim])


class FeedbackDisplay:
    """A vertical bar (``mode='bar'``) or a colour disc (``mode='color'``) showing a value in 0..1."""

    def __init__(self, win: visual.Window, mode: str = "bar", color: Any = "limegreen") -> None:
        if mode not in ("bar", "color"):
            raise ValueError(f"mode must be 'bar' or 'color', got {mode!r}")
        self.mode = mode
        self.value = 0.0
        self._h = 0.6
        if mode == "bar":
            self._frame = visual.Rect(
                win,
                width=0.16,
                height=self._h,
                lineColor="white",
                fillColor=None,
                lineWidth=3,
                units="height",
            )
            self._fill = visual.Rect(
                win,
                width=0.14,
                height=0.0,
                fillColor=check_color(color),
                lineColor=None,
                units="height",
            )
        else:
            self._disc = visual.Circle(
                win, radius=0.2, fillColor=[-1, -1, 1], lineColor=None, units="height"
            )

    def set_value(self, v: float) -> None:
        self.value = min(max(v, 0.0), 1.0)
        if self.mode == "bar":
            inner = (self._h - 0.02) * self.value
            self._fill.height = max(inner, 1e-4)
            self._fill.pos = (0, -(self._h - 0.02) / 2 + inner / 2)
        else:  # blue at 0, red at 1
            self._disc.fillColor = [2 * self.value - 1, -1, 1 - 2 * self.value]

    def draw(self) -> None:
        if self.mode == "bar":
            self._frame.draw()
            if self.value > 0:
                self._fill.draw()
        else:
            self._disc.draw()


class PhotodiodePatch:
    """A square in a window corner that toggles black/white at every stimulus onset.

    Toggling (rather than flashing for N frames) makes each onset one edge on the photodiode
    trace, so diode edges and LSL markers can be paired one to one.
    """

    def __init__(self, win: visual.Window, corner: str, size_px: int = 50) -> None:
        if corner not in CORNERS:
            raise ValueError(unknown_message("photodiode corner", corner, CORNERS))
        w, h = win.size
        x = (-1 if "left" in corner else 1) * (w / 2 - size_px / 2)
        y = (-1 if "bottom" in corner else 1) * (h / 2 - size_px / 2)
        self.corner = corner
        self.white = False
        self._rect = visual.Rect(
            win,
            width=size_px,
            height=size_px,
            pos=(x, y),
            units="pix",
            fillColor="black",
            lineColor=None,
        )

    def toggle(self) -> None:
        self.white = not self.white
        self._rect.fillColor = "white" if self.white else "black"

    def draw(self) -> None:
        self._rect.draw()
