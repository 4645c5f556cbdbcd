"""The end-of-run summary: what was recorded, how the decoder and the trials went, how fast.

Everything comes from replies the modules gave over the protocol (the macro's step results) and
from reading the XDF file back with pyxdf; no service code is imported, so the summary works for
any mesh. It looks for these reply keys anywhere in step results (docs/control-room.md):
``file`` (an .xdf path), ``counts``, ``cv_accuracy``/``accuracy``, ``latency_ms``, ``notify``,
``trials`` (a list of trials with ``visited`` states) and ``completed``.
"""

from __future__ import annotations

import json
import statistics
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


def _last(results: list[Any], *keys: str, want: type | tuple[type, ...] = object) -> Any:
    for key in keys:
        found = [v for r in results for v in find(r, key) if isinstance(v, want)]
        if found:
            return found[-1]
    return None


def _ms_stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = sorted(values)
    return {
        "n": len(v),
        "p50": round(statistics.median(v), 3),
        "p95": round(v[min(len(v) - 1, int(0.95 * len(v)))], 3),
        "max": round(v[-1], 3),
    }


def collect_summary(room: Any, report: MacroReport | None, macro_s: float) -> dict[str, Any]:
    """Figures from the macro's step results and the control room's own bookkeeping."""
    steps = report.steps if report is not None else []
    cleanup = report.finally_steps if report is not None else []
    results = [s.result for s in [*steps, *cleanup] if s.ok]
    files = [
        f for r in results for f in find(r, "file") if isinstance(f, str) and f.endswith(".xdf")
    ]
    trials = [
        t
        for t in (_last(results, "trials", want=list) or [])
        if isinstance(t, dict) and "visited" in t
    ]
    visited: dict[str, int] = {}
    for t in trials:
        for state in dict.fromkeys(t.get("visited") or []):
            visited[state] = visited.get(state, 0) + 1
    return {
        "startup_s": room.startup_s,
        "macro": report.macro if report else None,
        "macro_s": round(macro_s, 1),
        "steps_ok": sum(1 for s in steps if s.ok),
        "steps": len(steps),
        # what the macro's finally steps did (stop recording, streams, blocks), failures named
        "finally": [
            {"step": s.describe(), "ok": s.ok, **({"error": s.error} if s.error else {})}
            for s in cleanup
        ],
        "file": files[-1] if files else None,
        "recorder_counts": _last(results, "counts", want=dict),
        "decoder_accuracy": _last(results, "cv_accuracy", "accuracy", want=(int, float)),
        "decoder_latency_ms": _last(results, "latency_ms", want=dict),
        "decoder_notify": _last(results, "notify", want=dict),
        "trials": len(trials) if trials else _last(results, "completed", want=int),
        "trial_states": visited,
        "command_rtt_ms": _ms_stats(list(room.reply_ms)),
        "markers_pushed": room.markers.pushed if room.markers else 0,
        "modules": {
            n: {"state": i["state"], "restarts": i["restarts"], "ready_s": i["ready_s"]}
            for n, i in room.module_info().items()
        },
    }


def read_xdf(path: str | None) -> dict[str, Any] | None:
    """Streams and sample counts as the file reads back (the file is the ground truth)."""
    if not path:
        return None
    from shared_utils.streams.xdf_reader import XdfReadError
    from shared_utils.streams.xdf_reader import read_xdf as load

    try:
        streams = load(path, dejitter=False)
    except XdfReadError as exc:
        return {"error": str(exc)}
    names = [st.name for st in streams]
    out = {}
    for st in streams:
        # two streams may share a name (two boxes, two rigs): keep both, told apart by source_id
        key = st.name if names.count(st.name) == 1 else f"{st.name} [{st.source_id}]"
        out[key] = {"samples": st.n_samples, "type": st.type, "srate": st.srate}
    return {"bytes": Path(path).stat().st_size, "streams": out}


def print_summary(s: dict[str, Any], error: str | None) -> None:
    """Human-readable block, then one JSON line for scripts."""
    w = print
    bar = "=" * 76
    w(f"\n{bar}\nSUMMARY" + ("  (macro FAILED)" if error else ""))
    if error:
        w(f"  error: {error}")
    w(
        f"  startup to all modules ready: {s.get('startup_s')} s;  macro {s.get('macro')!r}: "
        f"{s.get('steps_ok')}/{s.get('steps')} steps in {s.get('macro_s')} s"
    )
    cleanup = s.get("finally") or []
    if cleanup:
        ok = sum(1 for c in cleanup if c["ok"])
        w(f"  finally steps (always run): {ok}/{len(cleanup)} ok")
        for c in cleanup:
            if not c["ok"]:
                w(f"    {c['step']} FAILED: {c.get('error')}")
    w(f"  recording: {s.get('file')}")
    rep = s.get("report")
    if rep:
        w(f"  session report: {rep.get('html') or 'not written: ' + str(rep.get('error'))}")
    for fmt, where in (s.get("export") or {}).items():
        w(f"  export {fmt}: {where}")
    xdf = s.get("xdf")
    if xdf and "streams" in xdf:
        w(f"  read back with pyxdf: {xdf['bytes']} bytes, {len(xdf['streams'])} streams")
        for name, info in sorted(xdf["streams"].items()):
            w(
                f"    {name:<28} {info['samples']:>8} samples  ({info['type']}, {info['srate']:g} Hz)"
            )
    elif xdf:
        w(f"  XDF: {xdf.get('error')}")
    acc = s.get("decoder_accuracy")
    w(
        f"  decoder cross-validated accuracy: {acc:.3f}"
        if isinstance(acc, float)
        else f"  decoder accuracy: {acc}"
    )
    states = ", ".join(f"{k} {v}" for k, v in (s.get("trial_states") or {}).items())
    w(f"  Bpod trials: {s.get('trials')}" + (f"  (trials visiting: {states})" if states else ""))
    notify = s.get("decoder_notify")
    if notify:
        w(
            f"  decoder -> {notify.get('target')}: {notify.get('sent')} sent, {notify.get('failed')} failed"
        )
    lat = s.get("decoder_latency_ms")
    if lat:
        w(
            f"  decoder latency (sample -> prediction) ms: p50 {lat.get('p50')}, p95 {lat.get('p95')}, max {lat.get('max')} (n={lat.get('n')})"
        )
    rtt = s.get("command_rtt_ms")
    if rtt:
        w(
            f"  command reply times ms (incl. the command's own work): p50 {rtt['p50']}, "
            f"p95 {rtt['p95']}, max {rtt['max']} (n={rtt['n']})"
        )
    w(f"  command markers pushed: {s.get('markers_pushed')}")
    mods = s.get("modules") or {}
    w("  modules (time to ready, restarts, how each one stopped):")
    for n, v in mods.items():
        how = "+".join(v.get("stop") or []) or "-"
        w(
            f"    {n:<18} ready in {v['ready_s']} s, restarts {v['restarts']}, {v['state']} via {how}"
        )
    w(bar)
    slim = {k: v for k, v in s.items() if k not in ("recorder_counts",)}
    w(json.dumps({"summary": slim, "error": error}, default=str))
