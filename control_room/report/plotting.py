"""The report's look, shared by every figure: size, margins, palette, axes style, placeholders.

Every figure has the same width and fixed margins in inches, so the figures line up on the page
and a placeholder takes the place of a figure without shifting the layout.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

DPI = 100
WIDTH_IN = 12.0
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip


def new_figure(
    height_in: float,
    left: float = 1.0,
    right: float = 2.4,
    top: float = 0.45,
    bottom: float = 0.6,
    **spacing: float,
) -> Figure:
    """A figure of the report's width with fixed margins in inches (``right`` holds the legends).

    Fixed margins instead of matplotlib's constrained layout: figures line up on the page, and
    saving is several times faster.
    """
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI)
    fig.set_facecolor("white")
    fig.subplots_adjust(
        left=left / WIDTH_IN,
        right=1 - right / WIDTH_IN,
        top=1 - top / height_in,
        bottom=bottom / height_in,
        **spacing,
    )
    return fig


def style_axes(ax) -> None:  # noqa: ANN001 - a matplotlib Axes
    """Light grid behind the data, no top or right frame."""
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)


def colours(names: list[str]) -> dict[str, str]:
    """One palette colour per distinct name, in order of first appearance."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(dict.fromkeys(names))}


def placeholder(title: str, reason: str, height_in: float = 2.2) -> Figure:
    """A panel that says what is missing and why, same width as the real figures."""
    fig = new_figure(height_in, left=0.2, right=0.2, top=0.2, bottom=0.2)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_facecolor("#f6f6f6")
    fig.set_facecolor("#f6f6f6")
    ax.text(0.5, 0.62, f"{title}: not drawn", ha="center", va="center", fontsize=15, weight="bold")
    ax.text(0.5, 0.32, reason, ha="center", va="center", fontsize=11, wrap=True, color="#444")
    return fig


def envelope(t: np.ndarray, x: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray, int]:
    """At most ``max_points`` per channel: each block of ``step`` samples becomes its min and max,
    so peaks survive (a plain stride would alias fast activity into slow waves)."""
    step = int(np.ceil(len(t) / (max_points / 2))) if len(t) > max_points else 1
    if step == 1:
        return t, x, 1
    m = len(t) // step
    blocks = x[: m * step].reshape(m, step, x.shape[1])
    out = np.empty((2 * m, x.shape[1]))
    out[0::2], out[1::2] = blocks.min(axis=1), blocks.max(axis=1)
    return np.repeat(t[: m * step : step], 2), out, step
