"""Run one export in this process and report as JSON lines (used by the recorder's EXPORT).

    python -m shared_utils.export '{"source": "data/rec.xdf", "formats": ["bids", "nwb"]}'

Request keys: ``source``, ``formats``, ``out``, ``overwrite``, ``trials``, ``options`` (the
fields of :class:`ExportOptions`). Output: ``{"stage": ...}`` lines while it runs, then one
``{"results": [...]}`` line (exit 0) or ``{"error": ...}`` (exit 1). SIGTERM stops it cleanly:
the staging folders are removed and nothing half-written stays behind. People use
``control-room export`` instead.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    from shared_utils.export import ExportError, ExportOptions, export_many

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: staging is cleaned up
    try:
        req = json.loads(argv[0]) if argv else {}
        if not isinstance(req, dict) or "source" not in req:
            raise ExportError("need a JSON request with at least 'source'")
        results = export_many(
            req["source"],
            req.get("formats") or ["bids", "nwb"],
            req.get("out"),
            bool(req.get("overwrite")),
            trials=req.get("trials"),
            options=ExportOptions(**(req.get("options") or {})),
            validate=bool(req.get("validate")),
            progress=lambda stage: _emit({"stage": stage}),
        )
    except (ExportError, json.JSONDecodeError, TypeError) as exc:
        _emit({"error": str(exc)})
        return 1
    except Exception as exc:  # noqa: BLE001 - reported to the recorder, not lost in a traceback
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _emit({"results": [r.to_dict() for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
