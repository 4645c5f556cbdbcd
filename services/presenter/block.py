"""RUN_BLOCK trial schedule: a cued trial block as a plain state machine (no PsychoPy).

Each trial is ``cue -> stimulus -> iti``. The frame loop asks :meth:`Block.advance` once per
frame with the current time; it answers which phase (if any) starts now, so the loop can change
the display and emit the onset marker on that flip. Time spent paused is not counted.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Any

from services.presenter import limits
from shared_utils.checks import check_number, check_string, short, unknown_message
from shared_utils.errors import CommandError

PHASES = ("cue", "stimulus", "iti")


@dataclass
class BlockSpec:
    """Validated RUN_BLOCK arguments."""

    n_trials: int = 10
    cues: list[str] = field(default_factory=lambda: ["left", "right"])
    cue_s: float = 1.0
    stimulus_s: float = 3.0
    iti_s: float = 2.0
    iti_jitter_s: float = 0.0
    cue_text: str = "{cue}"
    stimulus_text: str = "+"
    order: str = "random"
    seed: int | None = None

    def validate(self) -> None:
        """Raise :class:`CommandError` with a readable message for impossible or oversized blocks
        (ranges: :mod:`services.presenter.limits`)."""
        check_number("n_trials", self.n_trials, *limits.N_TRIALS, integer=True)
        if not isinstance(self.cues, list) or not 1 <= len(self.cues) <= limits.N_CUES:
            raise CommandError(f"cues must be a non-empty list of at most {limits.N_CUES} strings")
        for i, c in enumerate(self.cues):
            check_string(f"cues[{i}]", c, limits.CUE_CHARS)
        for name in ("cue_s", "stimulus_s", "iti_s", "iti_jitter_s"):
            check_number(name, getattr(self, name), *limits.PHASE_S)
        if self.order not in ("random", "sequential"):
            raise CommandError(unknown_message("order", self.order, ["random", "sequential"]))
        if self.seed is not None:
            check_number("seed", self.seed, integer=True)
        for name in ("cue_text", "stimulus_text"):
            _check_template(
                name, check_string(name, getattr(self, name), limits.TEXT_CHARS, min_len=0)
            )

    def trial_cues(self) -> list[str]:
        """The cue of every trial: balanced over ``cues``, shuffled when ``order`` is random."""
        seq = [self.cues[i % len(self.cues)] for i in range(self.n_trials)]
        if self.order == "random":
            random.Random(self.seed).shuffle(seq)
        return seq

    def durations(self) -> list[tuple[str, float]]:
        """(phase, seconds) for every phase of the block, jitter drawn once up front."""
        rng = random.Random(None if self.seed is None else self.seed + 1)
        out = []
        for _ in range(self.n_trials):
            jitter = rng.uniform(0.0, self.iti_jitter_s) if self.iti_jitter_s else 0.0
            out += [
                ("cue", self.cue_s),
                ("stimulus", self.stimulus_s),
                ("iti", self.iti_s + jitter),
            ]
        return out


def _check_template(name: str, tmpl: str) -> None:
    """Only ``{cue}`` may be filled in: no other field, no format spec (``{cue:>99999999}`` would
    build a huge string), no conversion."""
    try:
        fields = [
            (f, spec, conv) for _, f, spec, conv in string.Formatter().parse(tmpl) if f is not None
        ]
    except ValueError as exc:
        raise CommandError(f"bad {name} template {short(tmpl)}: {exc}; use {{cue}} only") from None
    for field_name, spec, conv in fields:
        if field_name != "cue" or spec or conv:
            raise CommandError(
                f"bad {name} template {short(tmpl)}: use {{cue}} only (not {{{field_name}...}})"
            )


class Block:
    """Runs a :class:`BlockSpec` against a clock supplied by the caller."""

    def __init__(self, block_id: int, spec: BlockSpec) -> None:
        self.id = block_id
        self.spec = spec
        self.cues = spec.trial_cues()
        self._phases = spec.durations()
        self._index = -1  # index into _phases of the phase on screen
        self._phase_end = 0.0
        self._paused_at: float | None = None
        self.state = "running"  # running | paused | done | stopped

    @property
    def expected_s(self) -> float:
        return sum(d for _, d in self._phases)

    def advance(self, now: float) -> tuple[str, str, str] | None:
        """Return ``(phase, cue, text)`` when a new phase starts at ``now``; ``("end", "", "")``
        once after the last phase; ``None`` otherwise."""
        if self.state != "running":
            return None
        if self._index >= 0 and now < self._phase_end:
            return None
        # Carry the deadline forward from the planned end so short frame delays do not add up.
        start = now if self._index < 0 else max(self._phase_end, now - 0.5)
        self._index += 1
        if self._index >= len(self._phases):
            self.state = "done"
            return ("end", "", "")
        phase, dur = self._phases[self._index]
        self._phase_end = start + dur
        cue = self.cues[self._index // 3]
        text = {"cue": self.spec.cue_text, "stimulus": self.spec.stimulus_text}.get(phase, "")
        return (phase, cue, text.format(cue=cue))

    def pause(self, now: float) -> None:
        if self.state == "running":
            self.state, self._paused_at = "paused", now

    def resume(self, now: float) -> None:
        if self.state == "paused" and self._paused_at is not None:
            self._phase_end += now - self._paused_at
            self.state, self._paused_at = "running", None

    def stop(self) -> None:
        if self.state in ("running", "paused"):
            self.state = "stopped"

    def progress(self) -> dict[str, Any]:
        idx = max(self._index, 0)
        return {
            "id": self.id,
            "state": self.state,
            "trial": min(idx // 3 + 1, self.spec.n_trials) if self._index >= 0 else 0,
            "n_trials": self.spec.n_trials,
            "phase": PHASES[idx % 3] if 0 <= self._index < len(self._phases) else None,
            "cue": self.cues[idx // 3] if 0 <= self._index < len(self._phases) else None,
        }
