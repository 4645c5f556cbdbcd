"""Turn a named :class:`StateMachine` into the ``C`` command bytes for one device.

The same tables used for encoding are kept in :class:`CompiledStateMachine` so the host can replay
each trial's transitions from the event stream (the device only reports events, not states).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.bpod import encoding
from services.bpod.hardware import VIRTUAL_OUTPUTS, HardwareInfo, output_limit
from services.bpod.state_machine import StateMachine, StateMachineError

EXIT_NAMES = ("exit", ">exit")
BACK = ">back"


@dataclass
class StateMatrices:
    """Where each event leads from each state: the Tup column and the sparse event matrices."""

    tup: list[int]
    inputs: list[dict[int, int]]
    gt_start: list[dict[int, int]]
    gt_end: list[dict[int, int]]
    gc: list[dict[int, int]]
    cond: list[dict[int, int]]


@dataclass(kw_only=True)
class CompiledStateMachine(StateMatrices):
    """Encoded body plus the matrices needed to rebuild states from events."""

    name: str
    state_names: list[str]
    body: bytes
    use_back: bool
    event_names: list[str | None]
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


@dataclass(kw_only=True)
class _Tables(StateMatrices):
    """The matrices being filled from the states' transitions and actions, before encoding."""

    n: int
    outputs: list[list[tuple[int, int]]] = field(default_factory=list)
    trig: list[int] = field(default_factory=list)
    cancel: list[int] = field(default_factory=list)
    reset: dict[int, int] = field(default_factory=dict)
    used_gt: int = 0
    used_gc: int = 0
    used_cond: int = 0

    @classmethod
    def empty(cls, sm: StateMachine) -> _Tables:
        n = len(sm.states)
        return cls(
            n=n,
            tup=list(range(n)),
            inputs=[{} for _ in range(n)],
            gt_start=[{} for _ in range(n)],
            gt_end=[{} for _ in range(n)],
            gc=[{} for _ in range(n)],
            cond=[{} for _ in range(n)],
            trig=[0] * n,
            cancel=[0] * n,
            used_gt=max([0, *sm.global_timers], default=0),
            used_gc=max([0, *sm.global_counters], default=0),
            used_cond=max([0, *sm.conditions], default=0),
        )


def compile_state_machine(sm: StateMachine, hw: HardwareInfo) -> CompiledStateMachine:
    """Validate names against ``hw`` and encode; raises StateMachineError naming what is wrong.

    The body is the firmware's ``C`` layout, one table after the other (reference 3.3); each
    table has its own function in :mod:`services.bpod.encoding`, called here in wire order.
    """
    use_back = _check_size(sm, hw)
    t = _Tables.empty(sm)
    _fill_transitions(sm, hw, t)
    _check_used(t, hw)
    _fill_actions(sm, hw, t)
    timers = [sm.global_timers.get(i + 1) for i in range(t.used_gt)]
    body = bytearray([t.n, t.used_gt, t.used_gc, t.used_cond])
    body += bytes(t.tup)
    body += encoding.pairs(t.inputs)
    body += encoding.outputs(t.outputs, hw)
    for table in (t.gt_start, t.gt_end, t.gc, t.cond):
        body += encoding.pairs(table)
    body += encoding.global_timers(timers, hw)
    body += encoding.counter_events(sm, t.used_gc, hw)
    body += encoding.conditions(sm, t.used_cond, hw)
    body += encoding.counter_resets(t.reset, t.n, hw)
    if hw.machine_type == 4:
        body += b"\x00\x00"  # no analog threshold enable/disable
    body += encoding.timer_masks(t.trig, t.cancel, timers, hw)
    body += encoding.durations(sm, timers, hw)
    body += encoding.counter_thresholds(sm, t.used_gc)
    if hw.fw_major >= 23:
        body.append(0)  # no additional ops
    if len(body) >= 50000:
        raise StateMachineError(f"description is {len(body)} bytes; the device accepts < 50000")
    return CompiledStateMachine(
        name=sm.name,
        state_names=[s.name for s in sm.states],
        body=bytes(body),
        use_back=use_back,
        event_names=hw.event_names(),
        tup=t.tup,
        inputs=t.inputs,
        gt_start=t.gt_start,
        gt_end=t.gt_end,
        gc=t.gc,
        cond=t.cond,
        input_matrix_size=hw.input_matrix_size,
        n_gt_hw=hw.n_global_timers,
        n_gc_hw=hw.n_global_counters,
        n_cond_hw=hw.n_conditions,
        timers_s=[s.timer for s in sm.states],
    )


def _check_size(sm: StateMachine, hw: HardwareInfo) -> bool:
    """Refuse machines the device cannot hold; returns whether ``>back`` is used."""
    if not sm.states:
        raise StateMachineError("the state machine has no states")
    n = len(sm.states)
    use_back = any(t == BACK for s in sm.states for t in s.transitions.values())
    # exit is encoded as state number n and >back as 255, both in one byte
    limit = min(hw.max_states, 255) - (1 if use_back else 0)
    if n > limit:
        raise StateMachineError(
            f"{n} states, but this device holds at most {limit} (exit{' and >back' if use_back else ''} "
            "take a state number)"
        )
    return use_back


def _fill_transitions(sm: StateMachine, hw: HardwareInfo, t: _Tables) -> None:
    """Each state's ``event: target`` into the input, timer, counter, condition and Tup tables."""
    names = [s.name for s in sm.states]
    index = {name: i for i, name in enumerate(names)}
    valid_targets = [*names, "exit", BACK]
    event_codes = hw.event_codes()
    ims, ngt, ngc, ncond = (
        hw.input_matrix_size,
        hw.n_global_timers,
        hw.n_global_counters,
        hw.n_conditions,
    )
    for si, st in enumerate(sm.states):
        where = f"state {st.name!r}"
        for ev, tgt in st.transitions.items():
            if tgt in EXIT_NAMES:
                target = t.n
            elif tgt == BACK:
                target = 255
            elif tgt in index:
                target = index[tgt]
            else:
                raise encoding.unknown_name("target state", tgt, valid_targets, where)
            code = event_codes.get(ev)
            if code is None:
                raise encoding.unknown_name("event", ev, list(event_codes), where)
            if code < ims:
                t.inputs[si][code] = target
                continue
            rel = code - ims
            if rel < ngt:
                t.gt_start[si][rel] = target
                t.used_gt = max(t.used_gt, rel + 1)
            elif rel < 2 * ngt:
                t.gt_end[si][rel - ngt] = target
                t.used_gt = max(t.used_gt, rel - ngt + 1)
            elif rel < 2 * ngt + ngc:
                t.gc[si][rel - 2 * ngt] = target
                t.used_gc = max(t.used_gc, rel - 2 * ngt + 1)
            elif rel < 2 * ngt + ngc + ncond:
                t.cond[si][rel - 2 * ngt - ngc] = target
                t.used_cond = max(t.used_cond, rel - 2 * ngt - ngc + 1)
            else:
                t.tup[si] = target


def _check_used(t: _Tables, hw: HardwareInfo) -> None:
    for what, used, hw_n in (
        ("global timers", t.used_gt, hw.n_global_timers),
        ("global counters", t.used_gc, hw.n_global_counters),
        ("conditions", t.used_cond, hw.n_conditions),
    ):
        if used > hw_n:
            raise StateMachineError(f"{what} up to {used} used, but this device has {hw_n}")


def _fill_actions(sm: StateMachine, hw: HardwareInfo, t: _Tables) -> None:
    """Each state's ``channel: value`` into the output rows and the timer/counter controls."""
    out_names = hw.output_channel_names()
    out_index = {name: i for i, name in enumerate(out_names)}
    ngt = hw.n_global_timers
    for si, st in enumerate(sm.states):
        row = []
        for ch, value in st.actions.items():
            what = f"state {st.name!r} action {ch}"
            if ch == "GlobalTimerTrig":
                t.trig[si] = encoding.mask(value, ngt, what)
                t.used_gt = max(t.used_gt, t.trig[si].bit_length())
            elif ch == "GlobalTimerCancel":
                t.cancel[si] = encoding.mask(value, ngt, what)
                t.used_gt = max(t.used_gt, t.cancel[si].bit_length())
            elif ch == "GlobalCounterReset":
                t.reset[si] = encoding.u8(value, what, hw.n_global_counters)
                t.used_gc = max(t.used_gc, t.reset[si])
            elif ch in out_index:
                kind = hw.outputs[out_index[ch]]
                row.append((out_index[ch], encoding.u8(value, what, output_limit(kind))))
            else:
                valid = out_names + list(VIRTUAL_OUTPUTS)
                raise encoding.unknown_name("output channel", ch, valid, f"state {st.name!r}")
        t.outputs.append(row)


def soft_code_event(code: int) -> str:
    """Event name generated by host soft code ``code`` (1-based, like MATLAB's SendBpodSoftCode)."""
    return f"SoftCode{code}"
