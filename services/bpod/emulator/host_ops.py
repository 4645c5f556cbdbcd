"""The host's op codes as the emulated firmware answers them: command lengths, one handler each.

A command is taken off the input buffer once :func:`command_length` says it is complete.
:class:`HostOps` looks its op code up in a table built once per profile: ops that only firmware
23 or machine type 4 know are absent from the others' tables, so those ignore them as the real
devices do (and ``ignored_ops`` records them for tests).
"""

from __future__ import annotations

from collections.abc import Callable

from services.bpod.emulator.hardware import APP, FLEX, MAIN, PHYSICAL_OUTPUTS, Profile

STATE_MATRIX_BUFFER = 50000
ACK = b"\x01"
_FIXED = {":": 2, "K": 3, "J": 3, "U": 3, "O": 3, "I": 2, "V": 3, "~": 2, "S": 2, "$": 2, "^": 5}
_FIXED |= {"o": 2, "e": 4}
Handler = Callable[[bytes, float], None]


def command_length(b: bytearray, p: Profile) -> int | None:
    """Total length of the command at the head of ``b``, None while it is incomplete."""
    op = chr(b[0])
    nf = p.n_flex
    var = {
        "E": 1 + len(p.inputs),
        "%": 1 + p.n_serial_channels,
        "Q": 1 + nf,
        "t": 1 + 4 * nf,
        "p": 1 + 2 * nf,
        "m": 1 + nf,
    }
    if op in _FIXED:
        n = _FIXED[op]
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


class HostOps:
    """Mixin of :class:`~services.bpod.emulator.machine.Emulator`: what each op code does."""

    def _execute(self, cmd: bytes, now: float) -> None:
        handler = self._ops.get(chr(cmd[0]))
        if handler is not None:
            handler(cmd[1:], now)
        elif chr(cmd[0]) not in "JTU":
            self.ignored_ops.append(cmd[0])

    def _op_table(self) -> dict[str, Handler]:
        """Op code -> handler(arguments, now) for this profile."""
        p = self.p

        def reply(data: bytes) -> Handler:
            return lambda arg, now: self.write(MAIN, data)

        ops: dict[str, Handler] = {
            "6": self._op_handshake,
            "F": reply(p.fw_major.to_bytes(2, "little") + p.machine_type.to_bytes(2, "little")),
            "H": reply(p.hardware_description()),
            "M": reply(bytes(p.inputs.count("U"))),
            "G": reply(ACK),
            "L": reply(ACK),
            ">": reply(ACK),
            "*": self._op_reset_clock,
            "E": self._op_enable_inputs,
            "K": self._op_sync,
            "%": self._op_serial_alloc,
            "O": self._op_override,
            "I": self._op_read_input,
            "V": self._op_virtual_input,
            "~": self._op_soft_code,
            "S": lambda arg, now: self.write(MAIN, b"\x02" + arg[:1]),
            "C": lambda arg, now: self._receive_description(arg, now),
            "R": self._op_run,
            "X": self._op_exit,
            "$": lambda arg, now: self._pause(now, arg[0] == 0),
            "Z": self._op_disconnect,
        }
        if p.fw_major >= 23:
            ops |= {
                "f": reply(p.fw_minor.to_bytes(2, "little")),
                "v": reply(bytes([p.pcb_revision])),
                ":": reply(ACK),
                "{": lambda arg, now: self.write(APP, b"\xde"),
            }
        if p.machine_type == 4:
            ops |= {op: reply(ACK) for op in "Q^otpme"}
            ops |= {
                "}": lambda arg, now: self.write(FLEX, b"\xdf"),
                "q": reply(bytes(p.n_flex)),
                ".": reply(b"\x00"),
                "_": reply(b"\x08\x01"),
            }
        return ops

    # ---- connection and settings ------------------------------------------------------------
    def _op_handshake(self, arg: bytes, now: float) -> None:
        self.connected = True
        self.write(MAIN, b"5")
        self.deaf_until = now + 0.1
        self.session_t0 = now

    def _op_disconnect(self, arg: bytes, now: float) -> None:
        self.connected = False
        self.write(MAIN, b"1")
        self.next_discovery = now + 0.1

    def _op_reset_clock(self, arg: bytes, now: float) -> None:
        self.session_t0 = now
        self.trial_counter = 0
        self.write(MAIN, ACK)

    def _op_enable_inputs(self, arg: bytes, now: float) -> None:
        self.input_enabled = list(arg)
        self.write(MAIN, ACK)

    def _op_sync(self, arg: bytes, now: float) -> None:
        self.sync = (arg[0], arg[1])
        self.write(MAIN, ACK)

    def _op_serial_alloc(self, arg: bytes, now: float) -> None:
        self.alloc = list(arg)
        self.write(MAIN, ACK)

    # ---- runtime I/O -------------------------------------------------------------------------
    def _op_override(self, arg: bytes, now: float) -> None:
        ch, value = arg
        if ch < len(self.p.outputs) and self.p.outputs[ch] in PHYSICAL_OUTPUTS:
            self.outputs[ch] = value
            self.override[ch] = value != 0

    def _op_read_input(self, arg: bytes, now: float) -> None:
        ch = arg[0]
        if ch < len(self.p.inputs):
            self.write(MAIN, bytes([int(self.raw[ch] == self.p.logic_high(ch))]))

    def _op_virtual_input(self, arg: bytes, now: float) -> None:
        if self.running and arg[0] < len(self.p.inputs):
            self._schedule(self.cycle + 1, ("virtual", arg[0], arg[1]))

    def _op_soft_code(self, arg: bytes, now: float) -> None:
        if self.running:
            self._schedule(self.cycle + 1, ("soft", self.p.inputs.index("X"), arg[0]))

    # ---- trials ------------------------------------------------------------------------------
    def _op_run(self, arg: bytes, now: float) -> None:
        if self.drop_next_run > 0:
            self.drop_next_run -= 1
        elif not self.running:
            self._start_trial(now)

    def _op_exit(self, arg: bytes, now: float) -> None:
        if self.running:
            self._end_trial()
        else:
            self._send_end_packet()
