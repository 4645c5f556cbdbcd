"""Where a run's data goes while it happens: the LSL marker stream and the JSON-lines trials file.

Markers (``trial_start:<n>``, ``state:<name>``, ``event:<name>``, ``softcode:<code>``,
``trial_end:<n>``, ``trial_error:<n>``) are stamped with the device's own event times mapped onto
the LSL clock, so a recorder puts them where they happened, not where the host read them. Each
finished trial becomes one JSON line appended to the trials file, so a crash loses at most the
trial that was running.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pylsl


def default_trials_file(data_dir: str | Path = "data") -> Path:
    """``<data_dir>/bpod/trials_<date-time>_<pid>.jsonl``: one file per module run, in the
    mesh's data folder (``--data-dir``) like every other module's output."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(data_dir) / "bpod" / f"trials_{stamp}_{os.getpid()}.jsonl"


class TrialLog:
    """The marker outlet (created at once, so recorders see it before the first trial) and the
    trials file (created with the first finished trial)."""

    def __init__(self, marker_stream: str = "bpod_events", trials_file: Path | None = None) -> None:
        self.marker_stream = marker_stream
        self.trials_file = Path(trials_file) if trials_file else default_trials_file()
        info = pylsl.StreamInfo(
            marker_stream,
            "Markers",
            1,
            pylsl.IRREGULAR_RATE,
            pylsl.cf_string,
            f"bpod-{marker_stream}-{os.getpid()}",
        )
        self.outlet = pylsl.StreamOutlet(info)

    def marker(self, text: str, ts: float | None = None) -> None:
        """Push one marker, stamped ``ts`` (LSL clock) or now."""
        self.outlet.push_sample([text], ts if ts is not None else pylsl.local_clock())

    def write_trial(self, trial: dict) -> None:
        """Append one finished trial as a JSON line."""
        self.trials_file.parent.mkdir(parents=True, exist_ok=True)
        with self.trials_file.open("a") as f:
            f.write(json.dumps(trial) + "\n")
