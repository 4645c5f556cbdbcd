"""Session report: pictures of a recording, written next to it as one HTML file plus PNGs.

``write_report("data/mesh_x.xdf")`` writes ``data/mesh_x_report.html`` (self-contained, figures
embedded) and ``data/mesh_x_report/*.png`` (the same figures as files). A figure whose streams are
missing or empty becomes a placeholder that says why, and the page lists it under "Skipped"; only
a missing or unreadable recording is an error (``XdfReadError``). The recording is read through
``shared_utils.streams.xdf_reader`` only; no service code is imported.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control_room.report.session import Missing, ReportExtras, Session, load_session
from shared_utils.streams.xdf_reader import XdfReadError

__all__ = [
    "FIGURES",
    "ReportExtras",
    "ReportResult",
    "XdfReadError",
    "report_after_run",
    "write_report",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# name -> (title, caption); the order is the page's order
FIGURES: dict[str, tuple[str, str]] = {
    "eeg_excerpt": (
        "EEG excerpt",
        "A few seconds of every EEG channel (median removed, stacked; the bar gives the scale), "
        "around a true-state change while the decoder ran. Dashed lines: markers of the mock "
        "EEG (true state), the presenter and the Bpod (trial starts and states).",
    ),
    "markers": (
        "Markers over the session",
        "Every marker stream on its own row over the whole recording, coloured by kind (the text "
        "before ':'; for control-room commands, the module commanded), with counts. The "
        "true-state stream is drawn as spans: each label holds until the next marker.",
    ),
    "decoder": (
        "Decoder output",
        "The decoder's probability of the positive class against the on/off thresholds in effect "
        "(from its START/SET commands in the recording, or given to the report), over the true "
        "state (shaded). Bottom: the controller's on/off state, recorded when the decoder runs in "
        "control mode, else replayed from the thresholds. Triangles: the Bpod events the "
        "decoder's switches caused.",
    ),
    "bpod_trials": (
        "Bpod trials",
        "One row per trial; each state is a bar from its entry to its exit, in seconds since the "
        "trial started. Ticks: events other than Tup (timer ends, which coincide with state "
        "changes). Times are the device's own clock.",
    ),
    "latencies": (
        "Latencies",
        "Histograms of delays measured between timestamps in the file (red line: median; ticks "
        "under the axis: each value). What each one pairs, and what could not be paired, is in "
        "the table below.",
    ),
    "presenter_screenshot": (
        "Presenter screenshot",
        "The presenter's window as last captured (SCREENSHOT command).",
    ),
}


@dataclass
class ReportResult:
    """Where the report went and what it holds."""

    html: Path
    figures: dict[str, Path]  # every figure file, placeholders included
    skipped: dict[str, str] = field(default_factory=dict)  # figure name -> why it is a placeholder
    seconds: float = 0.0


def report_paths(xdf_path: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(HTML file, figure folder) for a recording: ``<stem>_report.html`` and ``<stem>_report/``."""
    xdf = Path(xdf_path).expanduser().resolve()
    base = Path(out_dir).expanduser().resolve() if out_dir else xdf.parent
    return base / f"{xdf.stem}_report.html", base / f"{xdf.stem}_report"


def find_screenshot(xdf_path: str | Path) -> Path | None:
    """A presenter screenshot saved next to the recording (``<file>.png``, ``<stem>.png``,
    ``<stem>_screenshot.png`` or ``<stem>_screen.png``), if there is one."""
    xdf = Path(xdf_path).expanduser().resolve()
    for name in (f"{xdf.name}.png", f"{xdf.stem}.png", f"{xdf.stem}_screenshot.png",
                 f"{xdf.stem}_screen.png"):  # fmt: skip
        if (xdf.parent / name).is_file():
            return xdf.parent / name
    return None


def write_report(
    xdf_path: str | Path,
    out_dir: str | Path | None = None,
    extras: ReportExtras | dict[str, Any] | None = None,
) -> ReportResult:
    """Write the report for ``xdf_path``; raises ``XdfReadError`` if it cannot be read."""
    from control_room.report import figures as fg
    from control_room.report.html import FigureOut, render

    t_start = time.perf_counter()
    extras = ReportExtras.coerce(extras)
    session = load_session(xdf_path, extras)
    html_path, fig_dir = report_paths(session.path, out_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    lats: list[Any] = []

    def latencies(s: Session) -> Any:
        fig, found = fg.latency_histograms(s)
        lats.extend(found)
        return fig

    makers: dict[str, Callable[[Session], Any]] = {
        "eeg_excerpt": fg.eeg_excerpt,
        "markers": fg.marker_timeline,
        "decoder": fg.decoder_output,
        "bpod_trials": fg.bpod_raster,
        "latencies": latencies,
    }
    outs: list[FigureOut] = []
    for name, make in makers.items():
        title, caption = FIGURES[name]
        path = fig_dir / f"{name}.png"
        reason = None
        try:
            fig = make(session)
        except Missing as exc:
            reason = str(exc)
        except Exception as exc:  # a figure that fails must not cost the others
            reason = f"drawing failed: {type(exc).__name__}: {exc}"
        if reason is not None:
            fig = fg.placeholder(title, reason)
        fig.savefig(path, dpi=fg.DPI, format="png")
        outs.append(FigureOut(name, title, caption, path, reason))
    if not lats:  # the histogram figure was skipped: keep the per-latency reasons for the table
        from control_room.report.analysis import latencies as measure

        lats = measure(session)
    outs.append(_screenshot(session, fig_dir, fg))
    html_path.write_text(
        render(session, outs, lats, dict(extras.notes), extras.title), encoding="utf-8"
    )
    return ReportResult(
        html=html_path,
        figures={f.name: f.path for f in outs},
        skipped={f.name: f.skipped for f in outs if f.skipped},
        seconds=round(time.perf_counter() - t_start, 3),
    )


def _screenshot(session: Session, fig_dir: Path, fg: Any) -> Any:
    """Copy the presenter screenshot into the figure folder, or draw a placeholder saying why."""
    from control_room.report.html import FigureOut

    name = "presenter_screenshot"
    title, caption = FIGURES[name]
    path = fig_dir / f"{name}.png"
    given = session.extras.screenshot
    src = Path(given).expanduser() if given else find_screenshot(session.path)
    reason = None
    if src is None:
        reason = (
            f"no screenshot given and none next to the recording (looked for "
            f"{session.path.name}.png, {session.path.stem}.png, {session.path.stem}_screenshot.png)"
        )
    elif not src.is_file():
        reason = f"screenshot file not found: {src}"
    else:
        with src.open("rb") as f:
            if f.read(8) != PNG_MAGIC:
                reason = f"{src} is not a PNG file"
    if reason is None:
        if src.resolve() != path.resolve():
            shutil.copyfile(src, path)
        caption += f" Source: {src}."
    else:
        fg.placeholder(title, reason).savefig(path, dpi=fg.DPI, format="png")
    return FigureOut(name, title, caption, path, reason)


# summary keys (control_room.summary) shown in the report's "Run summary" table
RUN_NOTES = {
    "macro": "macro",
    "steps_ok": "steps that succeeded",
    "decoder_accuracy": "decoder cross-validated accuracy",
    "decoder_latency_ms": "decoder latency, ms (as the decoder measured it)",
    "trials": "Bpod trials",
    "trial_states": "trials visiting each state",
    "command_rtt_ms": "command reply times, ms",
}


def report_after_run(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The end-of-run hook: the report of ``summary["file"]`` next to it, never an exception.

    Returns ``{"html", "skipped", "seconds"}``, ``{"error"}`` when it could not be written, or
    None when the run recorded no file. The run's figures go into the report's summary table.
    """
    file = summary.get("file")
    if not file:
        return None
    notes = {
        label: summary[k] for k, label in RUN_NOTES.items() if summary.get(k) not in (None, {})
    }
    try:
        res = write_report(file, extras={"notes": notes})
    except Exception as exc:  # the recording is safe whatever happens here; say why, go on
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"html": str(res.html), "skipped": res.skipped, "seconds": res.seconds}
