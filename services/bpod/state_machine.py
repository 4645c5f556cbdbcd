"""State machines described with names, built from Python or from JSON.

Everything here is hardware-independent: names are checked against a real device only when the
machine is compiled (see :mod:`services.bpod.compiler`), so a description can be written, stored
and sent to any box. Indices of timers, counters and conditions are 1-based like the names
(``GlobalTimer1_End``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from shared_utils.checks import short, unknown_message

MAX_STATES = 256  # the largest device (exit and >back take numbers too: see the compiler)
MAX_NAME = 200  # characters in a state or machine name (they travel in every LSL marker)


class StateMachineError(ValueError):
    """The description is malformed or uses names the hardware does not have."""


@dataclass
class State:
    name: str
    timer: float = 0.0
    transitions: dict[str, str] = field(default_factory=dict)
    actions: dict[str, Any] = field(default_factory=dict)


@dataclass
class GlobalTimer:
    index: int
    duration: float
    onset_delay: float = 0.0
    channel: str | None = None
    on_value: int = 1
    off_value: int = 0
    loop: int = 0
    loop_interval: float = 0.0
    send_events: bool = True
    onset_triggers: list[int] = field(default_factory=list)


@dataclass
class GlobalCounter:
    index: int
    event: str
    threshold: int


@dataclass
class Condition:
    index: int
    channel: str
    value: int


_SECTIONS = {
    "global_timers": GlobalTimer,
    "global_counters": GlobalCounter,
    "conditions": Condition,
}


class StateMachine:
    """Ordered states (the first is the start state) plus timers, counters and conditions."""

    def __init__(self, name: str = "state_machine") -> None:
        self.name = name
        self.states: list[State] = []
        self.global_timers: dict[int, GlobalTimer] = {}
        self.global_counters: dict[int, GlobalCounter] = {}
        self.conditions: dict[int, Condition] = {}

    def add_state(
        self,
        name: str,
        timer: float = 0.0,
        transitions: dict[str, str] | None = None,
        actions: dict[str, Any] | None = None,
    ) -> StateMachine:
        """Append a state; targets may name states added later, ``exit`` or ``>back``."""
        if not isinstance(name, str) or not name:
            raise StateMachineError("every state needs a non-empty string name")
        if name in {s.name for s in self.states}:
            raise StateMachineError(f"state {name!r} is defined twice")
        if name in ("exit", ">exit", ">back"):
            raise StateMachineError(f"{name!r} is reserved for transitions and cannot name a state")
        if len(name) > MAX_NAME:
            raise StateMachineError(f"state name {short(name)} is longer than {MAX_NAME}")
        if isinstance(timer, bool) or not isinstance(timer, int | float) or timer < 0:
            raise StateMachineError(f"state {name!r}: timer must be a number >= 0 seconds")
        for ev, tgt in (transitions or {}).items():
            if not isinstance(tgt, str):
                raise StateMachineError(
                    f"state {name!r}: transition {ev!r} must lead to a state name, exit or >back, "
                    f"got {short(tgt)}"
                )
        self.states.append(State(name, float(timer), dict(transitions or {}), dict(actions or {})))
        return self

    def set_global_timer(self, index: int, duration: float, **kwargs: Any) -> StateMachine:
        """Define global timer ``index`` (1-based); kwargs as in :class:`GlobalTimer`."""
        self.global_timers[index] = _make(
            GlobalTimer, {"index": index, "duration": duration, **kwargs}
        )
        return self

    def set_global_counter(self, index: int, event: str, threshold: int) -> StateMachine:
        """Count ``event``; ``GlobalCounter<index>_End`` fires once ``threshold`` is reached."""
        self.global_counters[index] = _make(
            GlobalCounter, {"index": index, "event": event, "threshold": threshold}
        )
        return self

    def set_condition(self, index: int, channel: str, value: int) -> StateMachine:
        """``Condition<index>`` is true while input ``channel`` (or ``GlobalTimer<n>``) == value."""
        self.conditions[index] = _make(
            Condition, {"index": index, "channel": channel, "value": value}
        )
        return self

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "states": [asdict(s) for s in self.states],
            "global_timers": [asdict(t) for t in self.global_timers.values()],
            "global_counters": [asdict(c) for c in self.global_counters.values()],
            "conditions": [asdict(c) for c in self.conditions.values()],
        }

    @classmethod
    def from_dict(cls, data: dict) -> StateMachine:
        """Build from the JSON description; every problem is reported with what would be valid."""
        if not isinstance(data, dict):
            raise StateMachineError("the state machine must be a JSON object with a 'states' list")
        _check_keys("the state machine", data, ["name", "states", *_SECTIONS])
        states = data.get("states")
        if not isinstance(states, list) or not states:
            raise StateMachineError(
                "'states' must be a non-empty list (the first is the start state)"
            )
        if len(states) > MAX_STATES:
            raise StateMachineError(f"{len(states)} states; a Bpod holds at most {MAX_STATES}")
        name = data.get("name", "state_machine")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise StateMachineError(f"'name' must be a string of 1..{MAX_NAME} characters")
        sm = cls(name)
        for i, st in enumerate(states):
            if not isinstance(st, dict):
                raise StateMachineError(f"states[{i}] must be an object")
            _check_keys(f"states[{i}]", st, ["name", "timer", "transitions", "actions"])
            for key in ("transitions", "actions"):
                if not isinstance(st.get(key, {}), dict):
                    raise StateMachineError(f"states[{i}].{key} must be an object of name: value")
            sm.add_state(
                st.get("name", ""), st.get("timer", 0.0), st.get("transitions"), st.get("actions")
            )
        for key, klass in _SECTIONS.items():
            items = data.get(key, [])
            if not isinstance(items, list):
                raise StateMachineError(f"'{key}' must be a list of objects")
            target = getattr(sm, key)
            for pos, item in enumerate(items):
                if not isinstance(item, dict):
                    raise StateMachineError(f"{key}[{pos}] must be an object")
                obj = _make(klass, {"index": pos + 1, **item})
                target[obj.index] = obj
        return sm


def _make(klass: type, kwargs: dict) -> Any:
    _check_keys(klass.__name__, kwargs, list(klass.__dataclass_fields__))
    try:
        obj = klass(**kwargs)
    except TypeError as exc:
        raise StateMachineError(f"{klass.__name__}: {exc}") from None
    if isinstance(obj.index, bool) or not isinstance(obj.index, int) or not 1 <= obj.index <= 32:
        raise StateMachineError(
            f"{klass.__name__} index must be an integer 1..32, got {short(obj.index)}"
        )
    for key in ("channel", "event"):  # names looked up in the device's tables
        value = getattr(obj, key, None)
        if value is not None and not isinstance(value, str):
            raise StateMachineError(
                f"{klass.__name__} {obj.index}: {key} must be a name, got {short(value)}"
            )
    return obj


def _check_keys(where: str, given: dict, valid: list[str]) -> None:
    """Refuse keys a description does not know, naming the first with the closest valid one."""
    bad = [k for k in given if k not in valid]
    if bad:
        more = f" (also unknown: {', '.join(map(repr, bad[1:]))})" if len(bad) > 1 else ""
        raise StateMachineError(f"{where}: {unknown_message('key', bad[0], valid)}{more}")
