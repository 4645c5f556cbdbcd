"""Parse the running-trial byte stream and rebuild which states were visited, with times.

Both parts are pure: :class:`EventStreamParser` turns bytes into packets (resynchronising on
garbage), :class:`TrialReplay` applies the same transition rule as the firmware to each packet so
the host knows the state sequence the device went through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.bpod.compiler import CompiledStateMachine

END_CODE = 255
MAX_GARBAGE = 64


class ProtocolError(RuntimeError):
    """The device sent bytes that cannot be Bpod event packets."""


@dataclass
class Events:
    codes: list[int]
    cycle: int


@dataclass
class SoftCode:
    code: int


@dataclass
class TrialEnd:
    cycle: int
    n_cycles: int
    end_us: int


class EventStreamParser:
    """Incremental parser for ``01 n codes u32``, ``02 code`` and the 19-byte end packet."""

    def __init__(self, n_codes: int, max_per_cycle: int = 100) -> None:
        self.n_codes = n_codes
        self.max_per_cycle = max_per_cycle
        self.buf = bytearray()
        self.garbage = 0

    def feed(self, data: bytes) -> list[Events | SoftCode | TrialEnd]:
        self.buf += data
        out: list[Events | SoftCode | TrialEnd] = []
        b = self.buf
        while b:
            if b[0] == 2:
                if len(b) < 2:
                    break
                out.append(SoftCode(b[1]))
                del b[:2]
                continue
            if b[0] == 1 and len(b) >= 2:
                n = b[1]
                if 1 <= n <= self.max_per_cycle:
                    if len(b) < 2 + n:
                        break
                    codes = list(b[2 : 2 + n])
                    if codes == [END_CODE]:
                        if len(b) < 19:
                            break
                        out.append(
                            TrialEnd(
                                int.from_bytes(b[3:7], "little"),
                                int.from_bytes(b[7:11], "little"),
                                int.from_bytes(b[11:19], "little"),
                            )
                        )
                        del b[:19]
                        continue
                    if all(c < self.n_codes for c in codes):
                        if len(b) < 6 + n:
                            break
                        out.append(Events(codes, int.from_bytes(b[2 + n : 6 + n], "little")))
                        del b[: 6 + n]
                        continue
            elif b[0] == 1:
                break
            del b[:1]  # not a packet start: drop one byte and look again
            self.garbage += 1
            if self.garbage > MAX_GARBAGE:
                raise ProtocolError(
                    f"device sent {self.garbage} bytes that are not Bpod event packets; "
                    "the trial was aborted (check the device/firmware or reconnect)"
                )
        return out


@dataclass
class TrialRecord:
    """One finished (or stopped) trial, with times in seconds from trial start."""

    trial: int
    state_machine: str
    start_us: int = 0
    end_us: int = 0
    n_cycles: int = 0
    states: list[list] = field(default_factory=list)  # [name, start_s, end_s] in visit order
    events: list[list] = field(default_factory=list)  # [name, t_s] in arrival order
    soft_codes: list[list] = field(default_factory=list)  # [code, t_s] sent by the device
    stopped: bool = False
    error: str | None = None
    garbage_bytes: int = 0
    lsl_start: float | None = None

    def to_dict(self) -> dict:
        states: dict[str, list] = {}
        for name, t0, t1 in self.states:
            states.setdefault(name, []).append([t0, t1])
        events: dict[str, list] = {}
        for name, t in self.events:
            events.setdefault(name, []).append(t)
        return {
            "trial": self.trial,
            "state_machine": self.state_machine,
            "start_us": self.start_us,
            "end_us": self.end_us,
            "duration_s": round(self.n_cycles * 1e-4, 6),
            "lsl_start": self.lsl_start,
            "visited": [s[0] for s in self.states],
            "states": states,
            "events": events,
            "event_list": self.events,
            "soft_codes": self.soft_codes,
            "stopped": self.stopped,
            "error": self.error,
            "garbage_bytes": self.garbage_bytes,
        }


class TrialReplay:
    """Replays transitions; ``on_events`` returns the entered state (name) or None."""

    def __init__(self, sm: CompiledStateMachine, trial: int, cycle_s: float = 1e-4) -> None:
        self.sm = sm
        self.cycle_s = cycle_s
        self.state = 0
        self.prev = 0
        self.done = False
        self.record = TrialRecord(trial, sm.name)
        self.record.states.append([sm.state_names[0], 0.0, None])
        self.last_t = 0.0

    def on_events(self, pkt: Events) -> tuple[list[str], str | None]:
        """Record the packet's events; returns (event names, new state name or "exit" or None)."""
        t = round(pkt.cycle * self.cycle_s, 6)
        self.last_t = t
        names = []
        for code in pkt.codes:
            name = self.sm.event_names[code] if code < len(self.sm.event_names) else None
            name = name or f"Event{code}"
            names.append(name)
            self.record.events.append([name, t])
        if self.done:
            return names, None
        for code in pkt.codes:
            tgt = self.sm.target(self.state, code)
            if tgt == self.state:
                continue
            self.record.states[-1][2] = t
            if tgt == self.sm.n_states:
                self.done = True
                return names, "exit"
            if tgt == 255 and self.sm.use_back:
                tgt = self.prev
            self.prev, self.state = self.state, tgt
            name = self.sm.state_names[tgt]
            self.record.states.append([name, t, None])
            return names, name
        return names, None

    def on_soft_code(self, code: int) -> None:
        self.record.soft_codes.append([code, self.last_t])

    def finish(self, end: TrialEnd | None, stopped: bool = False) -> TrialRecord:
        rec = self.record
        if end is not None:
            rec.n_cycles = end.n_cycles
            rec.end_us = end.end_us
            t_end = round(end.cycle * self.cycle_s, 6)
        else:
            t_end = self.last_t
        if rec.states and rec.states[-1][2] is None:
            rec.states[-1][2] = t_end
        rec.stopped = stopped or not self.done
        return rec
