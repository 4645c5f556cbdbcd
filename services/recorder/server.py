"""Thin command layer: START/STOP/STATUS/LIST/EXPORT/CLOSE bound to one :class:`Recorder`, plus the
optional LabRecorder remote-control listener (its lifetime tied to CLOSE)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.recorder.core import Recorder
from services.recorder.rcs import RcsServer


def build_commands(
    recorder: Recorder | None = None, rcs_port: int | None = None, rcs_host: str = "127.0.0.1"
) -> dict[str, Callable[..., Any]]:
    """The recorder's command map; starts the RCS listener when ``rcs_port`` is given."""
    rec = recorder or Recorder()
    rcs = RcsServer(rec, rcs_port, rcs_host).start() if rcs_port is not None else None

    def status() -> dict[str, Any]:
        """Recording state: file, bytes, seconds, per-stream counts, gaps, errors."""
        st = rec.status()
        if rcs is not None:
            st["rcs_port"] = rcs.port
            st["rcs_last_error"] = rcs.state.last_error
        return st

    def close() -> dict[str, Any]:
        """Stop any recording (footers written) and the remote-control listener."""
        if rcs is not None:
            rcs.close()
        return rec.close()

    return {
        "START": rec.start,
        "STOP": rec.stop,
        "STATUS": status,
        "LIST": rec.list_streams,
        "EXPORT": rec.export,
        "CLOSE": close,
    }
