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

Long recordings: pyxdf keeps every chunk and then concatenates them, so a numeric stream costs
twice its size in memory while loading (an hour of 64 ch at 1 kHz: 1.8 GB). ``spool_dir`` writes
each numeric chunk to a file there as pyxdf reads it; the stream's ``time_series`` is then a
read-only ``numpy.memmap`` and :meth:`XdfStream.blocks` reads it in slices from the file, so memory
holds the timestamps only. The caller owns (and removes) ``spool_dir``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared_utils.checks import unknown_message
from shared_utils.streams.lsl import complete_labels
from shared_utils.streams.xdf_format import complete_prefix
from shared_utils.streams.xdf_spool import ChunkSpool, FilePrefix

__all__ = ["XdfFile", "XdfReadError", "XdfStream", "find_stream", "load_xdf", "read_xdf"]


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
    raw_labels: list[str] = field(default_factory=list)  # as in the file ("" where none was given)
    channel_types: list[str] = field(
        default_factory=list
    )  # desc/channels/channel/type ("" if none)
    clock_offsets: np.ndarray = field(  # (k, 2): [collection time, offset] as recorded
        default_factory=lambda: np.zeros((0, 2)), repr=False
    )

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

    @property
    def segments(self) -> list[tuple[int, int]]:
        """pyxdf's runs of evenly spaced samples, as inclusive (first, last) sample indices.

        More than one segment means the stream has gaps (dejitter found breaks).
        """
        segs = self.info.get("segments") or []
        return [(int(a), int(b)) for a, b in segs]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` of a numeric stream as an in-memory array.

        For a spooled stream (``time_series`` is a memmap) the rows are read from the file, so
        walking an hour of data slice by slice does not keep all of it mapped in memory.
        """
        data = self.time_series
        start, stop, _ = slice(start, stop).indices(len(data))
        if isinstance(data, np.memmap) and data.filename and stop > start:
            row_bytes = data.dtype.itemsize * self.channel_count
            with open(data.filename, "rb") as f:
                f.seek(data.offset + start * row_bytes)
                block = np.fromfile(f, dtype=data.dtype, count=(stop - start) * self.channel_count)
            return block.reshape(stop - start, self.channel_count)
        return np.array(data[start:stop])

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start_row, samples)`` in slices of at most ``rows`` samples (see :meth:`rows`)."""
        for start in range(0, self.n_samples, rows):
            yield start, self.rows(start, start + rows)

    def header(self, key: str, default: str = "") -> str:
        """A top-level header field as text (``desc`` excluded)."""
        return _first(self.info, key, default)

    def strings(self) -> list[str]:
        """A marker stream's samples as one string each (first channel)."""
        return [
            str(v[0]) if isinstance(v, list | tuple | np.ndarray) and len(v) else str(v)
            for v in self.time_series
        ]


@dataclass
class XdfFile:
    """A whole XDF file: its FileHeader fields (``datetime``, ``version``...) and its streams."""

    path: Path
    header: dict[str, str]
    streams: list[XdfStream]
    torn_bytes: int = 0  # bytes after the last complete chunk, ignored (a crash cut the file)


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
    return load_xdf(
        path, synchronize_clocks=synchronize_clocks, dejitter=dejitter, names=names
    ).streams


def load_xdf(
    path: str | Path,
    *,
    synchronize_clocks: bool = True,
    dejitter: bool = True,
    names: Iterable[str] | None = None,
    spool_dir: str | Path | None = None,
    gap_s: float = 1.0,
    gap_samples: int = 500,
) -> XdfFile:
    """Like :func:`read_xdf`, plus the file header; ``spool_dir`` keeps samples out of memory
    (see the module docstring).

    ``gap_s``/``gap_samples``: dejitter starts a new segment where consecutive timestamps are
    further apart than both (pyxdf's defaults, 1 s and 500 samples, let a 3 s gap at 100 Hz
    pass and stretch the fitted rate over it; an export wants gaps found).
    """
    try:
        import pyxdf
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise XdfReadError("reading XDF needs the 'pyxdf' package (pip install pyxdf)") from exc
    p = Path(path).expanduser()
    if not p.is_file():
        raise XdfReadError(f"XDF file not found: {p}")
    kwargs = {
        "synchronize_clocks": synchronize_clocks,
        "dejitter_timestamps": dejitter,
        "jitter_break_threshold_seconds": gap_s,
        "jitter_break_threshold_samples": gap_samples,
    }
    torn = 0
    try:
        spool, raw, header = _load(pyxdf, p, spool_dir, kwargs, None)
    except XdfReadError:
        raise
    except Exception as exc:  # pyxdf raises many types for a damaged or foreign file
        # pyxdf survives a crash-cut Samples chunk but not a cut ClockOffset or footer chunk:
        # read again up to the last complete chunk, as a crash-safe reader should
        size = p.stat().st_size
        with open(p, "rb") as f:
            end = complete_prefix(f, size)
        if not 4 < end < size:
            raise XdfReadError(f"cannot read {p} as XDF: {type(exc).__name__}: {exc}") from exc
        try:
            spool, raw, header = _load(pyxdf, p, spool_dir, kwargs, end)
        except Exception:
            raise XdfReadError(f"cannot read {p} as XDF: {type(exc).__name__}: {exc}") from exc
        torn = size - end
    wanted = set(names) if names is not None else None
    streams = []
    for s in raw:
        if wanted is not None and _first(s["info"], "name") not in wanted:
            continue
        if spool is not None:
            spool.attach(s)
        streams.append(_stream(s))
    info = header.get("info", {}) if isinstance(header, dict) else {}
    fields = {k: _first(info, k) for k in info if isinstance(k, str)}
    return XdfFile(path=p, header=fields, streams=streams, torn_bytes=torn)


def _load(pyxdf: Any, p: Path, spool_dir: Any, kwargs: dict, limit: int | None) -> tuple:
    """One pyxdf pass over ``p`` (only its first ``limit`` bytes when given)."""
    spool = ChunkSpool(Path(spool_dir)) if spool_dir is not None else None
    source: Any = str(p)
    if limit is not None:
        source = io.BufferedReader(FilePrefix(p, limit), buffer_size=1 << 16)
    try:
        raw, header = pyxdf.load_xdf(
            source, on_chunk=spool.on_chunk if spool is not None else None, **kwargs
        )
    finally:
        if spool is not None:
            spool.close()
        if limit is not None:
            source.close()
    if spool is not None and spool.error is not None:
        # pyxdf takes any error in on_chunk for file damage and skips ahead: never let a full
        # disk pass for a short recording
        raise XdfReadError(f"cannot spool samples of {p}: {spool.error}") from spool.error
    return spool, raw, header


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
    raw_labels = [_first(c, "label") for c in chans if isinstance(c, dict)][:n_ch]
    raw_labels += [""] * (n_ch - len(raw_labels))
    labels = complete_labels(raw_labels, n_ch)
    types = [_first(c, "type") for c in chans if isinstance(c, dict)][:n_ch]
    types += [""] * (n_ch - len(types))
    units = [_first(c, "unit") for c in chans if isinstance(c, dict)][:n_ch]
    units += [""] * (n_ch - len(units))
    fmt = _first(info, "channel_format", "float32")
    series = s.get("time_series")
    if fmt != "string" and not isinstance(series, np.memmap):
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
        raw_labels=raw_labels,
        channel_types=types,
        clock_offsets=np.column_stack(
            [
                np.asarray(s.get("clock_times", []), dtype=np.float64),
                np.asarray(s.get("clock_values", []), dtype=np.float64),
            ]
        ).reshape(-1, 2),
    )
