"""The per-cycle engine of the emulated firmware: what happens in one 100 us cycle of a trial.

Inputs, conditions, serial and soft-code events, global timers and counters are evaluated in the
firmware's order (reference 4.3), the first event that leaves the state moves the machine, and
outputs follow the new state. Cycles in which nothing can happen are skipped arithmetically
(:meth:`CycleEngine._next_interesting_cycle`), which is why a long trial costs few steps.
"""

from __future__ import annotations

from services.bpod.emulator.hardware import APP, MAIN, PHYSICAL_OUTPUTS


def u32(v: int) -> bytes:
    """A cycle count or event time as the firmware sends it: 4 bytes, little-endian."""
    return (v & 0xFFFFFFFF).to_bytes(4, "little")


def _bits(mask: int) -> list[int]:
    return [i for i in range(32) if mask >> i & 1]


class CycleEngine:
    """Mixin of :class:`~services.bpod.emulator.machine.Emulator`: the running trial, cycle by
    cycle. It reads and changes the emulator's trial state (``description``, ``state``, ``raw``,
    ``gt_*``, ``gc_*``, ``scheduled``...), which ``Emulator._start_trial`` sets up."""

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
            self.write(MAIN, bytes([1, len(events), *events]) + u32(cyc))
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
