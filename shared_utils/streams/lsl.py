"""LSL on this machine: network configuration, stream discovery and stream description.

liblsl reads its configuration once, lazily, at the first LSL call: the file named by the
``LSLAPICFG`` environment variable wins. Tests and ``make run`` point it at
``config/lsl_loopback.cfg`` so that no LSL traffic leaves the machine; child processes inherit the
variable. ``docs/configuration.md`` describes a config for a lab with several machines.
:func:`setup_lsl` is called once per module process, by ``run_module``, before any LSL call.

Discovery never waits forever: :func:`resolve` names the streams it did see when nothing matches.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pylsl

from shared_utils.checks import short
from shared_utils.logging import get_logger

log = get_logger("shared_utils.streams.lsl")


LOOPBACK_CONFIG = Path(__file__).resolve().parents[2] / "config" / "lsl_loopback.cfg"


def use_loopback(force: bool = False) -> Path:
    """Make this process (and its children) use the loopback-only LSL config.

    Must run before any pylsl call. An ``LSLAPICFG`` already set by the user is kept unless
    ``force`` is true. Returns the config file in effect.
    """
    if force or not os.environ.get("LSLAPICFG"):
        os.environ["LSLAPICFG"] = str(LOOPBACK_CONFIG)
    return Path(os.environ["LSLAPICFG"])


def setup_lsl(inlet_reserve_ms: int = 0) -> Path:
    """The one place a module process sets up LSL (called by ``run_module``, before any LSL call).

    Loads the loopback config unless the user chose one, and optionally bounds liblsl's per-inlet
    pre-reservation (``[tuning] InletBufferReserveMs``; its default of 5 s costs ~1.5 GB per inlet
    at 64 ch x 1 MHz). A config with its own ``[tuning]`` section is left alone.
    """
    cfg = use_loopback()
    if inlet_reserve_ms > 0:
        text = cfg.read_text() if cfg.is_file() else ""
        if not re.search(r"^\s*\[tuning\]", text, re.IGNORECASE | re.MULTILINE):
            pylsl.set_config_content(
                f"{text.rstrip()}\n\n[tuning]\nInletBufferReserveMs = {inlet_reserve_ms}\n"
            )
    return cfg


def default_channel_labels(n: int) -> list[str]:
    """Labels for channels a stream or file does not name: ``ch1..chN`` everywhere in the mesh.

    One rule for live streams and XDF files, so that a model fitted on a recording without labels
    matches the same stream live.
    """
    return [f"ch{i + 1}" for i in range(n)]


def complete_labels(labels: list[str] | None, n: int) -> list[str]:
    """``labels`` cut or padded to ``n`` channels; empty or missing ones get the default name."""
    given = list(labels or [])[:n]
    defaults = default_channel_labels(n)
    return [lab if lab else defaults[i] for i, lab in enumerate(given)] + defaults[len(given) :]


FORMAT_DTYPES: dict[int, Any] = {
    pylsl.cf_float32: np.float32,
    pylsl.cf_double64: np.float64,
    pylsl.cf_int8: np.int8,
    pylsl.cf_int16: np.int16,
    pylsl.cf_int32: np.int32,
    pylsl.cf_int64: np.int64,
    pylsl.cf_string: object,
}
FORMAT_NAMES = {
    pylsl.cf_float32: "float32",
    pylsl.cf_double64: "double64",
    pylsl.cf_int8: "int8",
    pylsl.cf_int16: "int16",
    pylsl.cf_int32: "int32",
    pylsl.cf_int64: "int64",
    pylsl.cf_string: "string",
}


class StreamNotFoundError(LookupError):
    """No stream matched within the timeout; ``visible`` names the streams that were seen."""

    def __init__(self, what: str, timeout_s: float, visible: list[str]) -> None:
        shown = ", ".join(sorted(visible)) if visible else "none"
        super().__init__(f"no LSL stream {what} within {timeout_s:g} s; visible streams: {shown}")
        self.visible = visible


# ------------------------------------------------------------------------------ discovery
def describe(info: pylsl.StreamInfo) -> dict[str, Any]:
    """JSON-friendly metadata of a stream (what LIST shows and what logs carry)."""
    fmt = info.channel_format()
    return {
        "name": info.name(),
        "type": info.type(),
        "channels": info.channel_count(),
        "srate": info.nominal_srate(),
        "format": FORMAT_NAMES.get(fmt, str(fmt)),
        "source_id": info.source_id(),
        "hostname": info.hostname(),
        "uid": info.uid(),
        "created_at": info.created_at(),
    }


def list_streams(wait_s: float = 1.0) -> list[dict[str, Any]]:
    """Every stream visible right now, with metadata, sorted by name.

    liblsl's ``resolve_streams`` always waits the full ``wait_s`` (it collects answers). Keep it
    >= 1 s: with several LSL processes on one machine only one of them hears the first multicast
    query on 127.0.0.1; the others answer the unicast (KnownPeers) wave sent 0.5 s later.
    """
    return describe_all(pylsl.resolve_streams(wait_time=wait_s))


def describe_all(infos: list[pylsl.StreamInfo]) -> list[dict[str, Any]]:
    """:func:`describe` each stream once (by uid), sorted by name."""
    unique = {i.uid(): describe(i) for i in infos}
    return sorted(unique.values(), key=lambda d: (d["name"], d["uid"]))


def find_named(name: str, timeout_s: float) -> list[pylsl.StreamInfo]:
    """Streams called ``name`` seen within ``timeout_s`` (empty when none; never raises).

    For callers that only ask "is it there yet"; :func:`resolve` is the one that explains a miss.
    """
    return list(pylsl.resolve_byprop("name", name, 1, max(0.01, timeout_s)))


def _visible_names(wait_s: float = 1.0) -> list[str]:
    return sorted({i.name() for i in pylsl.resolve_streams(wait_time=wait_s)})


class AmbiguousStreamError(LookupError):
    """Several sources publish the stream asked for; ``sources`` lists (host, source_id)."""

    def __init__(self, what: str, sources: list[tuple[str, str]]) -> None:
        listed = "; ".join(f"host {h!r} source_id {sid!r}" for h, sid in sources)
        super().__init__(
            f"LSL stream {what} is published by {len(sources)} sources ({listed}); name the "
            "host or source_id to choose one"
        )
        self.sources = sources


def stream_predicate(
    name: str | None, host: str | None = None, source_id: str | None = None
) -> str:
    """An LSL XPath predicate matching ``name`` from ``host`` and/or ``source_id``."""
    parts = [(k, v) for k, v in (("name", name), ("hostname", host), ("source_id", source_id)) if v]
    if not parts:
        raise ValueError("give a stream name, host or source_id")
    for key, value in parts:
        if "'" in value:
            raise ValueError(
                f"{key} {short(value)}: a quote (') cannot be matched by an LSL predicate"
            )
    return " and ".join(f"{k}='{v}'" for k, v in parts)


def sources_of(infos: list[pylsl.StreamInfo]) -> list[tuple[str, str]]:
    """The distinct publishers among ``infos``: (host, source_id), sorted."""
    return sorted({(i.hostname(), i.source_id()) for i in infos})


def resolve(
    name: str | None = None,
    predicate: str | None = None,
    timeout_s: float = 5.0,
    *,
    host: str | None = None,
    source_id: str | None = None,
    unique: bool = False,
    ambiguity_wait_s: float = 1.0,
) -> pylsl.StreamInfo:
    """The stream matching ``name`` (exact) or an XPath ``predicate``, within ``timeout_s``.

    ``host`` / ``source_id`` narrow a name to one publisher (two rigs on one network publish the
    same names). Returns as soon as one stream answers. When several sources (host, source_id)
    publish it, the newest is taken with a warning naming them all; with ``unique`` it is refused
    with :class:`AmbiguousStreamError` instead, after waiting up to ``ambiguity_wait_s`` more for
    sources on other hosts to answer. Raises :class:`StreamNotFoundError` listing the visible
    streams when nothing matches; never waits forever.
    """
    if not name and not predicate and not host and not source_id:
        raise ValueError("give a stream name or an LSL predicate")
    if predicate:
        what = f"matching {predicate!r}"
    elif host or source_id:
        predicate = stream_predicate(name, host, source_id)
        what = f"matching {predicate!r}"
    else:
        what = f"named {name!r}"
    if predicate:
        found = pylsl.resolve_bypred(predicate, minimum=1, timeout=timeout_s)
    else:
        found = pylsl.resolve_byprop("name", name, minimum=1, timeout=timeout_s)
    if not found:
        raise StreamNotFoundError(what, timeout_s, _visible_names())
    if unique:
        more = (
            pylsl.resolve_bypred(predicate, minimum=2, timeout=ambiguity_wait_s)
            if predicate
            else pylsl.resolve_byprop("name", name, minimum=2, timeout=ambiguity_wait_s)
        )
        found = list({i.uid(): i for i in [*found, *more]}.values())
    sources = sources_of(found)
    if len(sources) > 1:
        if unique:
            raise AmbiguousStreamError(what, sources)
        log.warning(
            "several sources publish this stream; taking the newest (name the host or "
            "source_id to choose)",
            match=what,
            sources=[f"{h}/{sid}" for h, sid in sources],
        )
    found.sort(key=lambda i: i.created_at())
    return found[-1]


def describe_channels(
    info: pylsl.StreamInfo,
    labels: list[str],
    *,
    kind: str | None = None,
    unit: str | Callable[[str], str] | None = None,
) -> None:
    """Write ``<channels>`` into ``info``'s description, the layout XDF readers and MNE expect.

    ``unit`` is one unit for every channel or a function of the label; empty values are left out.
    """
    chans = info.desc().append_child("channels")
    for label in labels:
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        if kind:
            ch.append_child_value("type", kind)
        u = unit(label) if callable(unit) else unit
        if u:
            ch.append_child_value("unit", u)


def channel_labels(info: pylsl.StreamInfo) -> list[str]:
    """Channel labels from the stream's description, ``ch1..chN`` where absent."""
    n = info.channel_count()
    try:
        labels = info.get_channel_labels() or []
    except Exception:  # malformed desc XML: fall back to numbering
        labels = []
    return complete_labels([str(lab) for lab in labels], n)
