"""Background work a module starts: threads, subprocesses and calls on the main thread.

Every task gets an id so a client can stop one of several (``STOP|{"task": 3}``). Stopping always
escalates and always ends: set the task's event, join with a timeout; for subprocesses SIGTERM then
SIGKILL of the child's whole process group, so a stuck task never hangs the server.
"""

from __future__ import annotations

import itertools
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared_utils.logging import get_logger
from shared_utils.platform.processes import (
    end_group,
    leads_own_group,
    new_group_kwargs,
    signal_group,
)

log = get_logger("shared_utils.protocol.tasks")


@dataclass
class Task:
    """One unit of background work started by a command."""

    id: int
    name: str
    kind: str  # "thread" | "process" | "main"
    stop_event: threading.Event
    thread: threading.Thread | None = None
    process: subprocess.Popen | None = None
    started: float = field(default_factory=time.time)
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    own_group: bool = False  # a process that leads its own process group (killed as a group)

    @property
    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        if self.thread is not None:
            return self.thread.is_alive()
        return not self.done.is_set()

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "alive": self.alive,
            "running_s": round(time.time() - self.started, 3),
        }
        if self.process is not None:
            d["pid"] = self.process.pid
            d["returncode"] = self.process.poll()
        if self.error:
            d["error"] = self.error
        return d


class TaskManager:
    """Starts, tracks and stops a module's tasks."""

    def __init__(self, join_timeout_s: float = 2.0, term_timeout_s: float = 2.0) -> None:
        self._tasks: dict[int, Task] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._main_queue: queue.Queue[tuple[Task, Callable[..., Any], tuple, dict] | None] = (
            queue.Queue()
        )
        self.join_timeout_s = join_timeout_s
        self.term_timeout_s = term_timeout_s

    # -- starting ---------------------------------------------------------------------------
    def _register(self, task: Task) -> Task:
        with self._lock:
            self._tasks[task.id] = task
        log.info("task started", task=task.id, name=task.name, kind=task.kind)
        return task

    def _new(self, name: str, kind: str, stop_event: threading.Event | None = None) -> Task:
        return Task(
            id=next(self._ids), name=name, kind=kind, stop_event=stop_event or threading.Event()
        )

    def start_thread(
        self, fn: Callable[..., Any], name: str = "task", *args: Any, **kwargs: Any
    ) -> Task:
        """Run ``fn(stop_event, *args, **kwargs)`` in a daemon thread; exceptions are logged."""
        task = self._new(name, "thread")

        def runner() -> None:
            try:
                fn(task.stop_event, *args, **kwargs)
            except Exception as exc:
                task.error = f"{type(exc).__name__}: {exc}"
                log.exception("task failed", task=task.id, name=name)
            finally:
                task.done.set()

        task.thread = threading.Thread(target=runner, name=f"task-{task.id}-{name}", daemon=True)
        self._register(task)
        task.thread.start()
        return task

    def start_job(
        self,
        name: str,
        stop: Callable[[], Any],
        finished: Callable[[], bool],
        poll_s: float = 0.1,
    ) -> Task:
        """Track work a module runs with its own threads (a recording, a stream, a live loop).

        The task stays alive until ``finished()`` is true; ``STOP|{"task": id}`` (or a bare
        STOP) calls ``stop()``, which ends the work the module's own way (footers written,
        outlets dropped). A small watcher thread checks ``finished`` every ``poll_s``.
        """

        def watch(stop_event: threading.Event) -> None:
            while not stop_event.wait(poll_s):
                if finished():
                    return
            stop()

        return self.start_thread(watch, name)

    def adopt_thread(self, thread: threading.Thread, event: threading.Event, name: str) -> Task:
        """Track a ``(Thread, Event)`` pair a command returned (Dareplane convention)."""
        task = self._new(name, "thread", event)
        task.thread = thread
        if not thread.is_alive() and thread.ident is None:
            thread.start()
        return self._register(task)

    def start_process(self, argv: list[str], name: str = "process", **popen_kwargs: Any) -> Task:
        """Start ``argv`` (never through a shell) in its own process group."""
        for key, value in new_group_kwargs().items():
            popen_kwargs.setdefault(key, value)
        proc = subprocess.Popen(argv, **popen_kwargs)  # noqa: S603 - argv list, no shell
        return self.adopt_process(proc, name)

    def adopt_process(self, proc: subprocess.Popen, name: str) -> Task:
        """Track a ``subprocess.Popen`` a command returned."""
        task = self._new(name, "process")
        task.process = proc
        # Decide now, while the child surely exists: after it has been reaped its group id can
        # no longer be read, but its own children may still be running in that group.
        task.own_group = leads_own_group(proc.pid)
        return self._register(task)

    def run_on_main_thread(
        self, fn: Callable[..., Any], name: str = "main", *args: Any, **kwargs: Any
    ) -> Task:
        """Queue ``fn(stop_event, *args, **kwargs)`` for the process's main thread (GUI toolkits)."""
        task = self._new(name, "main")
        self._register(task)
        self._main_queue.put((task, fn, args, kwargs))
        return task

    def serve_main_thread(
        self,
        stop: threading.Event,
        poll_s: float = 0.25,
        also: Callable[[], bool] | None = None,
    ) -> None:
        """Run queued main-thread calls until ``stop`` is set or ``also()`` is true (called by
        ``start_listening``; ``also`` sees a stop signal even if nothing else runs)."""
        while not stop.is_set() and not (also is not None and also()):
            try:
                item = self._main_queue.get(timeout=poll_s)
            except queue.Empty:
                continue
            if item is None:
                break
            task, fn, args, kwargs = item
            if task.stop_event.is_set():
                task.done.set()
                continue
            try:
                fn(task.stop_event, *args, **kwargs)
            except Exception as exc:
                task.error = f"{type(exc).__name__}: {exc}"
                log.exception("main-thread task failed", task=task.id)
            finally:
                task.done.set()

    def wake_main_thread(self) -> None:
        self._main_queue.put(None)

    # -- inspecting and stopping --------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        """Running tasks; finished ones are dropped from the table once reported."""
        with self._lock:
            tasks = list(self._tasks.values())
            for t in tasks:
                if not t.alive:
                    del self._tasks[t.id]
        return [t.info() for t in tasks if t.alive]

    def get(self, task_id: int) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def stop(self, task_id: int) -> dict[str, Any]:
        """Stop one task; returns how it ended."""
        task = self.get(task_id)
        if task is None:
            raise KeyError(task_id)
        outcome = self._stop_task(task)
        with self._lock:
            self._tasks.pop(task_id, None)
        return {"id": task_id, "name": task.name, "outcome": outcome}

    def stop_all(self) -> list[dict[str, Any]]:
        with self._lock:
            ids = list(self._tasks)
        results = []
        for tid in ids:
            try:
                results.append(self.stop(tid))
            except KeyError:
                pass
        return results

    def _stop_task(self, task: Task) -> str:
        task.stop_event.set()
        if task.process is not None:
            return _stop_process(task.process, self.term_timeout_s, task.own_group)
        if task.thread is not None:
            if task.thread is threading.current_thread():
                return "stop requested"
            task.thread.join(self.join_timeout_s)
            if task.thread.is_alive():
                log.warning(
                    "thread did not stop in time", task=task.id, timeout_s=self.join_timeout_s
                )
                return f"still running after {self.join_timeout_s} s (stop event set)"
            return "stopped"
        task.done.wait(self.join_timeout_s)
        return "stopped" if task.done.is_set() else "stop requested"


def _stop_process(proc: subprocess.Popen, timeout_s: float, own_group: bool | None = None) -> str:
    """SIGTERM, wait, SIGKILL: the child's whole group when it leads its own group.

    Members of the group that outlive the leader (a grandchild ignoring SIGTERM) get SIGKILL,
    so nothing the task started keeps running.
    """
    if own_group is None:
        own_group = proc.poll() is None and leads_own_group(proc.pid)
    outcome = "did not exit"
    if proc.poll() is not None:
        outcome = f"exited ({proc.returncode})"
    else:
        for kill, label in ((False, "terminated"), (True, "killed")):
            if own_group:
                signal_group(proc.pid, kill=kill)
            else:
                try:
                    proc.kill() if kill else proc.terminate()
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout_s)
                outcome = label
                break
            except subprocess.TimeoutExpired:
                continue
    if own_group:
        end_group(proc.pid, timeout_s)
    return outcome
