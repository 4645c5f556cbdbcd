"""The emulated state-machine firmware: command parser plus per-cycle engine, without any I/O.

Bytes from the host go in through :meth:`Emulator.feed`; bytes to the host go out through the
``write(port, data)`` callback; :meth:`Emulator.poll` advances a 100 us virtual cycle clock to the
real time given by ``clock`` and returns how long the caller may sleep. Cycles in which nothing can
happen are skipped arithmetically, so a 10 s trial costs a handful of steps, yet every packet
carries the cycle number the hardware would have produced (end - start = cycles x 100 us exactly).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.bpod.emulator.description import Description, DescriptionError, parse_description
from services.bpod.emulator.hardware import DIGITAL_TYPES, SERIAL_TYPES, Profile
from services.bpod.emulator.script import ScriptItem, resolve_event

MAIN, APP, FLEX = 0, 1, 2
PHYSICAL_OUTPUTS = "BWVPFD"
STATE_MATRIX_BUFFER = 50000


def _u32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def _bits(mask: int) -> list[int]:
    return [i for i in range(32) if mask >> i & 1]


class Emulator:
    """A Bpod state machine (one profile) driven by host bytes and a clock."""

    def __init__(
        self,
        profile: Profile,
        write: Callable[[int, bytes], None],
        clock: Callable[[], float] = time.monotonic,
        discovery: bool = True,
        script: list[ScriptItem] | None = None,
    ) -> None:
        self.p = profile
        self._write = write
        self.clock = clock
        self.discovery = discovery
        self.script: list[ScriptItem] = list(script or [])
        self.buf = bytearray()
        now = clock()
        self.connected = False
        self.session_t0 = now
        self.deaf_until = 0.0
        self.next_discovery = now
        self.trial_counter = 0
        n_in, n_out = len(profile.inputs), len(profile.outputs)
        self.input_enabled = [0 if c == "P" else 1 for c in profile.inputs]
        self.alloc = [0] * profile.n_serial_channels
        self.sync = (255, 0)
        self.raw = [1 - profile.logic_high(i) for i in range(n_in)]  # idle = logical low
        self.outputs = [0] * n_out
        self.override = [False] * n_out
        self.gt_hold = [False] * n_out
        self.description: Description | None = None
        self.new_sm = False
        self.sm_ok = True
        self.pending: tuple[Description | None, bool] | None = None
        self.running = False
        self.paused_at: float | None = None
        self.cycle = 0
        self.last_end = (0, 0, 0)
        self.ignored_ops: list[int] = []
        self.soft_codes_out: list[int] = []
        # Reproduces the firmware 23.10 lost-start quirk for tests: swallow this many 'R's.
        self.drop_next_run = 0
        # Serial event bases and digital input event bases.
        self._serial_ch = [i for i, c in enumerate(profile.inputs) if c in SERIAL_TYPES]
        self._digital = [i for i, c in enumerate(profile.inputs) if c in DIGITAL_TYPES]
        self._edge_base = {
            ch: profile.max_serial_events + 2 * k for k, ch in enumerate(self._digital)
        }

    # ------------------------------------------------------------------ host side
    def feed(self, data: bytes, port: int = MAIN) -> None:
        """Bytes arriving from the host on ``port`` (APP bytes are soft codes into the FSM)."""
        if port == MAIN:
            self.buf += data
        elif port == APP and self.running and "Z" in self.p.inputs:
            z = self.p.inputs.index("Z")
            for b in data:
                self._schedule(self.cycle + 1, ("soft", z, b))

    def write(self, port: int, data: bytes) -> None:
        self._write(port, data)

    def set_input(self, name: str) -> None:
        """Hardware input change by event name (e.g. "Port1In"), applied in the next cycle."""
        kind, ch, value = resolve_event(self.p, name)
        if self.running:
            self._schedule(self.cycle + 1, (kind, ch, value))
        elif kind == "hw":
            self.raw[ch] = value

    def poll(self) -> float:
        """Catch up with real time, run pending commands; return seconds until the next deadline."""
        now = self.clock()
        if self.running and self.paused_at is None:
            self._run_until(int((now - self.trial_t0) * 1e4 + 1e-9))
        if now >= self.deaf_until:
            self._process_commands(now)
        if self.discovery and not self.connected and now >= self.next_discovery:
            self.write(MAIN, b"\xde")
            self.next_discovery = now + 0.1
        wake = [now + 0.5]
        if self.discovery and not self.connected:
            wake.append(self.next_discovery)
        if self.buf and now < self.deaf_until:
            wake.append(self.deaf_until)
        if self.running and self.paused_at is None:
            nxt = self._next_interesting_cycle()
            if nxt is not None:
                wake.append(self.trial_t0 + nxt * 1e-4)
        return max(0.0, min(wake) - now)

    # ------------------------------------------------------------------ commands
    def _command_length(self) -> int | None:
        """Total length of the command at the head of the buffer, None while incomplete."""
        b, op = self.buf, chr(self.buf[0])
        fixed = {
            ":": 2,
            "K": 3,
            "J": 3,
            "U": 3,
            "O": 3,
            "I": 2,
            "V": 3,
            "~": 2,
            "S": 2,
            "$": 2,
            "^": 5,
            "o": 2,
            "e": 4,
        }
        nf = self.p.n_flex
        var = {
            "E": 1 + len(self.p.inputs),
            "%": 1 + self.p.n_serial_channels,
            "Q": 1 + nf,
            "t": 1 + 4 * nf,
            "p": 1 + 2 * nf,
            "m": 1 + nf,
        }
        if op in fixed:
            n = fixed[op]
        elif op in var:
            n = var[op]
        elif op == "T":
            n = 3 + b[2] if len(b) >= 3 else 10**9
        elif op == "C":
            if len(b) < 5:
                return None
            body = int.from_bytes(b[3:5], "little")
            n = 5 + body if body < STATE_MATRIX_BUFFER else 5
        elif op == "L":
            if len(b) < 3:
                return None
            pos = 3
            for _ in range(b[2]):
                if len(b) < pos + 2:
                    return None
                pos += 2 + b[pos + 1]
            n = pos
        else:
            n = 1
        return n if len(b) >= n else None

    def _process_commands(self, now: float) -> None:
        while self.buf and now >= self.deaf_until:
            n = self._command_length()
            if n is None:
                return
            cmd = bytes(self.buf[:n])
            del self.buf[:n]
            self._execute(cmd, now)

    def _execute(self, cmd: bytes, now: float) -> None:  # noqa: C901 - one branch per op code
        op, arg = chr(cmd[0]), cmd[1:]
        p, fw23 = self.p, self.p.fw_major >= 23
        ack = b"\x01"
        if op == "6":
            self.connected = True
            self.write(MAIN, b"5")
            self.deaf_until = now + 0.1
            self.session_t0 = now
        elif op == "F":
            self.write(
                MAIN, p.fw_major.to_bytes(2, "little") + p.machine_type.to_bytes(2, "little")
            )
        elif op == "f" and fw23:
            self.write(MAIN, p.fw_minor.to_bytes(2, "little"))
        elif op == "v" and fw23:
            self.write(MAIN, bytes([p.pcb_revision]))
        elif op == "H":
            self.write(MAIN, p.hardware_description())
        elif op == "G":
            self.write(MAIN, ack)
        elif op == "*":
            self.session_t0 = now
            self.trial_counter = 0
            self.write(MAIN, ack)
        elif op == ":" and fw23:
            self.write(MAIN, ack)
        elif op == "E":
            self.input_enabled = list(arg)
            self.write(MAIN, ack)
        elif op == "K":
            self.sync = (arg[0], arg[1])
            self.write(MAIN, ack)
        elif op == "M":
            self.write(MAIN, bytes(p.inputs.count("U")))
        elif op == "%":
            self.alloc = list(arg)
            self.write(MAIN, ack)
        elif op in "L>":
            self.write(MAIN, ack)
        elif op == "O":
            ch, value = arg
            if ch < len(p.outputs) and p.outputs[ch] in PHYSICAL_OUTPUTS:
                self.outputs[ch] = value
                self.override[ch] = value != 0
        elif op == "I":
            ch = arg[0]
            if ch < len(p.inputs):
                self.write(MAIN, bytes([int(self.raw[ch] == p.logic_high(ch))]))
        elif op == "V":
            if self.running and arg[0] < len(p.inputs):
                self._schedule(self.cycle + 1, ("virtual", arg[0], arg[1]))
        elif op == "~":
            if self.running:
                self._schedule(self.cycle + 1, ("soft", p.inputs.index("X"), arg[0]))
        elif op == "S":
            self.write(MAIN, b"\x02" + arg[:1])
        elif op == "C":
            self._receive_description(cmd, now)
        elif op == "R":
            if self.drop_next_run > 0:
                self.drop_next_run -= 1
            elif not self.running:
                self._start_trial(now)
        elif op == "X":
            if self.running:
                self._end_trial()
            else:
                self._send_end_packet()
        elif op == "$":
            self._pause(now, arg[0] == 0)
        elif op == "Z":
            self.connected = False
            self.write(MAIN, b"1")
            self.next_discovery = now + 0.1
        elif op == "{" and fw23:
            self.write(APP, b"\xde")
        elif op == "}" and p.machine_type == 4:
            self.write(FLEX, b"\xdf")
        elif p.machine_type == 4 and op in "Q^otpme":
            self.write(MAIN, ack)
        elif p.machine_type == 4 and op == "q":
            self.write(MAIN, bytes(p.n_flex))
        elif p.machine_type == 4 and op == ".":
            self.write(MAIN, b"\x00")
        elif p.machine_type == 4 and op == "_":
            self.write(MAIN, b"\x08\x01")
        elif op not in "JTU":
            self.ignored_ops.append(cmd[0])

    def _receive_description(self, cmd: bytes, now: float) -> None:
        run_asap, back = cmd[1], cmd[2]
        body = cmd[5:]
        try:
            desc: Description | None = parse_description(body, self.p, bool(back))
        except DescriptionError:
            desc = None
        if self.running:
            self.pending = (desc, bool(run_asap))
            return
        self._load(desc)
        if run_asap:
            self._start_trial(now)

    def _load(self, desc: Description | None) -> None:
        self.new_sm = True
        self.sm_ok = desc is not None
        if desc is not None:
            self.description = desc

    def _pause(self, now: float, pause: bool) -> None:
        if not self.running:
            return
        if pause and self.paused_at is None:
            self._run_until(int((now - self.trial_t0) * 1e4))
            self.paused_at = now
        elif not pause and self.paused_at is not None:
            self.trial_t0 += now - self.paused_at
            self.paused_at = None

    # ------------------------------------------------------------------ trials
    def _start_trial(self, now: float) -> None:
        if self.new_sm:
            self.write(MAIN, b"\x01" if self.sm_ok else b"\x00")
            self.new_sm = False
            if not self.sm_ok:
                return
        d = self.description
        if d is None:
            return
        self.running = True
        self.paused_at = None
        self.trial_t0 = now
        self.start_us = round((now - self.session_t0) * 1e6)
        self.write(MAIN, self.start_us.to_bytes(8, "little"))
        self.cycle = 0
        self.state = self.prev_state = 0
        self.state_start = 0
        self.visited = [(0, 0)]  # (cycle, state) of this trial, for tests and debugging
        self.carried: list[int] = []
        self.scheduled: dict[int, list[tuple[str, int, int]]] = {}
        for item in self.script:
            self._schedule(item.cycle, (item.kind, item.channel, item.value))
        self.latched = [False] * len(self.p.inputs)
        self.last = list(self.raw)
        n = d.n_gt
        self.gt_triggered = [False] * n
        self.gt_active = [False] * n
        self.gt_start_at = [0] * n
        self.gt_end_at = [0] * n
        self.gt_loops = [0] * n
        self.gc_count = [0] * d.n_gc
        self.gc_handled = [False] * d.n_gc
        self._set_state_outputs(0)

    def _schedule(self, cycle: int, item: tuple[str, int, int]) -> None:
        self.scheduled.setdefault(cycle, []).append(item)

    def _send_end_packet(self) -> None:
        cyc, n, end_us = self.last_end
        self.write(MAIN, b"\x01\x01\xff" + _u32(cyc) + _u32(n) + end_us.to_bytes(8, "little"))

    def _end_trial(self) -> None:
        self.running = False
        end_us = self.start_us + self.cycle * self.p.timer_period_us
        self.last_end = (self.cycle, self.cycle, end_us)
        self._send_end_packet()
        for ch, kind in enumerate(self.p.outputs):
            if kind in PHYSICAL_OUTPUTS:
                self.outputs[ch] = 0
        self.override = [False] * len(self.outputs)
        self.gt_hold = [False] * len(self.outputs)
        for i in range(len(self.raw)):  # virtual-input latches end with the trial
            if self.latched[i]:
                self.raw[i] = 1 - self.p.logic_high(i)
        self.trial_counter += 1
        if self.pending is not None:
            desc, run_asap = self.pending
            self.pending = None
            self._load(desc)
            if run_asap:
                self._start_trial(self.trial_t0 + self.cycle * 1e-4)

    # ------------------------------------------------------------------ per-cycle engine
    def _cond_level(self, k: int) -> int:
        ch = self.description.cond_channel[k]
        n_in = len(self.p.inputs)
        return int(self.gt_active[ch - n_in]) if ch >= n_in else self.raw[ch]

    def _conditions_true(self) -> bool:
        d, s = self.description, self.state
        return any(
            d.cond[s].get(k, s) != s and self._cond_level(k) == d.cond_value[k]
            for k in range(d.n_cond)
        )

    def _next_interesting_cycle(self) -> int | None:
        """First cycle after now in which an event can occur (None: only host bytes can wake it)."""
        nxt = self.cycle + 1
        d = self.description
        if self.carried or self._conditions_true():
            return nxt
        gcs = zip(self.gc_count, d.gc_threshold, self.gc_handled, strict=True)
        if any(c >= t and not h for c, t, h in gcs):
            return nxt
        cands = list(self.scheduled)
        if d.tup[self.state] != self.state:
            cands.append(self.state_start + d.timers[self.state])
        for t in range(d.n_gt):
            if self.gt_active[t]:
                cands.append(self.gt_end_at[t])
            elif self.gt_triggered[t]:
                cands.append(self.gt_start_at[t])
        return max(nxt, min(cands)) if cands else None

    def _run_until(self, target: int) -> None:
        while self.running and self.cycle < target:
            nxt = self._next_interesting_cycle()
            if nxt is None or nxt > target:
                self.cycle = target
                return
            self.cycle = nxt - 1
            self._step()

    def _target(self, code: int) -> int:
        d, s, p = self.description, self.state, self.p
        if code < p.input_matrix_size:
            return d.inputs[s].get(code, s)
        if code < p.gt_end_base:
            return d.gt_start[s].get(code - p.gt_start_base, s)
        if code < p.gc_base:
            return d.gt_end[s].get(code - p.gt_end_base, s)
        if code < p.cond_base:
            return d.gc[s].get(code - p.gc_base, s)
        if code < p.tup_code:
            return d.cond[s].get(code - p.cond_base, s)
        return d.tup[s] if code == p.tup_code else s

    def _step(self) -> None:
        """One 100 us cycle, in the order the firmware evaluates it (reference 4.3)."""
        self.cycle += 1
        cyc, d, p = self.cycle, self.description, self.p
        events, self.carried = self.carried, []
        soft: list[tuple[int, int]] = []
        for kind, ch, value in self.scheduled.pop(cyc, []):
            if kind == "hw" and not self.latched[ch]:
                self.raw[ch] = value
            elif kind == "virtual":
                self.raw[ch] = value
                self.latched[ch] = True
            elif kind == "soft":
                soft.append((ch, value))
        for k in range(d.n_cond):
            if d.cond[self.state].get(k, self.state) != self.state:
                if self._cond_level(k) == d.cond_value[k]:
                    events.append(p.cond_base + k)
        for ch in self._digital:
            if self.raw[ch] != self.last[ch]:
                self.last[ch] = self.raw[ch]
                if self.input_enabled[ch]:
                    rising = self.raw[ch] == p.logic_high(ch)
                    events.append(self._edge_base[ch] + (0 if rising else 1))
        seen: set[int] = set()
        for ch, code in soft:
            j = self._serial_ch.index(ch)
            if j in seen:  # one byte per serial channel per cycle; the rest waits
                self._schedule(cyc + 1, ("soft", ch, code))
                continue
            seen.add(j)
            if code < self.alloc[j]:
                events.append(sum(self.alloc[:j]) + code)
        for t in range(d.n_gt):
            loops = d.gt_loop[t]
            if self.gt_active[t] and cyc >= self.gt_end_at[t]:
                self.gt_active[t] = False
                self._gt_channel(t, on=False)
                if d.gt_send_events[t] or loops == 0:
                    events.append(p.gt_end_base + t)
                if loops:
                    self.gt_loops[t] += 1
                    if loops == 1 or self.gt_loops[t] < loops:
                        self.gt_triggered[t] = True
                        self.gt_start_at[t] = cyc + d.gt_loop_interval[t]
            if self.gt_triggered[t] and not self.gt_active[t] and cyc >= self.gt_start_at[t]:
                self._gt_activate(t, events, emit=bool(d.gt_send_events[t] or loops == 0))
        for c in range(d.n_gc):
            if self.gc_count[c] >= d.gc_threshold[c] and not self.gc_handled[c]:
                events.append(p.gc_base + c)
                self.gc_handled[c] = True
            self.gc_count[c] += events.count(d.gc_event[c])
        if d.tup[self.state] != self.state and cyc - self.state_start >= d.timers[self.state]:
            events.append(p.tup_code)
        events = events[: p.max_events_per_cycle]
        target = next((t for t in map(self._target, events) if t != self.state), None)
        if events:
            self.write(MAIN, bytes([1, len(events), *events]) + _u32(cyc))
        if target is None:
            return
        if target == d.n_states:
            self._end_trial()
            return
        if target == 255 and d.use_back_signal:
            target = self.prev_state
        self.prev_state, self.state, self.state_start = self.state, target, cyc
        self.visited.append((cyc, target))
        self._set_state_outputs(target)

    def _gt_activate(self, t: int, events: list[int], emit: bool = True) -> None:
        d = self.description
        self.gt_triggered[t] = False
        self.gt_active[t] = True
        self.gt_end_at[t] = self.cycle + d.gt_duration[t]
        self._gt_channel(t, on=True)
        if emit:
            events.append(self.p.gt_start_base + t)
        for u in _bits(d.gt_onset_trigger[t]):
            if u < d.n_gt and not self.gt_active[u]:
                self.gt_triggered[u] = True
                self.gt_start_at[u] = self.cycle + d.gt_onset_delay[u]

    def _gt_channel(self, t: int, on: bool) -> None:
        d = self.description
        ch = d.gt_channel[t]
        if ch >= len(self.p.outputs):
            return
        self._drive(ch, d.gt_on[t] if on else d.gt_off[t])
        self.gt_hold[ch] = on

    def _drive(self, ch: int, value: int) -> None:
        kind = self.p.outputs[ch]
        if kind == "X":
            if value:
                self.soft_codes_out.append(value)
                self.write(MAIN, bytes([2, value & 0xFF]))
        elif kind == "Z":
            if value:
                self.write(APP, bytes([value & 0xFF]))
        elif kind in PHYSICAL_OUTPUTS:
            self.outputs[ch] = value

    def _set_state_outputs(self, s: int) -> None:
        d, p = self.description, self.p
        front: list[int] = []
        for t in _bits(d.gt_cancel[s]):
            if t < d.n_gt and (self.gt_active[t] or self.gt_triggered[t]):
                if self.gt_active[t]:
                    self._gt_channel(t, on=False)
                    self.carried.append(p.gt_end_base + t)
                self.gt_active[t] = self.gt_triggered[t] = False
        for t in _bits(d.gt_trigger[s]):
            if t >= d.n_gt:
                continue
            self.gt_loops[t] = 0
            if d.gt_onset_delay[t] == 0:
                self._gt_activate(t, front)
            else:
                self.gt_triggered[t] = True
                self.gt_start_at[t] = self.cycle + d.gt_onset_delay[t]
        self.carried = front + self.carried
        wanted = dict(d.outputs[s])
        for ch, kind in enumerate(p.outputs):
            if kind in PHYSICAL_OUTPUTS and not self.override[ch] and not self.gt_hold[ch]:
                self.outputs[ch] = wanted.get(ch, 0)
        for ch, value in d.outputs[s]:
            if p.outputs[ch] in "XZ":
                self._drive(ch, value)
        if s in d.gc_reset and d.gc_reset[s] < d.n_gc:
            c = d.gc_reset[s]
            self.gc_count[c] = 0
            self.gc_handled[c] = False
