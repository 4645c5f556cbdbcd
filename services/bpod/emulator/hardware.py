"""Hardware profiles of the emulated state machines (what the firmware knows about its board).

The emulator keeps its own tables instead of sharing the driver's: the driver learns the layout
from the ``H`` reply, so a mistake on either side shows up as a test failure rather than cancelling
out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAIN, APP, FLEX = 0, 1, 2  # the device's serial ports: state machine, APP (fw 23), Flex (type 4)
PHYSICAL_OUTPUTS = "BWVPFD"  # output channels driven to levels (the rest send bytes)
SERIAL_TYPES = "UXZ"  # input channels whose events are allocated by '%'
DIGITAL_TYPES = "FBWP"  # input channels with two edge events each


@dataclass(frozen=True)
class Profile:
    """Fixed facts of one machine type / firmware combination."""

    machine_type: int
    fw_major: int
    fw_minor: int
    inputs: str
    outputs: str
    max_states: int = 256
    max_serial_events: int = 105
    n_global_timers: int = 16
    n_global_counters: int = 8
    n_conditions: int = 16
    pcb_revision: int = 5
    timer_period_us: int = 100
    max_events_per_cycle: int = 100
    n_flex: int = field(default=0)

    @property
    def serial_message_max_bytes(self) -> int:
        return 5 if self.machine_type >= 3 else 3

    @property
    def n_serial_channels(self) -> int:
        return sum(c in SERIAL_TYPES for c in self.inputs)

    @property
    def input_matrix_size(self) -> int:
        return self.max_serial_events + 2 * (len(self.inputs) - self.n_serial_channels)

    @property
    def gt_start_base(self) -> int:
        return self.input_matrix_size

    @property
    def gt_end_base(self) -> int:
        return self.input_matrix_size + self.n_global_timers

    @property
    def gc_base(self) -> int:
        return self.input_matrix_size + 2 * self.n_global_timers

    @property
    def cond_base(self) -> int:
        return self.gc_base + self.n_global_counters

    @property
    def tup_code(self) -> int:
        return self.cond_base + self.n_conditions

    @property
    def mask_bytes(self) -> int:
        """Width of the timer trigger/cancel bitmasks in the description (follows hardware nGT)."""
        return 1 if self.n_global_timers <= 8 else 2 if self.n_global_timers <= 16 else 4

    @property
    def wide_outputs(self) -> bool:
        """Type 4 encodes output-matrix entries and timer on/off values as u16."""
        return self.machine_type == 4

    def logic_high(self, channel: int) -> int:
        """Raw level that counts as logical high: BNC/wire inputs are inverted on types 2-4."""
        kind = self.inputs[channel]
        return 0 if kind in "BW" and self.machine_type >= 2 else 1

    def hardware_description(self) -> bytes:
        """The ``H`` reply (firmware 23 carries SerialMessageMaxBytes, firmware 22 does not)."""
        out = bytearray()
        out += self.max_states.to_bytes(2, "little")
        out += self.timer_period_us.to_bytes(2, "little")
        out.append(self.max_serial_events)
        if self.fw_major >= 23:
            out.append(self.serial_message_max_bytes)
        out += bytes([self.n_global_timers, self.n_global_counters, self.n_conditions])
        out.append(len(self.inputs))
        out += self.inputs.encode()
        out.append(len(self.outputs))
        out += self.outputs.encode()
        return bytes(out)


PROFILES: dict[tuple[int, int], Profile] = {
    (3, 23): Profile(3, 23, 10, "UUUUUXZBBPPPP", "UUUUUXZBBPPPPVVVV"),
    (4, 23): Profile(
        4, 23, 10, "UUUXZFFFFBBPPPPP", "UUUXZFFFFBBPPPPPVVVVV", max_serial_events=75, n_flex=4
    ),
    (3, 22): Profile(3, 22, 0, "UUUUUXBBPPPP", "UUUUUXBBPPPPVVVV", max_serial_events=90),
}


def get_profile(machine_type: int, firmware: int) -> Profile:
    """Return the profile or explain which combinations exist."""
    try:
        return PROFILES[(machine_type, firmware)]
    except KeyError:
        why = (
            ": the Bpod 2+ (machine type 4) came out with firmware 23, and there is no firmware "
            "22 for it"
            if (machine_type, firmware) == (4, 22)
            else ""
        )
        known = "; ".join(
            f"type {t}: firmware {' or '.join(str(f) for tt, f in sorted(PROFILES) if tt == t)}"
            for t in sorted({t for t, _ in PROFILES})
        )
        raise ValueError(
            f"no emulator for machine type {machine_type} with firmware {firmware}{why}. "
            f"Emulated: {known}"
        ) from None
