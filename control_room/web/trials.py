"""Bpod trials as they finish, read from the Bpod's marker stream while a page is open.

The markers (``trial_start:N``, ``state:X``, ``event:Y``, ``trial_end:N``; docs/bpod.md) are
parsed by the session report's own :func:`~control_room.report.analysis.trials_from_markers`, so
the dashboard and the report can never disagree about what a trial was.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from control_room.report.analysis import Trial, trials_from_markers
from control_room.report.session import DEFAULT_NAMES

KEEP_TRIALS = 100


def trial_dict(t: Trial) -> dict[str, Any]:
    """A finished trial for the page: states with times (s since trial start), outcome."""
    states = [s[0] for s in t.states]
    if t.error:
        outcome = "error"
    elif len(states) > 1:
        outcome = states[1]  # the branch the first state took (e.g. Reward vs ITI)
    else:
        outcome = states[0] if states else "-"
    return {
        "number": t.number,
        "duration_s": None if t.end is None else round(t.end, 3),
        "states": [[n, round(a, 3), round(b, 3)] for n, a, b in t.states],
        "events": [[n, round(a, 3)] for n, a in t.events],
        "error": t.error,
        "outcome": outcome,
    }


def _same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """The same trial in the same state (its age always moves on)."""
    if a is None or b is None:
        return a is b
    return (a["number"], a["state"]) == (b["number"], b["state"])


class TrialFeed:
    """Follows one marker stream (``bpod_events`` by default) through an LSL inlet."""

    def __init__(self, stream: str = DEFAULT_NAMES["bpod"]) -> None:
        self.stream = stream
        self.done: deque[dict[str, Any]] = deque(maxlen=KEEP_TRIALS)
        self.running: dict[str, Any] | None = None
        self._inlet: Any = None
        self._uid: str | None = None
        self._pending: list[tuple[float, str]] = []  # markers of the trial not finished yet

    def poll(self, infos: dict[str, Any]) -> dict[str, Any] | None:
        """Read what arrived; returns ``{"finished": [...], "running": ...}`` when it changed.

        ``infos``: visible streams by uid (the stream table's resolver)."""
        import pylsl

        info = next((i for i in infos.values() if i.name() == self.stream), None)
        if info is None:
            return None
        if self._inlet is None or info.uid() != self._uid:
            self.close()
            self._inlet = pylsl.StreamInlet(info, max_buflen=30, recover=False)
            self._uid = info.uid()
            self._inlet.open_stream(timeout=1.0)
        try:
            samples, stamps = self._inlet.pull_chunk(timeout=0.0)
        except pylsl.LostError:
            self.close()
            return None
        if not samples:
            return None
        before = self.running
        self._pending.extend((float(t), str(s[0])) for s, t in zip(samples, stamps, strict=True))
        finished = self._finish()
        self.running = self._running()
        if not finished and _same(self.running, before):
            return None
        return {"finished": finished, "running": self.running}

    def _finish(self) -> list[dict[str, Any]]:
        """Trials whose end marker arrived; their markers leave the pending list."""
        last_end = max(
            (
                i
                for i, (_, m) in enumerate(self._pending)
                if m.startswith(("trial_end:", "trial_error:"))
            ),
            default=None,
        )
        if last_end is None:
            return []
        closed, self._pending = self._pending[: last_end + 1], self._pending[last_end + 1 :]
        ts = [t for t, _ in closed]
        trials = trials_from_markers(ts, [m for _, m in closed], None)
        out = [trial_dict(t) for t in trials if t.end is not None]
        self.done.extend(out)
        return out

    def _running(self) -> dict[str, Any] | None:
        start = next(
            (i for i in range(len(self._pending) - 1, -1, -1)
             if self._pending[i][1].startswith("trial_start:")),
            None,
        )  # fmt: skip
        if start is None:
            return None
        t0, first = self._pending[start]
        state = next(
            (m[6:] for _, m in reversed(self._pending[start:]) if m.startswith("state:")), ""
        )
        import pylsl

        num = first.partition(":")[2]
        return {
            "number": int(num) if num.isdigit() else num,
            "state": state,
            "age_s": round(pylsl.local_clock() - t0, 3),  # the page counts on from here
        }

    @property
    def following(self) -> bool:
        """An inlet is open on the stream."""
        return self._inlet is not None

    def snapshot(self) -> dict[str, Any]:
        return {"stream": self.stream, "trials": list(self.done), "running": self.running}

    def close(self) -> None:
        if self._inlet is not None:
            try:
                self._inlet.close_stream()
            except Exception:
                pass
        self._inlet = None
        self._uid = None
