"""The documented range of every presenter argument, checked before a command reaches the child.

Why bounds at all: every size, count and duration here ends up allocating something in the
PsychoPy child (a texture, a glyph layout, a trial schedule), and an unbounded one let a single
command grow the child without limit. The numbers are generous for real experiments (a 8k
display, ten thousand trials, an hour per phase) and are the same table as in docs/presenter.md.
No PsychoPy here: the server process imports this, and so does :mod:`services.presenter.block`.
Colour *names* are checked in the child, which knows PsychoPy's list.
"""

from __future__ import annotations

from typing import Any

from shared_utils.checks import check_number, check_point, check_string, short, unknown_message
from shared_utils.errors import CommandError

CORNERS = ("bottom_left", "bottom_right", "top_left", "top_right")
OFF = ("", "off", "none")

WINDOW_PX = (16, 8192)  # OPEN size, per side
SCREEN = (0, 15)  # monitor index
PHOTODIODE_PX = (4, 1000)  # patch side
TIMEOUT_S = (0.1, 300.0)  # OPEN and FEEDBACK waits
TEXT_CHARS = 4000  # SHOW_TEXT text, RUN_BLOCK cue/stimulus templates
HEIGHT = (0.001, 2.0)  # text height, window heights
POS = (-10.0, 10.0)  # positions, window heights from the centre
WRAP = (0.01, 10.0)  # wrap width, window heights
IMAGE_SIZE = (0.001, 10.0)  # SHOW_IMAGE size per side, window heights
FIXATION_SIZE = (0.001, 2.0)
COLOUR_CHARS = 64  # a colour name or hex string
STREAM_CHARS = 200  # an LSL stream name
CHANNEL = (0, 65535)
N_TRIALS = (1, 10_000)
N_CUES = 100
CUE_CHARS = 200
PHASE_S = (0.0, 3600.0)  # cue, stimulus, iti, iti jitter
EXP_INFO_KEYS = 100
EXP_INFO_CHARS = 1000


def colour(value: Any, what: str = "color") -> Any:
    """A colour's shape: a name or hex string, or ``[r, g, b]`` in -1..1."""
    if isinstance(value, str):
        return check_string(what, value, COLOUR_CHARS)
    if isinstance(value, list | tuple):
        if len(value) != 3:
            raise CommandError(f"{what} [r, g, b] needs three numbers in -1..1, got {short(value)}")
        return [check_number(f"{what}[{i}]", v, -1, 1) for i, v in enumerate(value)]
    raise CommandError(
        f"{what} must be a colour name ('white'), a hex string ('#ff8800') or [r, g, b] in -1..1, "
        f"got {short(value)}"
    )


def corner(value: Any) -> str | None:
    """A photodiode corner, or None for "off" (``""``, ``"off"``, ``"none"``)."""
    if isinstance(value, str) and value.lower() in OFF:
        return None
    if value not in CORNERS:
        raise CommandError(unknown_message("photodiode corner", value, [*CORNERS, "off"]))
    return value


def window_size(value: Any) -> list[int]:
    return check_point("size", value, *WINDOW_PX, integer=True)


def position(value: Any, what: str = "pos") -> list[float]:
    return check_point(what, value, *POS)


def image_size(value: Any) -> list[float]:
    return check_point("size", value, *IMAGE_SIZE)


def timeout(value: Any) -> float:
    return check_number("timeout", value, *TIMEOUT_S)


def exp_info(value: dict[str, Any]) -> dict[str, Any]:
    """RUN_EXPERIMENT's ``exp_info``: at most 100 fields of plain values (strings, numbers)."""
    if len(value) > EXP_INFO_KEYS:
        raise CommandError(f"exp_info has {len(value)} fields; at most {EXP_INFO_KEYS}")
    for k, v in value.items():
        check_string("exp_info key", k, 100)
        if isinstance(v, str):
            check_string(f"exp_info[{k!r}]", v, EXP_INFO_CHARS, min_len=0)
        elif v is not None and not isinstance(v, bool | int | float):
            raise CommandError(
                f"exp_info[{k!r}] must be a string, number, true/false or null, got {short(v)}"
            )
    return value
