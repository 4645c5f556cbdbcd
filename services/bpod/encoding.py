"""The bytes of each table of the ``C`` command body, in the firmware's layout (reference 3.3).

:func:`services.bpod.compiler.compile_state_machine` fills the state matrices from names and
calls these in wire order. Each checks the values it puts on the wire (byte and word ranges,
timer masks, durations in cycles) and names the state, timer or counter a bad one came from.
"""

from __future__ import annotations

import math

from services.bpod.hardware import HardwareInfo, compress_names, output_limit
from services.bpod.state_machine import GlobalTimer, StateMachine, StateMachineError
from shared_utils.checks import unknown_message


def unknown_name(kind: str, name: object, valid: list[str], where: str) -> StateMachineError:
    """``<where>: unknown <kind> 'x' (did you mean 'y'?); valid: Port1In..Port8In, ...``."""
    shown = compress_names(valid)
    text = unknown_message(kind, name, valid, limit=len(shown), shown=shown)
    return StateMachineError(f"{where}: {text}")


def cycles(seconds: float, hw: HardwareInfo, what: str) -> int:
    """A duration in device cycles (a 32-bit count)."""
    if not isinstance(seconds, int | float) or seconds < 0:
        raise StateMachineError(f"{what}: time must be a number >= 0 seconds, got {seconds!r}")
    limit_s = (2**32 - 1) * hw.timer_period_us / 1e6
    if not math.isfinite(seconds) or seconds > limit_s:  # 1e308 * 1e6 is inf: check first
        raise StateMachineError(
            f"{what}: {seconds} s is longer than the device can count ({limit_s:.0f} s at most)"
        )
    n = round(seconds * 1e6 / hw.timer_period_us)
    if n >= 2**32:
        raise StateMachineError(f"{what}: {seconds} s is longer than the device can count")
    return n


def u8(value: int, what: str, limit: int = 255) -> int:
    """An integer value in 0..limit (a byte unless told)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise StateMachineError(f"{what}: value must be an integer 0..{limit}, got {value!r}")
    return int(value)


def mask(value: object, n_hw: int, what: str) -> int:
    """Timer numbers (one or a list, 1-based) as a bit mask."""
    items = value if isinstance(value, list) else [value]
    bits = 0
    for v in items:
        if not isinstance(v, int) or not 1 <= v <= n_hw:
            raise StateMachineError(f"{what}: timer numbers must be 1..{n_hw}, got {v!r}")
        bits |= 1 << (v - 1)
    return bits


def pairs(table: list[dict[int, int]]) -> bytes:
    """A sparse state matrix: per state, the count and then (event, target) byte pairs."""
    out = bytearray()
    for row in table:
        out.append(len(row))
        for k, target in row.items():
            out += bytes([k, target])
    return bytes(out)


def outputs(rows: list[list[tuple[int, int]]], hw: HardwareInfo) -> bytes:
    """Per state, the count and then (channel, value) words (2 bytes on machine type 4)."""
    w = 2 if hw.wide_outputs else 1
    out = bytearray()
    for row in rows:
        out += len(row).to_bytes(w, "little")
        for ch, v in row:
            out += ch.to_bytes(w, "little") + v.to_bytes(w, "little")
    return bytes(out)


def global_timers(timers: list[GlobalTimer | None], hw: HardwareInfo) -> bytes:
    """Channel, on value, off value, loop mode and send-events flag of each used timer."""
    if not timers:
        return b""
    out_names = hw.output_channel_names()
    out_index = {name: i for i, name in enumerate(out_names)}
    chans, ons, offs = [], [], []
    for t, gt in enumerate(timers):
        if gt is None or gt.channel is None:
            chans.append(255)
            ons.append(0)
            offs.append(0)
            continue
        if gt.channel not in out_index:
            raise unknown_name("output channel", gt.channel, out_names, f"global timer {t + 1}")
        ch = out_index[gt.channel]
        uart = hw.outputs[ch] == "U"
        chans.append(ch)
        ons.append(255 if uart and gt.on_value == 0 else gt.on_value)
        offs.append(255 if uart and gt.off_value == 0 else gt.off_value)
    out = bytearray(chans)
    w = 2 if hw.wide_outputs else 1
    for vals, key in ((ons, "on_value"), (offs, "off_value")):
        for t, (v, ch) in enumerate(zip(vals, chans, strict=True)):
            limit = 255 if ch == 255 else output_limit(hw.outputs[ch])  # UART: message index
            out += u8(v, f"global timer {t + 1} {key}", limit).to_bytes(w, "little")
    out += bytes(
        u8(gt.loop if gt else 0, f"global timer {t + 1} loop") for t, gt in enumerate(timers)
    )
    for t, gt in enumerate(timers):
        if gt is not None and not isinstance(gt.send_events, bool | int):
            raise StateMachineError(f"global timer {t + 1}: send_events must be true or false")
    out += bytes(int(bool(gt.send_events)) if gt else 1 for gt in timers)
    return bytes(out)


def counter_events(sm: StateMachine, used_gc: int, hw: HardwareInfo) -> bytes:
    """The event code each used global counter counts (254: counter not defined)."""
    event_codes = hw.event_codes() if used_gc else {}
    out = bytearray()
    for c in range(used_gc):
        counter = sm.global_counters.get(c + 1)
        if counter is None:
            out.append(254)
        elif counter.event not in event_codes or event_codes[counter.event] > 255:
            raise unknown_name("event", counter.event, list(event_codes), f"global counter {c + 1}")
        else:
            out.append(event_codes[counter.event])
    return bytes(out)


def conditions(sm: StateMachine, used_cond: int, hw: HardwareInfo) -> bytes:
    """Channel (an input or a global timer) and value of each used condition."""
    if not used_cond:
        return b""
    cond_channels = hw.input_channel_names() + [
        f"GlobalTimer{t + 1}" for t in range(hw.n_global_timers)
    ]
    chans, vals = [], []
    for k in range(used_cond):
        c = sm.conditions.get(k + 1)
        if c is None:
            chans.append(0)
            vals.append(0)
            continue
        if c.channel not in cond_channels:
            raise unknown_name("condition channel", c.channel, cond_channels, f"condition {k + 1}")
        chans.append(cond_channels.index(c.channel))
        vals.append(u8(c.value, f"condition {k + 1} value", 1))
    return bytes(chans) + bytes(vals)


def counter_resets(reset: dict[int, int], n: int, hw: HardwareInfo) -> bytes:
    """Which counter each state resets: sparse (state, counter) pairs on firmware 23."""
    if hw.fw_major >= 23:
        return bytes([len(reset)]) + b"".join(bytes([si, c]) for si, c in reset.items())
    return bytes(reset.get(si, 0) for si in range(n))


def timer_masks(
    trig: list[int], cancel: list[int], timers: list[GlobalTimer | None], hw: HardwareInfo
) -> bytes:
    """Per state the timers it triggers and cancels; per timer the timers its onset triggers."""
    mw, ngt = hw.mask_bytes, hw.n_global_timers
    out = bytearray()
    for m in (*trig, *cancel):
        out += m.to_bytes(mw, "little")
    for gt in timers:
        out += (
            mask(gt.onset_triggers, ngt, "onset_triggers").to_bytes(mw, "little")
            if gt and gt.onset_triggers
            else bytes(mw)
        )
    return bytes(out)


def durations(sm: StateMachine, timers: list[GlobalTimer | None], hw: HardwareInfo) -> bytes:
    """State timers, then each used timer's duration, onset delay and loop interval, in cycles."""
    out = bytearray()
    for st in sm.states:
        out += cycles(st.timer, hw, f"state {st.name!r}").to_bytes(4, "little")
    for attr in ("duration", "onset_delay", "loop_interval"):
        for t, gt in enumerate(timers):
            out += cycles(
                getattr(gt, attr) if gt else 0, hw, f"global timer {t + 1} {attr}"
            ).to_bytes(4, "little")
    return bytes(out)


def counter_thresholds(sm: StateMachine, used_gc: int) -> bytes:
    """The count at which each used global counter fires."""
    out = bytearray()
    for c in range(used_gc):
        counter = sm.global_counters.get(c + 1)
        thr = counter.threshold if counter else 0
        if isinstance(thr, bool) or not isinstance(thr, int) or not 0 <= thr < 2**32:
            raise StateMachineError(
                f"global counter {c + 1}: threshold must be an integer 0..{2**32 - 1}"
            )
        out += thr.to_bytes(4, "little")
    return bytes(out)
