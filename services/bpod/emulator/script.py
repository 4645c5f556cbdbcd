"""Scripted inputs: "Port1In@0.5,Port1Out@0.55" = an animal pokes 0.5 s into every trial.

Names follow the Bpod event names users know (``Port<n>In/Out``, ``BNC<n>High/Low``,
``Wire<n>High/Low``, ``Flex<n>High/Low``, ``SoftCode<n>``); times are seconds after trial start.
The script is resolved to input-channel indices and *raw* levels here, so the engine never deals
with names or with the inverted BNC/wire inputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.bpod.emulator.hardware import Profile
from shared_utils.checks import unknown_message

_EDGE = re.compile(r"^(Port|BNC|Wire|Flex)(\d+)(In|Out|High|Low)$")
_SOFT = re.compile(r"^SoftCode(\d+)$")
_ITEM = re.compile(r"^\s*([A-Za-z0-9_]+)\s*@\s*([0-9.eE+-]+)\s*$")
_KIND = {"Port": "P", "BNC": "B", "Wire": "W", "Flex": "F"}


@dataclass(frozen=True)
class ScriptItem:
    """One input change: ``kind`` is "hw" (raw level on input ``channel``) or "soft" (soft code)."""

    cycle: int
    kind: str
    channel: int
    value: int


def event_names(profile: Profile) -> list[str]:
    """The input events this board has, by input type (``SoftCode<n>`` stands for n >= 1)."""
    names = []
    for prefix, kind in _KIND.items():
        hi, lo = ("In", "Out") if prefix == "Port" else ("High", "Low")
        for n in range(1, profile.inputs.count(kind) + 1):
            names += [f"{prefix}{n}{hi}", f"{prefix}{n}{lo}"]
    return [*names, "SoftCode<n>"]


def resolve_event(profile: Profile, name: str) -> tuple[str, int, int]:
    """Map an event name to (kind, channel, raw value) for the engine."""
    m = _EDGE.match(name)
    if m:
        prefix, number, edge = m.group(1), int(m.group(2)), m.group(3)
        inputs = [i for i, c in enumerate(profile.inputs) if c == _KIND[prefix]]
        if not 1 <= number <= len(inputs):  # e.g. Port9In on a four-port board
            raise ValueError(unknown_message("input event", name, event_names(profile)))
        ch = inputs[number - 1]
        logical = 1 if edge in ("In", "High") else 0
        raw = logical if profile.logic_high(ch) == 1 else 1 - logical
        return "hw", ch, raw
    m = _SOFT.match(name)
    if m:
        code = int(m.group(1))
        if code < 1:
            raise ValueError("soft codes are numbered from 1 (SoftCode1 = code 0 on the wire)")
        return "soft", profile.inputs.index("X"), code - 1
    raise ValueError(unknown_message("input event", name, event_names(profile)))


def parse_script(text: str, profile: Profile) -> list[ScriptItem]:
    """Parse ``"Name@seconds,Name@seconds"`` (commas or semicolons) into sorted items."""
    items = []
    for part in re.split(r"[,;]", text):
        if not part.strip():
            continue
        m = _ITEM.match(part)
        if not m:
            raise ValueError(f"bad script item {part!r}; expected e.g. Port1In@0.5")
        kind, ch, value = resolve_event(profile, m.group(1))
        seconds = float(m.group(2))
        if seconds < 0:
            raise ValueError(f"negative time in {part!r}")
        cycle = max(1, round(seconds * 1e6 / profile.timer_period_us))
        items.append(ScriptItem(cycle, kind, ch, value))
    return sorted(items, key=lambda it: it.cycle)
