"""The recorder's part in an experiment session (the EXP* messages, docs/sessions.md).

The recorder is the mesh's natural main sync: it owns the data folder, so it is the one that can
count a subject's sessions of the day and propose the next experiment reference. It claims the
role unless the control room says another participant has it (``claim_main_sync: false``).

- ``EXPINFO``: ``main_sync`` and, given a ``subject``, the proposed ``exp_ref``;
- ``EXPINIT``: the session folder exists and holds no recording yet, and the recorder is not busy
  with a recording of its own;
- ``EXPSTART``: records every stream (or ``streams``) into ``<folder>/<exp_ref>.xdf``; the file
  header and every stream header carry the reference;
- ``EXPEND`` / ``EXPINTERRUPT``: the session's recording is closed (footers written) and the reply
  says what it holds; ``EXPCLEANUP`` forgets the session.

Each reply also gives the recorder's clocks at that instant (wall and LSL), which the control room
writes into ``session.json`` as the session's start and end on the recording's own clock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pylsl

from services.recorder.core import Recorder
from shared_utils.errors import CommandError
from shared_utils.paths import data_dir
from shared_utils.protocol.session import session_handlers
from shared_utils.session_layout import next_exp_ref, parse_exp_ref, part_folder, wall_clock


def _clock() -> dict[str, Any]:
    return {"wall": wall_clock(), "lsl": pylsl.local_clock()}


class RecorderSession:
    """Session state of one recorder: which folder and file belong to the current session."""

    def __init__(self, core: Recorder) -> None:
        self.core = core
        self.folder: Path | None = None
        self.file: Path | None = None
        self.result: dict[str, Any] | None = None

    @property
    def root(self) -> Path:
        return self.core.data_dir or data_dir()

    def info(
        self, subject: str | None = None, claim_main_sync: bool | None = None, **_: Any
    ) -> dict[str, Any]:
        """Main sync claim and, for a subject, the next exp_ref (today's sessions + 1)."""
        claim = claim_main_sync is not False
        reply: dict[str, Any] = {"main_sync": claim, "data_dir": str(self.root)}
        if claim and subject is not None:
            try:
                reply["exp_ref"] = next_exp_ref(self.root, subject)
            except ValueError as exc:
                raise CommandError(f"EXPINFO: {exc}") from None
        return reply

    def init(self, exp_ref: str, **_: Any) -> dict[str, Any]:
        """Create the session folder; refuse if it already holds a recording or one is running."""
        busy = self.core.recording_file
        if busy is not None:
            raise CommandError(
                f"EXPINIT {exp_ref}: the recorder is recording {busy} outside the session; "
                "STOP that recording first"
            )
        folder = part_folder(exp_ref, root=self.root)
        held = sorted(p.name for p in folder.glob("*.xdf"))
        if held:
            raise CommandError(
                f"EXPINIT {exp_ref}: {folder} already holds a recording ({', '.join(held)}); "
                "a session folder holds one: start a new session (the next number)"
            )
        self.folder, self.file, self.result = folder, folder / f"{exp_ref}.xdf", None
        return {"folder": str(folder)}

    def start(self, exp_ref: str, streams: list | None = None, **_: Any) -> dict[str, Any]:
        """Record every stream (or those in "streams") into the session folder."""
        assert self.file is not None  # the built-in state machine refuses EXPSTART before INIT
        ref = parse_exp_ref(exp_ref)
        self.core.session = {"exp_ref": exp_ref, "subject": ref.subject}
        try:
            res = self.core.start(file=str(self.file), streams=streams)
        finally:
            self.core.session = None  # only this recording is tagged
        return {"files": [self.file.name], "file": res["file"], "streams": res["streams"],
                "clock": _clock()}  # fmt: skip

    def end(self, **_: Any) -> dict[str, Any]:
        """Close the session's recording (a repeat, or a recording already stopped, is fine)."""
        clock = _clock()
        if self.file is None:
            return {"files": [], "clock": clock}
        if self.result is None:
            if self.core.recording_file == str(self.file):
                self.result = self.core.stop()
            else:  # stopped already (a macro's STOP) or ended by itself (disk full)
                st = self.core.status()
                self.result = st.get("last_recording") or {"note": "stopped before EXPEND"}
        res = self.result
        files = [self.file.name] if self.file.exists() else []
        keep = ("counts", "bytes", "seconds", "gaps", "lost", "error", "note")
        return {"files": files, **{k: res[k] for k in keep if k in res}, "clock": clock}

    def status(self, **_: Any) -> dict[str, Any]:
        """Whether the session's file is still being written."""
        recording = self.file is not None and self.core.recording_file == str(self.file)
        return {"recording": recording}

    def cleanup(self, **_: Any) -> dict[str, Any]:
        self.folder = self.file = self.result = None
        return {}


def session_commands(core: Recorder) -> dict[str, Callable[..., Any]]:
    """The recorder's EXP* handlers (the built-ins of shared_utils.protocol wrap them)."""
    return session_handlers(RecorderSession(core))
