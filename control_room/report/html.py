"""The report page: one self-contained HTML file, every figure embedded as a base64 data URI.

Self-contained because the file travels: it is mailed, attached to a lab notebook, opened on a
machine without the recording or the network. No script, no external style sheet or font.
"""

from __future__ import annotations

import base64
import datetime as _dt
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from control_room.report.analysis import Latency
from control_room.report.session import Session

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1240px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; margin-top: 0.3em; }
.skipped { color: #8a4b00; } .meta { color: #666; font-size: 0.9em; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


@dataclass
class FigureOut:
    """A figure as written: its file, what it shows, and why it is a placeholder if it is one."""

    name: str
    title: str
    caption: str
    path: Path
    skipped: str | None = None


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _streams_table(session: Session) -> str:
    rows = []
    for s in session.streams:
        first = f"{session.rel(float(s.time_stamps[0])):.2f}" if s.n_samples else "-"
        last = f"{session.rel(float(s.time_stamps[-1])):.2f}" if s.n_samples else "-"
        rate = f"{s.srate:g} Hz" if s.srate else "irregular"
        roles = [r for r, st in session.roles.items() if st is s]
        rows.append(
            f"<tr><td>{escape(s.name)}</td><td>{escape(s.type)}</td>"
            f"<td class=num>{s.channel_count}</td><td>{rate}</td><td class=num>{s.n_samples}</td>"
            f"<td class=num>{first}</td><td class=num>{last}</td>"
            f"<td>{escape(', '.join(roles)) or '-'}</td></tr>"
        )
    head = (
        "<tr><th>stream</th><th>type</th><th>channels</th><th>rate</th><th>samples</th>"
        "<th>first (s)</th><th>last (s)</th><th>used as</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _kv_table(items: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(_fmt(v))}</td></tr>" for k, v in items.items()
    )
    return f"<table>{rows}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


def _latency_table(lats: list[Latency]) -> str:
    rows = []
    for lat in lats:
        v = lat.values
        if lat.missing or not len(v):
            why = escape(lat.missing or "no pair matched")
            stats = f"<td colspan=5 class=skipped>not measured: {why}</td>"
        else:
            d = 1 if lat.unit == "ms" else 3
            p95 = f"{np.percentile(v, 95):.{d}f} {lat.unit}" if len(v) >= 20 else "- (n < 20)"
            stats = "".join(
                f"<td class=num>{x}</td>"
                for x in (
                    len(v),
                    f"{np.median(v):.{d}f} {lat.unit}",
                    p95,
                    f"{v.max():.{d}f} {lat.unit}",
                    lat.unmatched,
                )
            )
        rows.append(f"<tr><td><b>{escape(lat.title)}</b><br>{escape(lat.how)}</td>{stats}</tr>")
    head = (
        "<tr><th>what is measured, and how</th><th>n</th><th>median</th><th>p95</th>"
        "<th>max</th><th>unpaired</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def render(
    session: Session,
    figures: list[FigureOut],
    lats: list[Latency],
    notes: dict[str, Any],
    title: str | None = None,
) -> str:
    """The whole page as text."""
    p = session.path
    size = p.stat().st_size if p.exists() else 0
    title = title or f"Session report: {p.name}"
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    meta = {
        "recording": str(p),
        "size": f"{size / 1e6:.2f} MB",
        "duration": f"{session.t1 - session.t0:.1f} s (first to last sample of any stream)",
        "streams": len(session.streams),
        "report written": now,
    }
    skipped = [f for f in figures if f.skipped]
    parts = [
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>",
        _kv_table(meta),
    ]
    if notes:
        parts += ["<h2>Run summary</h2>", _kv_table(notes)]
    parts += ["<h2>Streams</h2>", _streams_table(session)]
    parts.append("<h2>Skipped</h2>")
    if skipped:
        parts.append(
            "<ul class=skipped>"
            + "".join(
                f"<li><b>{escape(f.title)}</b>: {escape(f.skipped or '')}</li>" for f in skipped
            )
            + "</ul>"
        )
    else:
        parts.append("<p>Nothing: every figure was drawn.</p>")
    for f in figures:
        parts.append(
            f'<h2 id="{f.name}">{escape(f.title)}</h2><figure>'
            f'<img alt="{escape(f.title)}" src="{data_uri(f.path)}">'
            f"<figcaption>{escape(f.caption)} <span class=meta>File: {escape(f.path.name)}</span>"
            "</figcaption></figure>"
        )
        if f.name == "latencies":
            parts.append(_latency_table(lats))
    parts.append("</body></html>\n")
    return "\n".join(parts)
