"""A live look at one LSL stream in the terminal: ``python -m shared_utils.streams.view NAME``
(also ``control-room view NAME``). Without a name it lists the visible streams.

Why: the first question with a new amplifier or a new module is "is my stream there, at the rate
I think, with signal on every channel?". This answers it with no GUI and no code, on any OS:
one line per channel with a sparkline of the newest seconds, its range and latest value, under a
header with the nominal and measured rate, the lag and the gaps (from :class:`StreamWatcher`).
Marker streams show their latest markers instead. LSL is set up as the modules set it up
(the loopback config unless ``LSLAPICFG`` names another), so it sees what the mesh sees.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

import click
import numpy as np
import pylsl

BARS = "▁▂▃▄▅▆▇█"
ASCII_BARS = "_.-~=+*#"  # where the terminal cannot print block characters


@dataclass
class Look:
    """What one picture shows, and how often it is redrawn."""

    seconds: float = 2.0  # of the stream
    width: int = 40  # sparkline characters
    channels: int = 16  # at most
    every_s: float = 0.25


def sparkline(values: np.ndarray, width: int, bars: str = BARS) -> str:
    """``values`` (1-D) as ``width`` characters: each the mean of its share of the samples,
    scaled between the smallest and largest mean; blanks where there is no finite value."""
    if len(values) == 0 or width <= 0:
        return " " * max(width, 0)
    bins = [b for b in np.array_split(np.asarray(values, dtype=float), min(width, len(values)))]
    means = np.array([np.nanmean(b) if np.isfinite(b).any() else np.nan for b in bins])
    finite = means[np.isfinite(means)]
    if finite.size == 0:
        return " " * width
    lo, hi = float(finite.min()), float(finite.max())
    top = len(bars) - 1
    out = []
    for m in means:
        if not math.isfinite(m):
            out.append(" ")
        else:
            out.append(bars[0 if hi == lo else round((m - lo) / (hi - lo) * top)])
    return "".join(out).ljust(width)


def _bars_for(stream: IO[str]) -> str:
    """Block characters where the terminal can print them (UTF-8), ASCII elsewhere."""
    try:
        BARS.encode(getattr(stream, "encoding", None) or "ascii")
        return BARS
    except (UnicodeEncodeError, LookupError):
        return ASCII_BARS


def header(sw: Any) -> str:
    """Name, type, layout, nominal and measured rate, lag, gaps and samples."""
    st, info = sw.stats(), sw.stream
    kind = f"{info.type()}, " if info is not None and info.type() else ""
    fmt = info.channel_format() if info is not None else None
    from shared_utils.streams.lsl import FORMAT_NAMES

    layout = f"({kind}{st['channels']} ch, {FORMAT_NAMES.get(fmt, fmt)})"
    rate = f"{st['nominal_srate']:g} Hz nominal" if st["nominal_srate"] else "irregular"
    measured = st["effective_srate"]
    rate += f", {measured:.1f} Hz measured" if measured else ""
    lag = f", lag {st['lag_s'] * 1000:.0f} ms" if st["lag_s"] is not None else ""
    quiet = st["since_data_s"]
    stale = f", NO DATA for {quiet:.1f} s" if quiet is not None and quiet > 1.0 else ""
    return f"{sw.name} {layout} {rate}{lag}, {st['gaps']} gaps, {st['samples']} samples{stale}"


def frame(sw: Any, seconds: float, width: int, max_channels: int, bars: str = BARS) -> list[str]:
    """The lines of one picture of the stream."""
    from shared_utils.streams.lsl import default_channel_labels

    data, ts = sw.window(seconds=seconds, copy=True)  # pulls what liblsl holds: header is fresh
    lines = [header(sw)]
    if sw.stream is not None and sw.stream.channel_format() == pylsl.cf_string:  # markers
        now = pylsl.local_clock()
        shown = list(zip(ts[-max_channels:], data[-max_channels:], strict=True))
        lines += [f"  {t - now:8.2f} s  {' | '.join(map(str, row))}" for t, row in shown]
        return lines + ([] if shown else ["  (no markers since the viewer connected)"])
    labels = list(sw.ch_names) or default_channel_labels(data.shape[1] if data.ndim else 0)
    name_w = min(12, max((len(x) for x in labels[:max_channels]), default=3))
    for i, label in enumerate(labels[:max_channels]):
        col = data[:, i] if len(data) else np.empty(0)
        finite = col[np.isfinite(col)] if col.size else col
        numbers = "(no data yet)"
        if finite.size:
            rms = float(np.sqrt(np.mean((finite - finite.mean()) ** 2)))
            numbers = (
                f"{finite.min():9.4g} .. {finite.max():<9.4g} rms {rms:<9.3g} last {col[-1]:.4g}"
            )
        lines.append(f"{label[:name_w]:<{name_w}} {sparkline(col, width, bars)} {numbers}")
    if len(labels) > max_channels:
        lines.append(f"... {len(labels) - max_channels} more channels (--channels N shows more)")
    return lines


def list_lines(wait_s: float) -> list[str]:
    from shared_utils.streams.lsl import list_streams

    streams = list_streams(wait_s)
    if not streams:
        return ["no LSL streams visible (LSLAPICFG decides which network is searched)"]
    rows = [
        (
            s["name"],
            s["type"],
            str(s["channels"]),
            f"{s['srate']:g}" if s["srate"] else "irregular",
            s["format"],
            s["hostname"],
        )
        for s in streams
    ]
    heads = ("name", "type", "channels", "rate (Hz)", "format", "host")
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [heads, *rows]
    ]


def run_view(name: str, look: Look, once: bool, timeout_s: float, out: IO[str]) -> None:
    """Show ``name`` until Ctrl-C (redrawn in place on a terminal), or one picture with ``once``."""
    from shared_utils.streams.watcher import StreamWatcher

    bars, tty = _bars_for(out), out.isatty()
    with StreamWatcher(
        name,
        buffer_size_s=max(look.seconds, 1.0),
        background=True,
        clock_sync=True,
        timeout_s=timeout_s,
    ) as sw:
        sw.connect_to_stream()
        want = max(1, round(look.seconds * sw.srate)) if sw.srate else 1
        sw.wait_for_samples(want, timeout_s=look.seconds + timeout_s)
        shown = 0
        while True:
            lines = frame(sw, look.seconds, look.width, look.channels, bars)
            if tty and shown:
                out.write(f"\x1b[{shown}F\x1b[J")  # back to the first line of the last picture
            out.write("\n".join(line.rstrip() for line in lines) + "\n")
            out.flush()
            if once:
                return
            shown = len(lines) if tty else 0
            time.sleep(look.every_s if tty else max(look.every_s, 1.0))


@click.command(name="view")
@click.argument("stream", required=False)
@click.option("--seconds", default=2.0, show_default=True, help="How much of the stream to draw.")
@click.option("--width", default=0, help="Sparkline characters (default: fit the terminal).")
@click.option("--channels", default=16, show_default=True, help="At most this many channels.")
@click.option("--once", is_flag=True, help="Print one picture and exit (scripts, logs).")
@click.option(
    "--timeout",
    "timeout_s",
    default=5.0,
    show_default=True,
    help="Seconds to find the stream (its absence names the visible ones).",
)
@click.option("--every", "every_s", default=0.25, show_default=True, help="Redraw period (s).")
def view(
    stream: str | None,
    seconds: float,
    width: int,
    channels: int,
    once: bool,
    timeout_s: float,
    every_s: float,
) -> None:
    """Show a live LSL stream in the terminal: per channel a sparkline, range and last value,
    with its rate, lag and gaps. Without STREAM: list the visible streams."""
    from shared_utils.logging import configure_logging
    from shared_utils.streams.lsl import StreamNotFoundError, use_loopback

    use_loopback()  # before any LSL call, as every module does
    configure_logging("view", level="WARNING", log_server="none")  # the picture, not log lines
    if stream is None:
        click.echo("\n".join(list_lines(wait_s=max(1.0, min(timeout_s, 1.5)))))
        return
    if width <= 0:
        width = max(10, min(60, shutil.get_terminal_size((100, 24)).columns - 50))
    try:
        run_view(stream, Look(seconds, width, channels, every_s), once, timeout_s, sys.stdout)
    except StreamNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    view()
