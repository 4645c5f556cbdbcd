"""Decode the body of a ``C`` command into matrices the per-cycle engine can use.

Kept separate from the engine so that the byte layout (which differs between firmware 22/23 and
machine type 4) lives in one place and can be tested against hand-made byte strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.bpod.emulator.hardware import Profile
from shared_utils.checks import unknown_message


class DescriptionError(ValueError):
    """The description bytes are inconsistent with the hardware (the firmware would misbehave)."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DescriptionError(f"description ends early at byte {self.pos} (needed {n} more)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, width: int) -> int:
        return int.from_bytes(self.take(width), "little")

    def uints(self, count: int, width: int) -> list[int]:
        return [self.uint(width) for _ in range(count)]


@dataclass
class Description:
    """A loaded state machine; matrices are dicts mapping column -> target (absent = self)."""

    n_states: int
    n_gt: int
    n_gc: int
    n_cond: int
    tup: list[int]
    inputs: list[dict[int, int]]
    outputs: list[list[tuple[int, int]]]
    gt_start: list[dict[int, int]]
    gt_end: list[dict[int, int]]
    gc: list[dict[int, int]]
    cond: list[dict[int, int]]
    gt_channel: list[int] = field(default_factory=list)
    gt_on: list[int] = field(default_factory=list)
    gt_off: list[int] = field(default_factory=list)
    gt_loop: list[int] = field(default_factory=list)
    gt_send_events: list[int] = field(default_factory=list)
    gc_event: list[int] = field(default_factory=list)
    cond_channel: list[int] = field(default_factory=list)
    cond_value: list[int] = field(default_factory=list)
    gc_reset: dict[int, int] = field(default_factory=dict)  # state -> counter index
    gt_trigger: list[int] = field(default_factory=list)
    gt_cancel: list[int] = field(default_factory=list)
    gt_onset_trigger: list[int] = field(default_factory=list)
    timers: list[int] = field(default_factory=list)
    gt_duration: list[int] = field(default_factory=list)
    gt_onset_delay: list[int] = field(default_factory=list)
    gt_loop_interval: list[int] = field(default_factory=list)
    gc_threshold: list[int] = field(default_factory=list)
    use_back_signal: bool = False


def _pairs_per_state(r: _Reader, n_states: int, width: int = 1) -> list[list[tuple[int, int]]]:
    rows = []
    for _ in range(n_states):
        n = r.uint(width)
        rows.append([(r.uint(width), r.uint(width)) for _ in range(n)])
    return rows


def parse_description(body: bytes, profile: Profile, use_back_signal: bool) -> Description:
    """Decode ``body`` (the bytes after the 5-byte header) for ``profile``."""
    r = _Reader(body)
    n_states, n_gt, n_gc, n_cond = r.take(4)
    limit = min(profile.max_states, 255) - (1 if use_back_signal else 0)
    if not 0 < n_states <= limit:
        raise DescriptionError(f"{n_states} states (1..{limit} allowed)")
    if n_gt > profile.n_global_timers or n_gc > profile.n_global_counters:
        raise DescriptionError("more global timers/counters than the hardware has")
    if n_cond > profile.n_conditions:
        raise DescriptionError("more conditions than the hardware has")
    tup = list(r.take(n_states))
    inputs = [dict(p) for p in _pairs_per_state(r, n_states)]
    outputs = _pairs_per_state(r, n_states, 2 if profile.wide_outputs else 1)
    gt_start = [dict(p) for p in _pairs_per_state(r, n_states)]
    gt_end = [dict(p) for p in _pairs_per_state(r, n_states)]
    gc = [dict(p) for p in _pairs_per_state(r, n_states)]
    cond = [dict(p) for p in _pairs_per_state(r, n_states)]
    d = Description(n_states, n_gt, n_gc, n_cond, tup, inputs, outputs, gt_start, gt_end, gc, cond)
    d.use_back_signal = use_back_signal
    val_w = 2 if profile.wide_outputs else 1
    if n_gt:
        d.gt_channel = list(r.take(n_gt))
        d.gt_on = r.uints(n_gt, val_w)
        d.gt_off = r.uints(n_gt, val_w)
        d.gt_loop = list(r.take(n_gt))
        d.gt_send_events = list(r.take(n_gt))
    if n_gc:
        d.gc_event = list(r.take(n_gc))
    if n_cond:
        d.cond_channel = list(r.take(n_cond))
        d.cond_value = list(r.take(n_cond))
    if profile.fw_major >= 23:
        for _ in range(r.uint(1)):
            state, counter = r.take(2)
            if counter:
                d.gc_reset[state] = counter - 1
    else:
        for state, counter in enumerate(r.take(n_states)):
            if counter:
                d.gc_reset[state] = counter - 1
    if profile.machine_type == 4:  # analog threshold enable/disable: accepted, not emulated
        for _ in range(2):
            r.take(2 * r.uint(1))
    w = profile.mask_bytes
    d.gt_trigger = r.uints(n_states, w)
    d.gt_cancel = r.uints(n_states, w)
    d.gt_onset_trigger = r.uints(n_gt, w)
    d.timers = r.uints(n_states, 4)
    if n_gt:
        d.gt_duration = r.uints(n_gt, 4)
        d.gt_onset_delay = r.uints(n_gt, 4)
        d.gt_loop_interval = r.uints(n_gt, 4)
    if n_gc:
        d.gc_threshold = r.uints(n_gc, 4)
    if profile.fw_major >= 23:
        while r.uint(1) == 1:
            op = r.take(1)
            if op != b"L":
                raise DescriptionError(
                    unknown_message("additional op", op.decode("latin-1"), ["L"])
                )
            r.take(1)
            for _ in range(r.uint(1)):
                r.take(1)
                r.take(r.uint(1))
    if r.pos != len(body):
        raise DescriptionError(f"{len(body) - r.pos} unexpected bytes after the description")
    _validate(d, profile)
    return d


def _validate(d: Description, profile: Profile) -> None:
    valid_targets = set(range(d.n_states + 1)) | ({255} if d.use_back_signal else set())
    targets = list(d.tup)
    for rows in (d.inputs, d.gt_start, d.gt_end, d.gc, d.cond):
        for row in rows:
            targets.extend(row.values())
    bad = sorted(set(targets) - valid_targets)
    if bad:
        raise DescriptionError(f"transition targets out of range: {bad}")
    for row in d.inputs:
        if any(code >= profile.input_matrix_size for code in row):
            raise DescriptionError("input event code beyond the input matrix")
    for row in d.outputs:
        if any(ch >= len(profile.outputs) for ch, _ in row):
            raise DescriptionError("output channel beyond the output list")
