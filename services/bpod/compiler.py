"""Turn a named :class:`StateMachine` into the ``C`` command bytes for one device.

The same tables used for encoding are kept in :class:`CompiledStateMachine` so the host can replay
each trial's transitions from the event stream (the device only reports events, not states).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.bpod.hardware import (
    VIRTUAL_OUTPUTS,
    HardwareInfo,
    unknown_name_message,
)
from services.bpod.state_machine import StateMachine, StateMachineError

EXIT_NAMES = ("exit", ">exit")
BACK = ">back"


@dataclass
class CompiledStateMachine:
    """Encoded body plus the matrices needed to rebuild states from events."""

    name: str
    state_names: list[str]
    body: bytes
    use_back: bool
    event_names: list[str | None]
    tup: list[int]
    inputs: list[dict[int, int]]
    gt_start: list[dict[int, int]]
    gt_end: list[dict[int, int]]
    gc: list[dict[int, int]]
    cond: list[dict[int, int]]
    input_matrix_size: int
    n_gt_hw: int
    n_gc_hw: int
    n_cond_hw: int
    timers_s: list[float] = field(default_factory=list)

    @property
    def n_states(self) -> int:
        return len(self.state_names)

    def command(self, run_asap: bool = False) -> bytes:
        """The full ``C`` command: header (runASAP, back signal, body length) + body."""
        head = bytes([ord("C"), int(run_asap), int(self.use_back)])
        return head + len(self.body).to_bytes(2, "little") + self.body

    def target(self, state: int, code: int) -> int:
        """Where event ``code`` leads from ``state`` (== state when unhandled)."""
        ims, ngt, ngc, ncond = self.input_matrix_size, self.n_gt_hw, self.n_gc_hw, self.n_cond_hw
        if code < ims:
            return self.inputs[state].get(code, state)
        code -= ims
        for table, width in (
            (self.gt_start, ngt),
            (self.gt_end, ngt),
            (self.gc, ngc),
            (self.cond, ncond),
        ):
            if code < width:
                return table[state].get(code, state)
            code -= width
        return self.tup[state] if code == 0 else state


def _cycles(seconds: float, hw: HardwareInfo, what: str) -> int:
    if not isinstance(seconds, int | float) or seconds < 0:
        raise StateMachineError(f"{what}: time must be a number >= 0 seconds, got {seconds!r}")
    cycles = round(seconds * 1e6 / hw.timer_period_us)
    if cycles >= 2**32:
        raise StateMachineError(f"{what}: {seconds} s is longer than the device can count")
    return cycles


def _u8(value: int, what: str, limit: int = 255) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise StateMachineError(f"{what}: value must be an integer 0..{limit}, got {value!r}")
    return int(value)


def _mask(value: object, n_hw: int, what: str) -> int:
    items = value if isinstance(value, list) else [value]
    mask = 0
    for v in items:
        if not isinstance(v, int) or not 1 <= v <= n_hw:
            raise StateMachineError(f"{what}: timer numbers must be 1..{n_hw}, got {v!r}")
        mask |= 1 << (v - 1)
    return mask


def compile_state_machine(sm: StateMachine, hw: HardwareInfo) -> CompiledStateMachine:
    """Validate names against ``hw`` and encode; raises StateMachineError naming what is wrong."""
    if not sm.states:
        raise StateMachineError("the state machine has no states")
    names = [s.name for s in sm.states]
    index = {n: i for i, n in enumerate(names)}
    n = len(names)
    use_back = any(t == BACK for s in sm.states for t in s.transitions.values())
    # exit is encoded as state number n and >back as 255, both in one byte
    limit = min(hw.max_states, 255) - (1 if use_back else 0)
    if n > limit:
        raise StateMachineError(
            f"{n} states, but this device holds at most {limit} (exit{' and >back' if use_back else ''} "
            "take a state number)"
        )
    event_codes = hw.event_codes()
    out_names = hw.output_channel_names()
    out_index = {name: i for i, name in enumerate(out_names)}
    in_names = hw.input_channel_names()
    ims, ngt, ngc, ncond = (
        hw.input_matrix_size,
        hw.n_global_timers,
        hw.n_global_counters,
        hw.n_conditions,
    )
    valid_targets = [*names, "exit", BACK]

    used_gt = max([0, *sm.global_timers], default=0)
    used_gc = max([0, *sm.global_counters], default=0)
    used_cond = max([0, *sm.conditions], default=0)

    tup = list(range(n))
    inputs: list[dict[int, int]] = [{} for _ in range(n)]
    gt_start: list[dict[int, int]] = [{} for _ in range(n)]
    gt_end: list[dict[int, int]] = [{} for _ in range(n)]
    gc: list[dict[int, int]] = [{} for _ in range(n)]
    cond: list[dict[int, int]] = [{} for _ in range(n)]
    for si, st in enumerate(sm.states):
        where = f" in state {st.name!r}"
        for ev, tgt in st.transitions.items():
            if tgt in EXIT_NAMES:
                t = n
            elif tgt == BACK:
                t = 255
            elif tgt in index:
                t = index[tgt]
            else:
                raise StateMachineError(
                    unknown_name_message("target state", str(tgt), valid_targets, where)
                )
            code = event_codes.get(ev)
            if code is None:
                raise StateMachineError(
                    unknown_name_message("event", str(ev), list(event_codes), where)
                )
            if code < ims:
                inputs[si][code] = t
                continue
            rel = code - ims
            if rel < ngt:
                gt_start[si][rel] = t
                used_gt = max(used_gt, rel + 1)
            elif rel < 2 * ngt:
                gt_end[si][rel - ngt] = t
                used_gt = max(used_gt, rel - ngt + 1)
            elif rel < 2 * ngt + ngc:
                gc[si][rel - 2 * ngt] = t
                used_gc = max(used_gc, rel - 2 * ngt + 1)
            elif rel < 2 * ngt + ngc + ncond:
                cond[si][rel - 2 * ngt - ngc] = t
                used_cond = max(used_cond, rel - 2 * ngt - ngc + 1)
            else:
                tup[si] = t
    for what, used, hw_n in (
        ("global timers", used_gt, ngt),
        ("global counters", used_gc, ngc),
        ("conditions", used_cond, ncond),
    ):
        if used > hw_n:
            raise StateMachineError(f"{what} up to {used} used, but this device has {hw_n}")

    outputs: list[list[tuple[int, int]]] = []
    trig, cancel, reset = [0] * n, [0] * n, {}
    for si, st in enumerate(sm.states):
        row = []
        for ch, value in st.actions.items():
            what = f"state {st.name!r} action {ch}"
            if ch == "GlobalTimerTrig":
                trig[si] = _mask(value, ngt, what)
                used_gt = max(used_gt, trig[si].bit_length())
            elif ch == "GlobalTimerCancel":
                cancel[si] = _mask(value, ngt, what)
                used_gt = max(used_gt, cancel[si].bit_length())
            elif ch == "GlobalCounterReset":
                reset[si] = _u8(value, what, ngc)
                used_gc = max(used_gc, reset[si])
            elif ch in out_index:
                kind = hw.outputs[out_index[ch]]
                limit_v = 65535 if hw.wide_outputs else 255
                row.append(
                    (
                        out_index[ch],
                        _u8(value, what, 1 if kind == "V" and hw.machine_type < 3 else limit_v),
                    )
                )
            else:
                valid = out_names + list(VIRTUAL_OUTPUTS)
                raise StateMachineError(
                    unknown_name_message("output channel", str(ch), valid, f" in state {st.name!r}")
                )
        outputs.append(row)

    body = bytearray([n, used_gt, used_gc, used_cond])
    body += bytes(tup)
    for row in inputs:
        body.append(len(row))
        for code, t in row.items():
            body += bytes([code, t])
    w = 2 if hw.wide_outputs else 1
    for row in outputs:
        body += len(row).to_bytes(w, "little")
        for ch, v in row:
            body += ch.to_bytes(w, "little") + v.to_bytes(w, "little")
    for table in (gt_start, gt_end, gc, cond):
        for row in table:
            body.append(len(row))
            for k, t in row.items():
                body += bytes([k, t])
    timers = [sm.global_timers.get(t + 1) for t in range(used_gt)]
    if used_gt:
        chans, ons, offs = [], [], []
        for t, gt in enumerate(timers):
            if gt is None or gt.channel is None:
                chans.append(255)
                ons.append(0)
                offs.append(0)
                continue
            if gt.channel not in out_index:
                raise StateMachineError(
                    unknown_name_message(
                        "output channel", gt.channel, out_names, f" in global timer {t + 1}"
                    )
                )
            ch = out_index[gt.channel]
            uart = hw.outputs[ch] == "U"
            chans.append(ch)
            ons.append(255 if uart and gt.on_value == 0 else gt.on_value)
            offs.append(255 if uart and gt.off_value == 0 else gt.off_value)
        body += bytes(chans)
        for vals in (ons, offs):
            for v in vals:
                body += _u8(v, "global timer value", 65535 if w == 2 else 255).to_bytes(w, "little")
        body += bytes(_u8(gt.loop if gt else 0, "global timer loop") for gt in timers)
        body += bytes(int(gt.send_events) if gt else 1 for gt in timers)
    if used_gc:
        for c in range(used_gc):
            counter = sm.global_counters.get(c + 1)
            if counter is None:
                body.append(254)
            elif counter.event not in event_codes or event_codes[counter.event] > 255:
                raise StateMachineError(
                    unknown_name_message(
                        "event", counter.event, list(event_codes), f" in global counter {c + 1}"
                    )
                )
            else:
                body.append(event_codes[counter.event])
    if used_cond:
        cond_channels = in_names + [f"GlobalTimer{t + 1}" for t in range(ngt)]
        chans, vals = [], []
        for k in range(used_cond):
            c = sm.conditions.get(k + 1)
            if c is None:
                chans.append(0)
                vals.append(0)
                continue
            if c.channel not in cond_channels:
                raise StateMachineError(
                    unknown_name_message(
                        "condition channel", c.channel, cond_channels, f" in condition {k + 1}"
                    )
                )
            chans.append(cond_channels.index(c.channel))
            vals.append(_u8(c.value, f"condition {k + 1} value", 1))
        body += bytes(chans) + bytes(vals)
    if hw.fw_major >= 23:
        body.append(len(reset))
        for si, c in reset.items():
            body += bytes([si, c])
    else:
        body += bytes(reset.get(si, 0) for si in range(n))
    if hw.machine_type == 4:
        body += b"\x00\x00"  # no analog threshold enable/disable
    mw = hw.mask_bytes
    for m in (*trig, *cancel):
        body += m.to_bytes(mw, "little")
    for gt in timers:
        body += (
            _mask(gt.onset_triggers, ngt, "onset_triggers").to_bytes(mw, "little")
            if gt and gt.onset_triggers
            else bytes(mw)
        )
    for st in sm.states:
        body += _cycles(st.timer, hw, f"state {st.name!r}").to_bytes(4, "little")
    if used_gt:
        for attr in ("duration", "onset_delay", "loop_interval"):
            for t, gt in enumerate(timers):
                body += _cycles(
                    getattr(gt, attr) if gt else 0, hw, f"global timer {t + 1} {attr}"
                ).to_bytes(4, "little")
    if used_gc:
        for c in range(used_gc):
            counter = sm.global_counters.get(c + 1)
            thr = counter.threshold if counter else 0
            if not isinstance(thr, int) or thr < 0:
                raise StateMachineError(
                    f"global counter {c + 1}: threshold must be an integer >= 0"
                )
            body += thr.to_bytes(4, "little")
    if hw.fw_major >= 23:
        body.append(0)  # no additional ops
    if len(body) >= 50000:
        raise StateMachineError(f"description is {len(body)} bytes; the device accepts < 50000")
    return CompiledStateMachine(
        name=sm.name,
        state_names=names,
        body=bytes(body),
        use_back=use_back,
        event_names=hw.event_names(),
        tup=tup,
        inputs=inputs,
        gt_start=gt_start,
        gt_end=gt_end,
        gc=gc,
        cond=cond,
        input_matrix_size=ims,
        n_gt_hw=ngt,
        n_gc_hw=ngc,
        n_cond_hw=ncond,
        timers_s=[s.timer for s in sm.states],
    )


def soft_code_event(code: int) -> str:
    """Event name generated by host soft code ``code`` (1-based, like MATLAB's SendBpodSoftCode)."""
    return f"SoftCode{code}"
