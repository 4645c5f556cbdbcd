"""Blocks, feedback and Builder experiments as server tasks: the protocol's rule for background
work (a reply with a task id, the task in ``STATUS.tasks``, ``STOP|{"task": N}`` ends it).

The work itself runs in the PsychoPy child; the task is a light thread in the server process
that follows it through the status the child pushes (every 0.2 s and before every reply) and
ends when the activity ends (done, stopped, replaced by another stimulus, child gone). Stopping
the task asks the child to stop that activity, and only that one.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from services.presenter.link import ChildLink
from shared_utils.errors import CommandError
from shared_utils.protocol.tasks import TaskManager

POLL_S = 0.05
RUNNING = {
    "block": ("running", "paused"),
    "experiment": ("prepared", "running", "paused", "stopping"),
}


class ActivityTasks:
    """Starts one tracking task per block, feedback or experiment."""

    def __init__(self, link: ChildLink, tasks: TaskManager | None) -> None:
        self.link = link
        self.tasks = tasks

    def running(self, kind: str, ident: int) -> bool:
        """True while the child reports activity ``kind`` number ``ident`` as under way."""
        if not self.link.alive:
            return False
        info = self.link.status.get(kind) or {}
        if info.get("id") != ident:
            return False
        return kind == "feedback" or info.get("state") in RUNNING[kind]

    def track(self, kind: str, ident: int) -> int | None:
        """Start the task following activity ``kind``/``ident``; its id (None without tasks)."""
        if self.tasks is None:
            return None

        def follow(stop_event: threading.Event) -> None:
            while not stop_event.wait(POLL_S):
                if not self.running(kind, ident):
                    return
            if self.running(kind, ident):  # STOP|{"task": N}: end this activity only
                with contextlib.suppress(CommandError):
                    self.link.request("stop", {"target": [kind, ident]}, timeout=5.0)

        return self.tasks.start_thread(follow, name=f"presenter-{kind}-{ident}").id

    def attach(self, reply: dict[str, Any], kind: str, key: str) -> dict[str, Any]:
        """``reply`` plus ``"task"``: the task following the activity whose id is ``reply[key]``."""
        ident = reply.get(key)
        task = self.track(kind, ident) if isinstance(ident, int) else None
        return {**reply, "task": task}
