"""The emulated state-machine firmware: its state, the host side and the trial lifecycle, no I/O.

Bytes from the host go in through :meth:`Emulator.feed`; bytes to the host go out through the
``write(port, data)`` callback; :meth:`Emulator.poll` advances a 100 us virtual cycle clock to the
real time given by ``clock`` and returns how long the caller may sleep. Cycles in which nothing can
happen are skipped arithmetically, so a 10 s trial costs a handful of steps, yet every packet
carries the cycle number the hardware would have produced (end - start = cycles x 100 us exactly).

What each host op code does is in :mod:`~services.bpod.emulator.host_ops`, what happens in a cycle
in :mod:`~services.bpod.emulator.cycle`; both are mixins of :class:`Emulator` over its state.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.bpod.emulator.cycle import CycleEngine, u32
from services.bpod.emulator.description import Description, DescriptionError, parse_description
from services.bpod.emulator.hardware import (
    APP,
    DIGITAL_TYPES,
    MAIN,
    PHYSICAL_OUTPUTS,
    SERIAL_TYPES,
    Profile,
)
from services.bpod.emulator.host_ops import HostOps, command_length
from services.bpod.emulator.script import ScriptItem, resolve_event


class Emulator(HostOps, CycleEngine):
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
        self._ops = self._op_table()
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
    def _process_commands(self, now: float) -> None:
        while self.buf and now >= self.deaf_until:
            n = command_length(self.buf, self.p)
            if n is None:
                return
            cmd = bytes(self.buf[:n])
            del self.buf[:n]
            self._execute(cmd, now)

    def _receive_description(self, arg: bytes, now: float) -> None:
        """``C``: runASAP, back-signal flag, body length (2 bytes), body."""
        run_asap, back = arg[0], arg[1]
        body = arg[4:]
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
        self.write(MAIN, b"\x01\x01\xff" + u32(cyc) + u32(n) + end_us.to_bytes(8, "little"))

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
