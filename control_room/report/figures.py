"""One function per figure of the session report; each returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot): no display, no global
state, safe from any thread. A figure whose streams are missing raises ``Missing``; the caller draws
:func:`placeholder` instead. Points drawn are capped (the EEG excerpt is decimated, rasters keep
the last trials) so a long session renders as fast as a short one.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from control_room.report import analysis as an
from control_room.report.plotting import (
    DPI,
    PALETTE,
    WIDTH_IN,
    colours,
    envelope,
    new_figure,
    placeholder,
    style_axes,
)
from control_room.report.session import Missing, Session

__all__ = ["DPI", "WIDTH_IN", "placeholder"]  # re-exported: what callers need with the figures

EXCERPT_S = (3.0, 5.0)  # seconds before / after the chosen marker
MAX_POINTS = 3000  # per EEG channel in the excerpt
MAX_CHANNELS = 32  # evenly spread over the montage beyond this
MAX_TRIALS = 150
MAX_MARKER_LINES = 40
TRUTH_ALPHA = 0.18
EVENT_SHAPES = ["|", "x", "+", "1", "*", "^", "s", "o"]  # events beyond these are not drawn


# -- EEG excerpt -----------------------------------------------------------------------------------


def _excerpt_centre(session: Session, lo: float, hi: float) -> float:
    """A true-state change while the decoder ran, else any marker inside the EEG, else the middle."""
    try:
        dec = session.need("decoder")
        d0, d1 = session.rel(dec.time_stamps[[0, -1]])
    except Missing:
        d0, d1 = lo, hi
    for role in ("truth", "presenter", "bpod"):
        try:
            ts, _ = session.markers(role)
        except Missing:
            continue
        rel = session.rel(ts)
        ok = rel[(rel > max(lo, d0) + EXCERPT_S[0]) & (rel < min(hi, d1) - EXCERPT_S[1])]
        if not len(ok):
            ok = rel[(rel > lo + EXCERPT_S[0]) & (rel < hi - EXCERPT_S[1])]
        if len(ok):
            return float(ok[len(ok) // 2])
    return (lo + hi) / 2


def eeg_excerpt(session: Session) -> Figure:
    """A few seconds of every channel, stacked, with the markers of every stream as lines."""
    s = session.need("eeg")
    if s.time_series.shape[1] == 0:
        raise Missing(f"EEG stream {s.name!r} has no channels")
    t = session.rel(s.time_stamps)
    c = _excerpt_centre(session, float(t[0]), float(t[-1]))
    a, b = np.searchsorted(t, [c - EXCERPT_S[0], c + EXCERPT_S[1]])
    chans = np.unique(
        np.linspace(0, s.channel_count - 1, min(MAX_CHANNELS, s.channel_count)).round().astype(int)
    )
    tt, x, step = envelope(
        t[a:b], np.asarray(s.time_series[a:b][:, chans], dtype=float), MAX_POINTS
    )
    x = x - np.median(x, axis=0)
    spread = float(np.median(np.percentile(np.abs(x), 99, axis=0))) or 1.0
    gap = 2.2 * spread
    n = x.shape[1]
    labels = [s.labels[i] for i in chans]
    fig = new_figure(
        max(4.0, (0.45 if n <= 12 else 0.28) * n + 2.4), left=0.8, top=0.35, hspace=0.0
    )
    ax_lab, ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, max(4, n // 2 + 1)])
    for i in range(n):
        ax.plot(tt, x[:, i] + (n - 1 - i) * gap, color="#222", linewidth=0.6)
    ax.set_yticks([(n - 1 - i) * gap for i in range(n)], labels)
    ax.set_ylim(-gap, n * gap)
    ax.set_xlim(tt[0], tt[-1])
    unit = s.units[0] or "a.u."
    unit = {"microvolts": "µV", "millivolts": "mV", "volts": "V"}.get(unit, unit)
    bar = float(f"{spread:.1g}")
    x_bar = tt[-1] - 0.01 * (tt[-1] - tt[0])
    ax.plot([x_bar, x_bar], [-0.8 * gap, -0.8 * gap + bar], color="black", linewidth=2.5)
    ax.text(x_bar, -0.8 * gap + bar / 2, f"{bar:g} {unit}  ", ha="right", va="center", fontsize=9)
    _marker_lines(ax, ax_lab, session, tt[0], tt[-1])
    ax.set_xlabel("time since recording start (s)")
    ax.spines[["top", "right"]].set_visible(False)
    ax_lab.set_title(
        f"EEG excerpt: {s.name}, "
        + (f"{n} of {s.channel_count} channels" if n < s.channel_count else f"{n} channels")
        + f" at {s.srate:g} Hz"
        + (f" (min and max of every {step} samples drawn)" if step > 1 else ""),
        loc="left",
    )
    return fig


def _marker_lines(ax, ax_lab, session: Session, lo: float, hi: float) -> None:  # noqa: ANN001
    """Dashed lines on ``ax``; their labels in the strip ``ax_lab`` above, in rows that do not
    collide. Markers of one stream at the same instant (a Bpod trial start and its first state)
    share one label."""
    items: list[tuple[float, str, str, str]] = []  # time, text, colour, stream
    for role, colour, what in (
        ("truth", "#d62728", "true state"),
        ("presenter", "#1f77b4", "presenter"),
        ("bpod", "#2ca02c", "Bpod trials and states"),
    ):
        try:
            ts, texts = session.markers(role)
        except Missing:
            continue
        name = f"{what}\n({session.roles[role].name})"
        for t, text in zip(session.rel(ts), texts, strict=True):
            if not lo <= t <= hi or (
                role == "bpod"
                and (text == "state:exit" or not text.startswith(("trial_", "state:")))
            ):
                continue
            text = text.removeprefix("state:").replace("trial_start:", "trial ")
            if text.startswith("trial_end:"):
                continue
            if items and items[-1][3] == name and abs(items[-1][0] - t) < 0.02:
                items[-1] = (items[-1][0], f"{items[-1][1]}: {text}", colour, name)
            else:
                items.append((float(t), text, colour, name))
    items = sorted(items)[:MAX_MARKER_LINES]
    ax_lab.set_axis_off()
    ax_lab.set_ylim(0, 1)
    rows = 3
    ends = [-np.inf] * rows  # right end (data units) of the last label in each row
    per_char = (hi - lo) / 140  # ~140 characters of 8 pt across the axes
    handles = {}
    for t, text, colour, name in items:
        handles.setdefault(name, ax.axvline(t, color=colour, linewidth=1.1, linestyle="--"))
        row = min(range(rows), key=lambda r: (ends[r] > t, ends[r]))
        ends[row] = t + per_char * (len(text) + 2)
        y = 0.05 + 0.3 * row
        ax_lab.plot([t, t], [0, y], color=colour, linewidth=0.8)
        ax_lab.text(t, y, f" {text}", fontsize=8, color=colour, va="bottom", ha="left")
    if handles:
        ax.legend(handles.values(), list(handles), loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)  # fmt: skip


# -- marker timeline -------------------------------------------------------------------------------


def _kind(text: str) -> str:
    """What a marker's colour stands for: the text before ':', or a command's module."""
    if text.startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError:
            return "?"
        return str(d.get("module")) if isinstance(d, dict) else "?"
    return text.split(":", 1)[0]


def marker_timeline(session: Session) -> Figure:
    """Every marker stream on its own row over the whole session, coloured by marker kind."""
    streams = [s for s in session.marker_streams() if s.n_samples]
    if not streams:
        empty = [s.name for s in session.marker_streams()]
        raise Missing(
            "no marker stream has samples"
            + (f" (empty: {', '.join(empty)})" if empty else " (the recording has none)")
        )
    fig = new_figure(1.0 + 0.8 * len(streams), left=1.9, right=3.6, hspace=0.25)
    axes = np.atleast_1d(fig.subplots(len(streams), 1, sharex=True))
    truth = session.roles.get("truth")
    for ax, s in zip(axes, streams, strict=True):
        ax.set_yticks([])
        ax.spines[["top", "right", "left"]].set_visible(False)
        ax.grid(True, axis="x", color="#e6e6e6")
        ax.set_ylabel(s.name, rotation=0, ha="right", va="center", fontsize=10)
        ax.set_ylim(-0.5, 0.5)
        rel = session.rel(s.time_stamps)
        if truth is not None and s is truth:
            segs = an.truth_segments(session)
            col = colours(sorted({x[2] for x in segs}))
            for a, b, lab in segs:
                ax.axvspan(a, b, 0.15, 0.85, color=col[lab], alpha=0.55, linewidth=0)
            for lab, cc in col.items():
                ax.fill_between([], [], color=cc, alpha=0.55, label=lab)
        else:
            kinds = [_kind(x) for x in s.strings()]
            top = [k for k, _ in Counter(kinds).most_common(9)]
            col = colours(top)
            for k in [*top, "other"]:
                sel = [
                    i for i, kk in enumerate(kinds) if kk == k or (k == "other" and kk not in col)
                ]
                if sel:
                    ax.vlines(rel[sel], -0.35, 0.35, color=col.get(k, "#999"), linewidth=1.3,
                              label=f"{k} ({len(sel)})")  # fmt: skip
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False,
                  ncol=3, columnspacing=1.0, handlelength=1.0)  # fmt: skip
    end = max(1.0, session.rel(session.t1))
    axes[-1].set_xlim(-0.01 * end, 1.01 * end)
    axes[-1].set_xlabel("time since recording start (s)")
    axes[0].set_title(
        "Markers over the session (one row per marker stream; counts in brackets)", loc="left"
    )
    return fig


# -- decoder ---------------------------------------------------------------------------------------


def decoder_output(session: Session) -> Figure:
    """P(positive class) over time, the thresholds in effect, the true state and the switches."""
    tr = an.decoder_trace(session)
    fig = new_figure(4.8, top=0.65, hspace=0.12)
    ax, ax_state = fig.subplots(2, 1, sharex=True, height_ratios=[4, 1])
    style_axes(ax)
    lo, hi = float(tr.t[0]) - 2.0, float(tr.t[-1]) + 0.5
    try:
        segs = an.truth_segments(session)
    except Missing:
        segs = []
    col = colours(sorted({x[2] for x in segs} | set(tr.classes)))
    shown = set()
    for a, b, lab in segs:
        if b < lo or a > hi:
            continue
        ax.axvspan(max(a, lo), min(b, hi), color=col[lab], alpha=TRUTH_ALPHA, linewidth=0,
                   label=None if lab in shown else f"true state: {lab}")  # fmt: skip
        shown.add(lab)
    ax.plot(tr.t, tr.p, color="black", linewidth=1.0, label=f"P({tr.positive})")
    for key, style, name in (
        ("on_threshold", "#d62728", "on"),
        ("off_threshold", "#1f77b4", "off"),
    ):
        xs, ys = _param_steps(tr.params, key, lo, hi)
        value = f" ({ys[0]:g})" if len(set(ys)) == 1 else " (changed by SET)"
        ax.step(xs, ys, where="post", color=style, linestyle="--", linewidth=1.3,
                label=f"{name} threshold{value}")  # fmt: skip
    try:
        ts, texts = session.markers("bpod")
        ev = f"event:{tr.notify_event or 'SoftCode'}"
        t_ev = session.rel(
            np.array([t for t, x in zip(ts, texts, strict=True) if x.startswith(ev)])
        )
        if len(t_ev):
            ax.plot(t_ev, np.full(len(t_ev), 1.04), "v", color="#2ca02c", markersize=6,
                    clip_on=False, label=f"Bpod {ev}")  # fmt: skip
    except Missing:
        pass
    ax.set_ylim(-0.02, 1.08)
    ax.set_ylabel(f"P({tr.positive})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    agree = an.agreement(tr, segs) if segs else {}
    note = ""
    if "all" in agree:
        note = (
            f"\nthe more likely class is the true state in {100 * agree['all']:.0f}% of "
            f"{agree['n']} outputs"
        )
        if "settled" in agree:
            note += f" ({100 * agree['settled']:.0f}% once a full window is in the new state)"
    ax.set_title(f"Decoder output: {session.roles['decoder'].name}{note}", loc="left")
    ax_state.step(tr.t, tr.state, where="post", color="#9467bd", linewidth=1.2)
    ax_state.fill_between(tr.t, tr.state, step="post", color="#9467bd", alpha=0.3)
    ax_state.set_yticks([0, 1], ["off", "on"])
    ax_state.set_ylim(-0.1, 1.1)
    ax_state.set_ylabel("controller", fontsize=9)
    ax_state.text(1.005, 0.5, "recorded" if tr.state_recorded else "replayed from\nthe thresholds",
                  transform=ax_state.transAxes, fontsize=8, va="center")  # fmt: skip
    style_axes(ax_state)
    ax_state.set_xlim(lo, hi)
    ax_state.set_xlabel("time since recording start (s)")
    return fig


def _param_steps(params: list, key: str, lo: float, hi: float) -> tuple[list[float], list[float]]:
    xs, ys = [lo], [params[0][1][key]]
    for t, p in params[1:]:
        if t <= lo:
            ys[0] = p[key]
        elif t < hi:
            xs.append(t)
            ys.append(p[key])
    xs.append(hi)
    ys.append(ys[-1])
    return xs, ys


# -- Bpod trials -----------------------------------------------------------------------------------


def bpod_raster(session: Session) -> Figure:
    """Trials as rows, each state a coloured bar from its entry to its exit; events as ticks."""
    trials = an.bpod_trials(session)
    if not trials:
        raise Missing(f"no trial_start marker in {session.roles['bpod'].name!r}")
    cut = len(trials) - MAX_TRIALS if len(trials) > MAX_TRIALS else 0
    shown = trials[cut:]
    states = [name for tr in shown for name, _, _ in tr.states]
    col = colours(states)
    fig = new_figure(min(9.0, 1.3 + 0.22 * len(shown)), left=0.7)
    ax = fig.add_subplot()
    style_axes(ax)
    for name, c in col.items():
        segs = np.array(
            [(tr.number, a, b - a) for tr in shown for n, a, b in tr.states if n == name]
        )
        ax.barh(segs[:, 0], segs[:, 2], left=segs[:, 1], height=0.75, color=c, linewidth=0,
                label=f"state {name}")  # fmt: skip
    ev_names = sorted({e for tr in shown for e, _ in tr.events if e != "Tup"})
    for e, shape in zip(ev_names, EVENT_SHAPES, strict=False):
        pts = [(t, tr.number) for tr in shown for n, t in tr.events if n == e]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], shape, color="black", markersize=10,
                markeredgewidth=2, label=f"event {e}")  # fmt: skip
    errs = [tr.number for tr in shown if tr.error]
    if errs:
        ax.plot(np.zeros(len(errs)), errs, "x", color="red", label="trial error")
    ax.set_ylim(shown[-1].number + 0.7, shown[0].number - 0.7)
    if len(shown) <= 30:
        ax.set_yticks([tr.number for tr in shown])
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=25))
    ax.set_xlabel("time since trial start (s)")
    ax.set_ylabel("trial")
    more = f" (last {len(shown)} of {len(trials)})" if cut else ""
    ax.set_title(f"Bpod trials: {len(trials)} trials{more}, states as bars", loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_xlim(left=0)
    return fig


# -- latencies -------------------------------------------------------------------------------------


def latency_histograms(session: Session) -> tuple[Figure, list[an.Latency]]:
    """One histogram per measurable latency (see ``analysis``); unmeasurable ones say why."""
    lats = an.latencies(session)
    if all(lat.missing for lat in lats):
        raise Missing("; ".join(f"{lat.title}: {lat.missing}" for lat in lats))
    fig = new_figure(3.6, left=0.6, right=0.2, top=0.6, wspace=0.22)
    axes = fig.subplots(1, len(lats))
    for ax, lat in zip(axes, lats, strict=True):
        style_axes(ax)
        ax.set_title(lat.title, fontsize=10, loc="left")
        ax.set_xlabel(f"latency ({lat.unit})")
        ax.set_ylabel("count")
        v = lat.values
        if lat.missing or not len(v):
            ax.text(0.5, 0.5, lat.missing or "no pair could be matched", ha="center",
                    va="center", wrap=True, fontsize=9, color="#555", transform=ax.transAxes)  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        groups = lat.groups or [""] * len(v)
        names = sorted(set(groups))
        med = float(np.median(v))
        n_bins = 30 if len(v) >= 5 else 10
        if v.min() > 0 and v.max() > 8 * med:  # a long tail: log-spaced bins show both ends
            edges = np.geomspace(v.min() * 0.9, v.max() * 1.1, n_bins + 1)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(f"latency ({lat.unit}, log scale)")
        else:
            edges = np.histogram_bin_edges(v, bins=n_bins)
        ax.hist([v[[g == n for g in groups]] for n in names], bins=edges, stacked=True,
                color=PALETTE[: len(names)], edgecolor="white", label=names)  # fmt: skip
        ax.plot(v, np.zeros(len(v)), "|", color="black", markersize=12, clip_on=False)
        ax.axvline(med, color="#d62728", linewidth=1.5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        digits = 1 if lat.unit == "ms" else 2
        stats = [f"n = {len(v)}", f"median {med:.{digits}f}"]
        if len(v) >= 20:
            stats.append(f"p95 {np.percentile(v, 95):.{digits}f}")
        stats.append(f"max {v.max():.{digits}f} {lat.unit}")
        if lat.unmatched:
            stats.append(f"unpaired {lat.unmatched}")
        ax.set_title(f"{lat.title}\n{', '.join(stats)}", fontsize=10, loc="left")
        if len(names) > 1:
            ax.legend(loc="upper center", fontsize=8, frameon=False)
    return fig, lats
