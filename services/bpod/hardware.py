"""What the driver learns from the device (``F f v H``) and the channel/event names derived from it.

Names follow the MATLAB Bpod conventions users know (``Port1In``, ``BNC1High``, ``SoftCode1``,
``GlobalTimer1_End``, ``Tup``; outputs ``Valve1``, ``PWM1``, ``BNC1``, ``SoftCode``). They exist on
the host only: the wire carries indices, so every table here is computed from the device's own
description rather than hard-coded per model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SERIAL_TYPES = "UXZ"
DIGITAL_TYPES = "FBWP"
PHYSICAL_OUTPUTS = "BWVPD"  # outputs the firmware resets to 0 and 'O' can drive
VIRTUAL_OUTPUTS = ("GlobalTimerTrig", "GlobalTimerCancel", "GlobalCounterReset")
MODEL_NAMES = {1: "Bpod r0.5", 2: "Bpod r0.7-1.0", 3: "Bpod 2.x", 4: "Bpod 2+"}
_EDGE_SUFFIXES = {
    "F": ("High", "Low"),
    "B": ("High", "Low"),
    "W": ("High", "Low"),
    "P": ("In", "Out"),
}
_INPUT_NAMES = {"F": "Flex", "B": "BNC", "W": "Wire", "P": "Port"}
_OUTPUT_NAMES = {"B": "BNC", "W": "Wire", "P": "PWM", "V": "Valve", "F": "Flex", "D": "Digital"}
# Largest value an output channel takes, by kind: a PWM level, a serial message or soft code
# byte; valves, BNC, wire, digital and Flex DO are on/off (a valve given 255 stays closed on
# Bpod 0.5-1.0, so values are held to what means the same on every model).
_OUTPUT_MAX = {"P": 255, "U": 255, "X": 255, "Z": 255}


def output_limit(kind: str) -> int:
    """The largest value output channel ``kind`` accepts (OVERRIDE and state actions alike)."""
    return _OUTPUT_MAX.get(kind, 1)


@dataclass
class HardwareInfo:
    """The device's self-description plus the serial event allocation the driver sent."""

    machine_type: int
    fw_major: int
    fw_minor: int
    pcb_revision: int | None
    max_states: int
    timer_period_us: int
    max_serial_events: int
    serial_message_max_bytes: int
    n_global_timers: int
    n_global_counters: int
    n_conditions: int
    inputs: str
    outputs: str
    alloc: list[int] = field(default_factory=list)

    # ---------------------------------------------------------------- layout
    @property
    def n_serial_channels(self) -> int:
        return sum(c in SERIAL_TYPES for c in self.inputs)

    @property
    def input_matrix_size(self) -> int:
        return self.max_serial_events + 2 * (len(self.inputs) - self.n_serial_channels)

    @property
    def tup_code(self) -> int:
        return (
            self.input_matrix_size
            + 2 * self.n_global_timers
            + self.n_global_counters
            + self.n_conditions
        )

    @property
    def mask_bytes(self) -> int:
        return 1 if self.n_global_timers <= 8 else 2 if self.n_global_timers <= 16 else 4

    @property
    def wide_outputs(self) -> bool:
        return self.machine_type == 4

    @property
    def model(self) -> str:
        return MODEL_NAMES.get(self.machine_type, f"machine type {self.machine_type}")

    def default_alloc(self) -> list[int]:
        """Events per serial channel, split evenly like the MATLAB host does."""
        n = self.n_serial_channels
        return [self.max_serial_events // n] * n if n else []

    # ---------------------------------------------------------------- names
    def input_channel_names(self) -> list[str]:
        """Names of the input channels by index (``Port1``, ``BNC1``, ``Serial1``, ``USB``...)."""
        names, counts = [], {}
        for c in self.inputs:
            counts[c] = counts.get(c, 0) + 1
            n = counts[c]
            names.append(
                {"U": f"Serial{n}", "X": "USB", "Z": "APP_USB"}.get(c)
                or f"{_INPUT_NAMES.get(c, c)}{n}"
            )
        return names

    def output_channel_names(self) -> list[str]:
        """Names of the output channels by index (``Valve1``, ``PWM1``, ``BNC1``, ``SoftCode``...)."""
        names, counts = [], {}
        for c in self.outputs:
            counts[c] = counts.get(c, 0) + 1
            n = counts[c]
            if c == "U":
                names.append(f"Serial{n}")
            elif c == "X":
                names.append("SoftCode")
            elif c == "Z":
                names.append("APP_SoftCode")
            elif c == "F":
                names.append(f"Flex{n}DO")
            else:
                names.append(f"{_OUTPUT_NAMES.get(c, c)}{n}")
        return names

    def event_names(self) -> list[str | None]:
        """Event name by event code (None for unallocated serial slots)."""
        names: list[str | None] = [None] * self.max_serial_events
        alloc = self.alloc or [0] * self.n_serial_channels
        base, n_uart = 0, 0
        for c, a in zip((c for c in self.inputs if c in SERIAL_TYPES), alloc, strict=True):
            for k in range(a):
                if base + k >= self.max_serial_events:
                    break
                if c == "U":
                    names[base + k] = f"Serial{n_uart + 1}_{k + 1}"
                elif c == "X":
                    names[base + k] = f"SoftCode{k + 1}"
                else:
                    names[base + k] = f"APP_SoftCode{k}"
            n_uart += c == "U"
            base += a
        names += list(self.input_edges())
        names += [f"GlobalTimer{t + 1}_Start" for t in range(self.n_global_timers)]
        names += [f"GlobalTimer{t + 1}_End" for t in range(self.n_global_timers)]
        names += [f"GlobalCounter{c + 1}_End" for c in range(self.n_global_counters)]
        names += [f"Condition{k + 1}" for k in range(self.n_conditions)]
        names.append("Tup")
        return names

    def input_edges(self) -> dict[str, tuple[int, int]]:
        """Edge event name -> (input channel index, logical level): ``Port1In`` -> (k, 1)."""
        names = self.input_channel_names()
        edges: dict[str, tuple[int, int]] = {}
        for i, c in enumerate(self.inputs):
            if c in DIGITAL_TYPES:
                hi, lo = _EDGE_SUFFIXES[c]
                edges[names[i] + hi] = (i, 1)
                edges[names[i] + lo] = (i, 0)
        return edges

    def event_codes(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.event_names()) if n is not None}

    def logic_high(self, input_index: int) -> int:
        """Raw level meaning logical high (BNC and wire inputs are inverted on types 2-4)."""
        return 0 if self.inputs[input_index] in "BW" and self.machine_type >= 2 else 1

    def to_dict(self) -> dict:
        """JSON-ready summary used by ``INFO``."""
        return {
            "model": self.model,
            "machine_type": self.machine_type,
            "firmware": f"{self.fw_major}.{self.fw_minor}",
            "pcb_revision": self.pcb_revision,
            "max_states": self.max_states,
            "cycle_us": self.timer_period_us,
            "global_timers": self.n_global_timers,
            "global_counters": self.n_global_counters,
            "conditions": self.n_conditions,
            "inputs": self.input_channel_names(),
            "outputs": self.output_channel_names() + list(VIRTUAL_OUTPUTS),
            "events": compress_names([n for n in self.event_names() if n]),
        }


def parse_hardware_description(data: bytes, fw_major: int) -> tuple[dict, int]:
    """Decode an ``H`` reply; returns (fields, bytes consumed) or raises ValueError if short."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise ValueError("short hardware description")
        pos += n
        return data[pos - n : pos]

    f: dict = {}
    f["max_states"] = int.from_bytes(take(2), "little")
    f["timer_period_us"] = int.from_bytes(take(2), "little")
    f["max_serial_events"] = take(1)[0]
    f["serial_message_max_bytes"] = take(1)[0] if fw_major >= 23 else 3
    f["n_global_timers"], f["n_global_counters"], f["n_conditions"] = take(3)
    f["inputs"] = take(take(1)[0]).decode("ascii")
    f["outputs"] = take(take(1)[0]).decode("ascii")
    return f, pos


def compress_names(names: list[str]) -> list[str]:
    """Shorten numbered families for messages: Serial1_1..Serial1_15 instead of 15 names."""
    out: list[str] = []
    i = 0
    while i < len(names):
        m = re.match(r"^(.*?)(\d+)(\D*)$", names[i])
        j = i
        if m:
            stem, start, tail = m.group(1), int(m.group(2)), m.group(3)
            while j + 1 < len(names) and names[j + 1] == f"{stem}{start + (j + 1 - i)}{tail}":
                j += 1
        if j - i < 2:
            out.extend(names[i : j + 1])
        else:
            out.append(f"{names[i]}..{names[j]}")
        i = j + 1
    return out
