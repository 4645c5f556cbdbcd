"""Reading XDF files: the one place that calls pyxdf, with errors a person can act on.

pyxdf is the reference reader (LabRecorder's files, ours, anyone's). What every caller needs on top
of it lives here: a missing file or an unreadable one is an :class:`XdfReadError` naming the file,
streams come back as :class:`XdfStream` objects with their header fields already parsed (name,
type, source, rate, format, channel labels and units), channels without labels get the mesh-wide
default names (``ch1..chN``, as live streams do), and a stream is looked up by name with the names
present in the error.

Clock handling is the caller's choice: ``synchronize_clocks`` puts every stream on the
recording host's LSL clock (use it whenever streams are compared with each other), ``dejitter``
replaces regular streams' timestamps by a linear fit (good for analysis, wrong for replay).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared_utils.checks import unknown_message
from shared_utils.streams.lsl import complete_labels

__all__ = ["XdfReadError", "XdfStream", "find_stream", "read_xdf"]


class XdfReadError(ValueError):
    """The file is missing, not XDF, or lacks what the caller asked for; the text says which."""


@dataclass
class XdfStream:
    """One stream of an XDF file: parsed header fields plus pyxdf's samples and timestamps."""

    name: str
    type: str
    source_id: str
    hostname: str
    srate: float  # nominal; 0 for irregular (marker) streams
    channel_format: str
    labels: list[str]
    units: list[str]
    time_stamps: np.ndarray  # (n,) seconds on the LSL clock
    time_series: Any  # (n, channels) array for numeric streams, a list of lists for strings
    info: dict[str, Any] = field(repr=False)  # pyxdf's raw header (values are 1-element lists)
    footer: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def channel_count(self) -> int:
        return len(self.labels)

    @property
    def n_samples(self) -> int:
        return len(self.time_stamps)

    @property
    def numeric(self) -> bool:
        return self.channel_format != "string"

    @property
    def effective_srate(self) -> float:
        """pyxdf's fitted rate (0 when unknown); prefer it to ``srate`` for placing events."""
        try:
            return float(self.info.get("effective_srate") or 0.0)
        except (TypeError, ValueError):
            return 0.0

    def header(self, key: str, default: str = "") -> str:
        """A top-level header field as text (``desc`` excluded)."""
        return _first(self.info, key, default)

    def strings(self) -> list[str]:
        """A marker stream's samples as one string each (first channel)."""
        return [
            str(v[0]) if isinstance(v, list | tuple | np.ndarray) and len(v) else str(v)
            for v in self.time_series
        ]


def read_xdf(
    path: str | Path,
    *,
    synchronize_clocks: bool = True,
    dejitter: bool = True,
    names: Iterable[str] | None = None,
) -> list[XdfStream]:
    """Load ``path`` with pyxdf; ``names`` keeps only the streams with these names.

    Raises :class:`XdfReadError` for a missing or unreadable file. A file cut short by a crash
    loads up to its last complete chunk (pyxdf's behaviour); streams without samples are kept,
    with empty arrays, so callers can report them.
    """
    try:
        import pyxdf
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise XdfReadError("reading XDF needs the 'pyxdf' package (pip install pyxdf)") from exc
    p = Path(path).expanduser()
    if not p.is_file():
        raise XdfReadError(f"XDF file not found: {p}")
    try:
        raw, _header = pyxdf.load_xdf(
            str(p), synchronize_clocks=synchronize_clocks, dejitter_timestamps=dejitter
        )
    except Exception as exc:  # pyxdf raises many types for a damaged or foreign file
        raise XdfReadError(f"cannot read {p} as XDF: {type(exc).__name__}: {exc}") from exc
    wanted = set(names) if names is not None else None
    streams = [_stream(s) for s in raw]
    return [s for s in streams if wanted is None or s.name in wanted]


def find_stream(streams: list[XdfStream], name: str, role: str = "stream") -> XdfStream:
    """The stream called ``name``; the error lists the names present (with a did-you-mean).

    When several streams share the name (two rigs, a restarted source), the one with the most
    samples wins: it is the one a person means.
    """
    matches = [s for s in streams if s.name == name]
    if not matches:
        raise XdfReadError(
            unknown_message(f"{role} stream", name, sorted({s.name for s in streams}))
        )
    return max(matches, key=lambda s: s.n_samples)


def _first(info: dict[str, Any], key: str, default: str = "") -> str:
    value = info.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    return default if value is None else str(value)


def _channels(info: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        chans = info["desc"][0]["channels"][0]["channel"]
    except (KeyError, IndexError, TypeError):
        return []
    return chans if isinstance(chans, list) else []


def _stream(s: dict[str, Any]) -> XdfStream:
    info = s["info"]
    n_ch = int(float(_first(info, "channel_count", "1")))
    chans = _channels(info)
    labels = complete_labels([_first(c, "label") for c in chans if isinstance(c, dict)], n_ch)
    units = [_first(c, "unit") for c in chans if isinstance(c, dict)][:n_ch]
    units += [""] * (n_ch - len(units))
    fmt = _first(info, "channel_format", "float32")
    series = s.get("time_series")
    if fmt != "string":
        series = np.asarray(series if series is not None else np.zeros((0, n_ch)))
        if series.ndim == 1:
            series = series.reshape(-1, n_ch) if series.size else np.zeros((0, n_ch))
    elif series is None:
        series = []
    return XdfStream(
        name=_first(info, "name"),
        type=_first(info, "type"),
        source_id=_first(info, "source_id"),
        hostname=_first(info, "hostname"),
        srate=float(_first(info, "nominal_srate", "0") or 0.0),
        channel_format=fmt,
        labels=labels,
        units=units,
        time_stamps=np.asarray(s.get("time_stamps", []), dtype=np.float64).reshape(-1),
        time_series=series,
        info=info,
        footer=s.get("footer"),
    )
