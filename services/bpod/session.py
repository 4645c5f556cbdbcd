"""The Bpod's part in an experiment session (the EXP* messages, docs/sessions.md).

Between ``EXPSTART`` and ``EXPEND`` every finished trial goes to
``<session folder>/bpod/<marker stream>_trials.jsonl`` (one line per trial, the format the export
reads), and every state machine that runs is noted: its name, when it was loaded and the SHA-256
of its canonical JSON, so a session says exactly which task ran even if the config changes later.
The definitions themselves are kept beside the trials in ``bpod/state_machines.json``.

``EXPEND`` / ``EXPINTERRUPT`` end a run still in progress (the session is over; nothing keeps
driving valves after it), and the trials file goes back to the module's own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.bpod.core import BpodService
from services.bpod.state_machine import StateMachine
from shared_utils.errors import CommandError
from shared_utils.protocol.session import session_handlers
from shared_utils.session_layout import part_folder, wall_clock, write_json_atomic


def state_machine_hash(sm: StateMachine) -> str:
    """SHA-256 of the state machine's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(sm.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class BpodSession:
    """Session state of one Bpod module: its folder, trials file and the state machines run."""

    def __init__(self, core: BpodService) -> None:
        self.core = core
        self.folder: Path | None = None
        self.trials_file: Path | None = None
        self._own_trials_file: Path | None = None
        self.active = False
        self.machines: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None
        core.on_load = self._loaded

    def _loaded(self, sm: StateMachine, when: str | None = None) -> None:
        if self.active:
            self.machines.append(
                {"name": sm.name, "sha256": state_machine_hash(sm), "loaded": when or wall_clock(),
                 "definition": sm.to_dict()}
            )  # fmt: skip

    def init(self, exp_ref: str, **_: Any) -> dict[str, Any]:
        """Prepare the session's bpod folder; refused while a run of trials is in progress."""
        if self.core.running:
            raise CommandError(
                f"EXPINIT {exp_ref}: a run of trials is in progress (task {self.core.task_id}); "
                "STOP it first, so its trials do not straddle two sessions"
            )
        self.folder = part_folder(exp_ref, "bpod")
        self.trials_file = self.folder / f"{self.core.trial_log.marker_stream}_trials.jsonl"
        self.machines, self.summary = [], None
        return {"folder": str(self.folder)}

    def start(self, exp_ref: str, **_: Any) -> dict[str, Any]:
        """From now on trials go to the session folder; the loaded state machine is noted."""
        assert self.trials_file is not None  # the built-in state machine refuses START before INIT
        log = self.core.trial_log
        self._own_trials_file, log.trials_file = log.trials_file, self.trials_file
        self.active = True
        if self.core.sm is not None:
            self._loaded(self.core.sm, when="before the session")
        return {"trials_file": f"bpod/{self.trials_file.name}"}

    def end(self, **_: Any) -> dict[str, Any]:
        """Stop a run in progress, close the session's trial file, list the state machines."""
        if self.summary is not None or self.trials_file is None:
            return self.summary or {"files": []}
        stopped = self.core.stop() if self.core.running else None
        if self.active and self._own_trials_file is not None:
            self.core.trial_log.trials_file = self._own_trials_file
        self.active = False
        files, trials = [], 0
        if self.trials_file.exists():
            files.append(f"bpod/{self.trials_file.name}")
            with self.trials_file.open("rb") as f:
                trials = sum(1 for line in f if line.strip())
        if self.machines:
            assert self.folder is not None
            write_json_atomic(self.folder / "state_machines.json", self.machines)
            files.append("bpod/state_machines.json")
        self.summary = {
            "files": files,
            "trials": trials,
            "stopped_run": stopped is not None,
            "state_machines": [
                {k: m[k] for k in ("name", "sha256", "loaded")} for m in self.machines
            ],
        }
        return self.summary

    def status(self, **_: Any) -> dict[str, Any]:
        """Whether trials are running now."""
        return {"running_trials": self.core.running, "trial": self.core.trial_no}

    def cleanup(self, **_: Any) -> dict[str, Any]:
        self.folder = self.trials_file = self.summary = None
        self.machines = []
        return {}


def session_commands(core: BpodService) -> dict[str, Callable[..., Any]]:
    """The Bpod's EXP* handlers (the built-ins of shared_utils.protocol wrap them)."""
    return session_handlers(BpodSession(core))
