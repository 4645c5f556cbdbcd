"""What the figures show, computed from the recording alone: trials, truth, decoder, latencies.

Everything here is derived from timestamps on the recorder's clock (the session is read with
clocks synchronised), so a latency is the difference of two recorded timestamps, never a figure a
module reported about itself. Which pairs are compared, and why each means what its label says:

- **closed loop, EEG sample -> Bpod event**: a decoder output sample carries the timestamp of the
  newest EEG sample it used (docs/decoder.md); the prediction that switches the controller on
  makes the decoder send its ``notify`` command, and the Bpod marks the resulting
  ``event:SoftCode<n>`` with the device's own clock (docs/bpod.md). The difference is the whole
  loop: LSL transport, decoding, the command over TCP, the serial write and the state machine.
- **command -> screen**: a control-room command marker is stamped when the command leaves; the
  presenter marks the flip that shows the stimulus (docs/presenter.md).
- **state change -> decoder switch**: the mock EEG marks the first sample of each new state; the
  decoder's controller switches when enough of its window holds the new state. This is the
  decoding delay (mostly the window length), not a transport latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from control_room.report.session import Command, Missing, Session

DEFAULT_CONTROL = {
    "on_threshold": 0.6,
    "off_threshold": 0.4,
    "smoothing_s": 0.0,
    "min_dwell_s": 0.0,
}
PRESENTER_MARKS = {  # command -> prefix of the marker its flip carries (docs/presenter.md)
    "SHOW_TEXT": "text:",
    "SHOW_IMAGE": "image:",
    "FIXATION": "fixation",
    "CLEAR": "clear",
    "RUN_BLOCK": "block_start:",
    "FEEDBACK": "feedback_start:",
    "PAUSE": "pause",
    "RESUME": "resume",
    "STOP": "stop",
    "RUN_EXPERIMENT": "experiment_start:",
}
MATCH_WINDOW_S = 2.0  # an effect later than this is not paired with its cause


# -- Bpod trials -----------------------------------------------------------------------------------


@dataclass
class Trial:
    """One Bpod trial from the event markers; times in seconds since the trial started."""

    number: int
    start: float  # session time
    end: float | None = None
    states: list[tuple[str, float, float]] = field(default_factory=list)
    events: list[tuple[str, float]] = field(default_factory=list)
    error: bool = False


def bpod_trials(session: Session) -> list[Trial]:
    """Trials rebuilt from ``trial_start:N``, ``state:X``, ``event:Y``, ``trial_end:N`` markers."""
    ts, texts = session.markers("bpod")
    return trials_from_markers(session.rel(ts), texts, session.rel(session.t1))


def trials_from_markers(ts: Any, texts: list[str], t_end: float | None) -> list[Trial]:
    """:func:`bpod_trials` on plain (time, text) markers: also what the live dashboard uses.

    ``t_end`` closes a trial still open at the end; ``None`` leaves it open (``end`` None)."""
    trials: list[Trial] = []
    cur: Trial | None = None
    open_state: tuple[str, float] | None = None

    def close_state(t: float) -> None:
        nonlocal open_state
        if cur is not None and open_state is not None:
            cur.states.append((open_state[0], open_state[1], t - cur.start))
        open_state = None

    for t_rel, text in zip(ts, texts, strict=True):
        t = float(t_rel)
        kind, _, arg = text.partition(":")
        if kind == "trial_start":
            if cur is not None:  # no trial_end seen (stopped mid-trial): ends where the next begins
                close_state(t)
                cur.end = t - cur.start
            cur = Trial(int(arg) if arg.isdigit() else len(trials) + 1, t)
            trials.append(cur)
        elif cur is None:
            continue
        elif kind == "state":
            close_state(t)
            if arg != "exit":
                open_state = (arg, t - cur.start)
        elif kind == "event":
            cur.events.append((arg, t - cur.start))
        elif kind in ("trial_end", "trial_error"):
            close_state(t)
            cur.end = t - cur.start
            cur.error = kind == "trial_error"
            cur = None
    if cur is not None and t_end is not None:
        close_state(t_end)
        cur.end = t_end - cur.start
    return trials


# -- true state, decoder, controller ---------------------------------------------------------------


def truth_segments(session: Session) -> list[tuple[float, float, str]]:
    """(start, end, label) in session time: each marker's label holds until the next marker."""
    ts, texts = session.markers("truth")
    rel = session.rel(ts)
    end = session.rel(session.t1)
    return [
        (float(a), float(b), lab)
        for a, b, lab in zip(rel, [*rel[1:], end], texts, strict=True)
        if b > a
    ]


def label_at(segments: list[tuple[float, float, str]], t: np.ndarray) -> list[str | None]:
    """The true label at each time (None before the first marker)."""
    starts = np.array([s[0] for s in segments])
    idx = np.searchsorted(starts, t, side="right") - 1
    return [segments[i][2] if i >= 0 else None for i in idx]


@dataclass
class DecoderTrace:
    """The decoder's output in session time, with its controller state and parameters."""

    t: np.ndarray
    p: np.ndarray  # probability of the positive class
    positive: str
    classes: list[str]
    state: np.ndarray  # controller on (1) / off (0) per output
    state_recorded: bool  # True: the "control" channel; False: recomputed from the thresholds
    params: list[tuple[float, dict[str, float]]]  # (session time, parameters in effect from then)
    window_s: float | None
    notify_event: str | None  # e.g. "SoftCode1": the Bpod event the on-switch causes


def decoder_trace(session: Session) -> DecoderTrace:
    """Read the decoder stream; thresholds from extras, else from the decoder's commands."""
    s = session.need("decoder")
    labels = list(s.labels)
    pcols = [i for i, lab in enumerate(labels) if lab.startswith("p_")]
    if not pcols:
        raise Missing(f"decoder stream {s.name!r} has no p_<class> channel (channels: {labels})")
    positive = labels[pcols[0]][2:]
    classes = sorted(labels[i][2:] for i in pcols)
    t = session.rel(s.time_stamps)
    p = np.asarray(s.time_series[:, pcols[0]], dtype=float)
    cmds = _decoder_commands(session, s.name)
    params = _params_timeline(cmds, session)
    if session.extras.thresholds:
        params = [(-math.inf, {**DEFAULT_CONTROL, **session.extras.thresholds})]
    if "control" in labels:
        state = np.asarray(s.time_series[:, labels.index("control")] > 0.5, dtype=float)
        recorded = True
    else:
        state, recorded = run_controller(t, p, params), False
    window_s = next((c.kwargs.get("window_s") for c in reversed(cmds) if c.cmd == "START"), None)
    return DecoderTrace(
        t, p, positive, classes, state, recorded, params, window_s, _notify_event(cmds)
    )


def _decoder_commands(session: Session, stream_name: str) -> list[Command]:
    """Commands sent to the module that publishes ``stream_name`` (or to "decoder")."""
    if session.roles.get("commands") is None:
        return []
    cmds = session.commands()
    modules = {c.module for c in cmds if c.cmd == "START" and c.kwargs.get("output") == stream_name}
    modules = modules or {"decoder"}
    return [c for c in cmds if c.module in modules]


def _params_timeline(cmds: list[Command], session: Session) -> list[tuple[float, dict[str, float]]]:
    out = [(-math.inf, dict(DEFAULT_CONTROL))]
    for c in cmds:
        if c.cmd not in ("START", "SET"):
            continue
        change = {
            k: float(v)
            for k, v in c.kwargs.items()
            if k in DEFAULT_CONTROL and isinstance(v, int | float)
        }
        if change:
            out.append((session.rel(c.t), {**out[-1][1], **change}))
    return out


def _notify_event(cmds: list[Command]) -> str | None:
    for c in reversed(cmds):
        notify = c.kwargs.get("notify") if c.cmd == "START" else None
        if isinstance(notify, dict) and notify.get("on") == "SOFT_CODE":
            code = (notify.get("on_kwargs") or {}).get("code", 1)
            return f"SoftCode{code}"
    return None


def run_controller(
    t: np.ndarray, p: np.ndarray, params: list[tuple[float, dict[str, float]]]
) -> np.ndarray:
    """The decoder's hysteresis controller (docs/decoder.md) replayed over the recorded outputs."""
    starts = [x[0] for x in params]
    state, smoothed, last_t, since = False, None, None, None
    out = np.zeros(len(t))
    for i, (ti, pi) in enumerate(zip(t, p, strict=True)):
        prm = params[max(0, int(np.searchsorted(starts, ti, side="right")) - 1)][1]
        tau = prm["smoothing_s"]
        if smoothed is None or tau <= 0 or last_t is None:
            smoothed = pi
        else:
            smoothed += (1.0 - math.exp(-max(ti - last_t, 0.0) / tau)) * (pi - smoothed)
        last_t = ti
        since = ti if since is None else since
        if ti - since >= prm["min_dwell_s"]:
            new = smoothed >= prm["on_threshold"] if not state else smoothed > prm["off_threshold"]
            if new != state:
                state, since = new, ti
        out[i] = float(state)
    return out


def switches(tr: DecoderTrace) -> tuple[np.ndarray, np.ndarray]:
    """Session times of the controller's on-switches and off-switches."""
    prev = np.concatenate([[0.0], tr.state[:-1]])
    return tr.t[(tr.state > 0.5) & (prev < 0.5)], tr.t[(tr.state < 0.5) & (prev > 0.5)]


def agreement(tr: DecoderTrace, segments: list[tuple[float, float, str]]) -> dict[str, float | int]:
    """How often the more likely class equals the true label (all outputs, and settled ones)."""
    truth = label_at(segments, tr.t)
    other = [c for c in tr.classes if c != tr.positive]
    pred = [tr.positive if pi >= 0.5 else (other[0] if other else "") for pi in tr.p]
    known = [i for i, lab in enumerate(truth) if lab in tr.classes]
    out: dict[str, float | int] = {"n": len(known)}
    if known:
        out["all"] = float(np.mean([pred[i] == truth[i] for i in known]))
    if tr.window_s and known:
        starts = np.array([s[0] for s in segments])
        settled = [
            i for i in known if tr.t[i] - starts[starts <= tr.t[i]].max() >= float(tr.window_s)
        ]
        if settled:
            out["settled"] = float(np.mean([pred[i] == truth[i] for i in settled]))
            out["n_settled"] = len(settled)
    return out


# -- latencies -------------------------------------------------------------------------------------


@dataclass
class Latency:
    """One histogram's worth: values (in ``unit``), how they were paired, what was left unpaired."""

    title: str
    how: str
    unit: str
    values: np.ndarray
    unmatched: int = 0
    missing: str | None = None  # why nothing could be measured
    groups: list[str] | None = None  # a label per value, drawn as stacked colours


def _pair(causes: np.ndarray, effects: np.ndarray, limit: np.ndarray | None = None) -> np.ndarray:
    """For each cause, the delay to the first unused effect at or after it (within the window)."""
    effects = np.sort(effects)
    used = np.zeros(len(effects), bool)
    out = np.full(len(causes), np.nan)
    for i, c in enumerate(np.sort(causes)):
        j = int(np.searchsorted(effects, c, side="left"))
        while j < len(effects) and used[j]:
            j += 1
        hi = c + MATCH_WINDOW_S if limit is None else min(c + MATCH_WINDOW_S, limit[i])
        if j < len(effects) and effects[j] <= hi:
            used[j] = True
            out[i] = effects[j] - c
    return out


def _latency(
    title: str,
    how: str,
    unit: str,
    delays: np.ndarray,
    scale: float,
    groups: list[str] | None = None,
) -> Latency:
    keep = ~np.isnan(delays)
    kept = [g for g, k in zip(groups, keep, strict=True) if k] if groups else None
    return Latency(title, how, unit, delays[keep] * scale, int((~keep).sum()), groups=kept)


def _unmeasured(title: str, how: str, unit: str, why: str) -> Latency:
    return Latency(title, how, unit, np.zeros(0), missing=why)


def loop_latency(session: Session) -> Latency:
    """Decoder on-switch (its EEG sample's time) -> the Bpod event the notify caused."""
    title = "Closed loop: EEG sample -> Bpod event"
    how = (
        "From the timestamp of the decoder output that switched the controller on (= the newest "
        "EEG sample it used) to the next Bpod event:SoftCode marker (device clock)."
    )
    try:
        tr = decoder_trace(session)
        ts, texts = session.markers("bpod")
    except Missing as exc:
        return _unmeasured(title, how, "ms", str(exc))
    event = tr.notify_event or "SoftCode"
    how = how.replace("event:SoftCode", f"event:{event}")
    on, _ = switches(tr)
    effects = session.rel(
        np.array([t for t, x in zip(ts, texts, strict=True) if x.startswith(f"event:{event}")])
    )
    if not len(on):
        return _unmeasured(title, how, "ms", "the decoder's controller never switched on")
    if not len(effects):
        return _unmeasured(title, how, "ms", f"no event:{event} marker from the Bpod")
    return _latency(title, how, "ms", _pair(on, effects), 1e3)


def command_latency(session: Session) -> Latency:
    """Control-room command marker -> the presenter marker of the flip that showed it."""
    title = "Command -> screen flip (presenter)"
    how = (
        "From each stimulus command's control-room marker (stamped as it is sent) to the first "
        "presenter marker of that kind (stamped at the flip that showed it)."
    )
    try:
        cmds = [c for c in session.commands() if c.cmd in PRESENTER_MARKS]
        ts, texts = session.markers("presenter")
    except Missing as exc:
        return _unmeasured(title, how, "ms", str(exc))
    names = {c.module for c in cmds if c.module == "presenter"} or {c.module for c in cmds}
    delays = []
    for c in (c for c in cmds if c.module in names):
        prefix = PRESENTER_MARKS[c.cmd]
        effects = np.array([t for t, x in zip(ts, texts, strict=True) if x.startswith(prefix)])
        delays.append(_pair(np.array([c.t]), effects)[0] if len(effects) else np.nan)
    if not delays:
        return _unmeasured(title, how, "ms", "no stimulus command to the presenter was recorded")
    return _latency(title, how, "ms", np.array(delays), 1e3)


def detection_delay(session: Session) -> Latency:
    """True state change (mock EEG marker) -> decoder controller switch to match it."""
    title = "State change -> decoder switch"
    how = (
        "From the first EEG sample of each new true state (the mock EEG's marker) to the decoder "
        "controller's switch to match it (on for the positive class, off otherwise); mostly the "
        "decoding window."
    )
    try:
        tr = decoder_trace(session)
        segs = truth_segments(session)
    except Missing as exc:
        return _unmeasured(title, how, "s", str(exc))
    on, off = switches(tr)
    first, last = (tr.t[0], tr.t[-1]) if len(tr.t) else (0.0, -1.0)
    delays, groups = [], []
    for a, b, lab in segs:
        if first <= a <= last:  # only changes the decoder was running for
            effects = on if lab == tr.positive else off
            delays.append(_pair(np.array([a]), effects, np.array([b]))[0])
            groups.append(f"to {lab} (switch {'on' if lab == tr.positive else 'off'})")
    if not delays:
        return _unmeasured(title, how, "s", "no true state change while the decoder ran")
    return _latency(title, how, "s", np.array(delays), 1.0, groups)


def latencies(session: Session) -> list[Latency]:
    return [loop_latency(session), command_latency(session), detection_delay(session)]
