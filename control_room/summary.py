"""The end-of-run summary: what was recorded, how the decoder and the trials went, how fast.

Everything comes from replies the modules gave over the protocol (macro step results and a last
``STATUS`` of each module) and from reading the XDF file back; no service code is imported, so
the summary works for any mesh. Keys it looks for are documented in docs/control-room.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from control_room.macros import MacroReport


def find(obj: Any, key: str) -> list[Any]:
    """All values stored under ``key`` anywhere in nested dicts/lists (depth-first order)."""
    out: list[Any] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                out.append(v)
            out.extend(find(v, key))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(find(v, key))
    return out


def _steps(report: MacroReport | None) -> list[Any]:
    return report.steps if report is not None else []


def collect_summary(
    room: Any, report: MacroReport | None, macro_s: float, after_down: bool = False
) -> dict[str, Any]:
    """Before shutdown: step results and module STATUS; after: the XDF read back."""
    if after_down:
        return {"xdf": _read_xdf(room.summary_file)} if getattr(room, "summary_file", None) else {}
    s: dict[str, Any] = {
        "startup_s": room.startup_s,
        "macro": report.macro if report else None,
        "macro_s": round(macro_s, 1),
        "steps_ok": sum(1 for st in _steps(report) if st.ok),
        "steps": len(_steps(report)),
    }
    statuses: dict[str, Any] = {}
    for name, info in room.module_info().items():
        if info["state"] not in ("ready", "unresponsive"):
            continue
        try:
            statuses[name] = room.send(name, "STATUS", {}, source="summary", timeout=3.0, quiet=True)
        except Exception as exc:
            statuses[name] = {"error": str(exc)}
    s["modules"] = {n: {"state": i["state"], "restarts": i["restarts"]} for n, i in room.module_info().items()}
    by_cmd = {(st.module, st.cmd): st.result for st in _steps(report) if st.ok and st.kind == "send"}
    files = [
        f for st in _steps(report) for f in find(st.result, "file") if isinstance(f, str) and f.endswith(".xdf")
    ]
    room.summary_file = files[-1] if files else None
    s["file"] = room.summary_file
    acc = [a for st in _steps(report) if st.cmd == "FIT" for a in find(st.result, "accuracy")]
    s["decoder_accuracy"] = acc[-1] if acc else None
    s["recorder_counts"] = next(
        (r for (m, c), r in by_cmd.items() if c == "STOP" and isinstance(r, dict) and find(r, "counts")),
        None,
    )
    s["status"] = statuses
    s["latencies"] = {n: find(st_, "latency") or find(st_, "latency_ms") for n, st_ in statuses.items()}
    s["latencies"] = {n: v[0] for n, v in s["latencies"].items() if v}
    trials = [t for st in _steps(report) if st.cmd == "RUN" for t in find(st.result, "trials")]
    bpod_trials = [find(v, "trials_done") or find(v, "n_trials") for v in statuses.values()]
    s["trials"] = next((t[0] for t in bpod_trials if t), len(trials[-1]) if trials and isinstance(trials[-1], list) else None)
    s["markers_pushed"] = room.markers.pushed if room.markers else 0
    return s


def _read_xdf(path: str) -> dict[str, Any]:
    try:
        import pyxdf
    except ImportError:
        return {"error": "pyxdf not installed"}
    p = Path(path)
    if not p.exists():
        return {"error": f"{path} does not exist"}
    try:
        streams, _ = pyxdf.load_xdf(str(p), synchronize_clocks=True, dejitter_timestamps=False)
    except Exception as exc:
        return {"error": f"pyxdf could not read it: {exc}"}
    out = {}
    for st in streams:
        name = st["info"]["name"][0]
        n = len(st["time_stamps"])
        out[name] = {"samples": n, "type": st["info"]["type"][0], "srate": float(st["info"]["nominal_srate"][0])}
    return {"bytes": p.stat().st_size, "streams": out}


def print_summary(s: dict[str, Any], error: str | None) -> None:
    """Human-readable block, then one JSON line for scripts."""
    w = print
    w("")
    w("=" * 72)
    w("SUMMARY" + ("  (macro FAILED)" if error else ""))
    if error:
        w(f"  error: {error}")
    w(f"  startup to all modules ready: {s.get('startup_s')} s; macro {s.get('macro')!r} "
      f"{s.get('steps_ok')}/{s.get('steps')} steps in {s.get('macro_s')} s")
    w(f"  recording: {s.get('file')}")
    xdf = s.get("xdf") or {}
    if "streams" in xdf:
        w(f"  XDF read back with pyxdf: {xdf['bytes']} bytes, {len(xdf['streams'])} streams")
        for name, info in sorted(xdf["streams"].items()):
            w(f"    {name:<32} {info['samples']:>8} samples  ({info['type']}, {info['srate']:g} Hz)")
    elif xdf:
        w(f"  XDF: {xdf.get('error')}")
    w(f"  decoder accuracy (cross-validated): {s.get('decoder_accuracy')}")
    w(f"  trials: {s.get('trials')}")
    for name, lat in (s.get("latencies") or {}).items():
        w(f"  latency {name}: {json.dumps(lat, default=str)[:200]}")
    w(f"  command markers pushed: {s.get('markers_pushed')}")
    states = s.get("modules") or {}
    w("  modules: " + ", ".join(f"{n}={v['state']}(restarts {v['restarts']})" for n, v in states.items()))
    w("=" * 72)
    slim = {k: v for k, v in s.items() if k != "status"}
    w(json.dumps({"summary": slim, "error": error}, default=str))
