"""The presenter child process: owns the PsychoPy window on its main thread.

Started by the parent as ``sys.executable -m services.presenter.child --cmd-fd R --evt-fd W``.
A reader thread turns command-pipe lines into a queue; the frame loop drains the queue at the
top of every frame, so a command never waits for a frame it did not start. Stimulus commands are
answered after the flip that shows them, with the flip time on the LSL clock; every onset is
also pushed as an LSL string marker stamped from ``win.callOnFlip``.

Here: intake, one-frame stimuli, the window's lifetime and the frame loop. What runs over many
frames (blocks, feedback, experiments) is in :mod:`services.presenter.activities`; the window and
its software frame pacing (Xvfb has no vsync) in :mod:`services.presenter.window`; the pipe's
reader and writer in :mod:`services.presenter.ipc`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.presenter import ipc
from services.presenter.activities import Activities
from services.presenter.block import Block
from services.presenter.feedback import FeedbackSource, Resolver
from services.presenter.ipc import DEFERRED
from services.presenter.stats import FrameStats
from services.presenter.window import FrameClock, release_gl_garbage
from services.presenter.window_commands import WindowCommands
from shared_utils.errors import CommandError

GL_COMMANDS = {
    "show_text",
    "show_image",
    "fixation",
    "clear",
    "run_block",
    "feedback",
    "screenshot",
    "run_experiment",
    "close_window",
}
STATUS_EVERY_S = 0.2


class PresenterChild(WindowCommands, Activities):
    """State and frame loop of the window-owning process."""

    def __init__(self, emit: ipc.Emitter, marker_stream: str, refresh_hz: float, pace: str) -> None:
        import pylsl

        self.emit = emit
        self.refresh_hz = refresh_hz
        self.frames = FrameClock(refresh_hz, pace)
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.clock = pylsl.local_clock
        info = pylsl.StreamInfo(
            marker_stream, "Markers", 1, 0.0, "string", f"presenter:{marker_stream}:{os.getpid()}"
        )
        self.outlet = pylsl.StreamOutlet(info)
        self.marker_stream = marker_stream
        self.win: Any = None
        self.scene: Any = None
        self.photodiode: Any = None
        self.stats = FrameStats(refresh_hz)
        self.block: Block | None = None
        self._activity_counter = 0  # ids of blocks, feedback and experiments (their tasks)
        self.feedback: FeedbackSource | None = None
        self.resolver = Resolver()
        self.experiment: Any = None  # ExperimentRun
        self._experiment_to_run: Any = None
        self.last_experiment: dict[str, Any] | None = None
        self.paused = False
        self.onset: float | None = None
        self.frame = 0
        self._markers: list[str] = []
        self._after_flip: list[tuple[Any, dict[str, Any]]] = []
        self._shots: list[tuple[Any, str, bool]] = []  # (req_id, file, overwrite) for this frame
        self._window_config: tuple[list[int], bool, int] = ([0, 0], False, 0)
        self._last_status = 0.0
        self.running = True

    # ---- command intake -------------------------------------------------------------------
    def on_message(self, msg: dict[str, Any]) -> None:
        """Reader thread: control an experiment directly (its main thread is busy), else queue."""
        cmd = msg.get("cmd")
        exp = self.experiment
        if exp is not None and exp.state in ("prepared", "running", "paused", "stopping"):
            if cmd in ("pause", "resume", "stop"):
                target = (msg.get("args") or {}).get("target")
                if cmd == "stop" and target not in (None, ["experiment", exp.id]):
                    self.emit.reply(msg.get("id"), {"stopped": []})
                    return
                ok = getattr(exp, cmd)()
                key = {"pause": "paused", "resume": "resumed", "stop": "stopped"}[cmd]
                self.emit.reply(msg.get("id"), {key: ok, "experiment": exp.info()})
                self.send_status(force=True)
                return
            if cmd == "open":  # the window is open (the experiment is using it)
                if (msg.get("args") or {}).get("given"):
                    self.emit.reply(
                        msg.get("id"),
                        error=f"busy: experiment {exp.name!r} is running on the window; send "
                        "STOP first to change it",
                    )
                    return
                size = [int(v) for v in self.win.size]
                self.emit.reply(
                    msg.get("id"), {"already_open": True, "size": size, "paced": self.frames.paced}
                )
                return
            if cmd in GL_COMMANDS:
                self.emit.reply(
                    msg.get("id"),
                    error=f"busy: experiment {exp.name!r} is running; send STOP first",
                )
                return
            if cmd == "shutdown":
                exp.stop()
        self.inbox.put(msg)

    def handle(self, msg: dict[str, Any]) -> None:
        """Main thread: run one command; replies now or after the next flip."""
        req_id, cmd, args = msg.get("id"), msg.get("cmd"), msg.get("args") or {}
        fn = getattr(self, f"cmd_{cmd}", None)
        if fn is None:
            self.emit.reply(req_id, error=f"child does not know command {cmd!r}")
            return
        if cmd in GL_COMMANDS and self.win is None:
            self.emit.reply(req_id, error="no window is open: send OPEN first")
            return
        try:
            result = fn(req_id, **args)
        except (CommandError, ValueError, TypeError, RuntimeError) as exc:
            self.emit.reply(req_id, error=str(exc))
            return
        except Exception as exc:
            traceback.print_exc()
            self.emit.reply(req_id, error=f"{type(exc).__name__}: {exc}")
            return
        if result is not DEFERRED:
            self.send_status(force=True)  # so a STATUS right after this reply sees its effect
            self.emit.reply(req_id, result)

    # ---- helpers --------------------------------------------------------------------------
    def show(self, scene: Any, marker: str, req_id: Any = None, extra: dict | None = None) -> Any:
        """Put ``scene`` on screen at the next flip, with a marker; reply after that flip."""
        self.scene = scene
        self._markers.append(marker)
        if req_id is not None:
            self._after_flip.append((req_id, {"marker": marker, **(extra or {})}))
        return DEFERRED

    def _on_flip(self, markers: list[str]) -> None:
        t = self.clock()
        self.onset = t
        for m in markers:
            self.outlet.push_sample([m], t)

    def snapshot(self) -> dict[str, Any]:
        exp = self.experiment
        return {
            "window_open": self.win is not None,
            "size": [int(v) for v in self.win.size] if self.win is not None else None,
            "refresh_hz": self.refresh_hz,
            "paced": self.frames.paced,
            **self.stats.summary(),
            "stimulus": None
            if self.scene is None
            else {"kind": self.scene.kind, "label": self.scene.label[:200], "onset": self.onset},
            "paused": self.paused,
            "block": self.block.progress() if self.block else None,
            "feedback": self.feedback.info() if self.feedback else None,
            "experiment": exp.info() if exp is not None else self.last_experiment,
            "photodiode": None
            if self.photodiode is None
            else {"corner": self.photodiode.corner, "white": self.photodiode.white},
            "marker_stream": self.marker_stream,
        }

    def send_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self.emit.send({"event": "status", "status": self.snapshot()})

    # ---- stimuli ------------------------------------------------------------------------------
    def cmd_show_text(
        self,
        req_id: Any,
        text: str,
        color: Any = "white",
        height: float = 0.08,
        pos: Any = (0, 0),
        wrap_width: float | None = None,
    ) -> Any:
        from services.presenter import scene as sc

        s = sc.text_scene(self.win, text, color, height, pos, wrap_width)
        self._stop_all()
        return self.show(s, f"text:{text}", req_id)

    def cmd_show_image(self, req_id: Any, file: str, size: Any = None, pos: Any = (0, 0)) -> Any:
        from services.presenter import scene as sc

        s = sc.image_scene(self.win, file, size, pos)
        self._stop_all()
        return self.show(s, f"image:{Path(file).name}", req_id)

    def cmd_fixation(self, req_id: Any, color: Any = "white", size: float = 0.1) -> Any:
        from services.presenter import scene as sc

        s = sc.fixation_scene(self.win, color, size)
        self._stop_all()
        return self.show(s, "fixation", req_id)

    def cmd_clear(self, req_id: Any) -> Any:
        from services.presenter import scene as sc

        self._stop_all()
        return self.show(sc.Scene(), "clear", req_id)

    def cmd_status(self, req_id: Any) -> dict[str, Any]:
        return self.snapshot()

    def cmd_shutdown(self, req_id: Any) -> dict[str, Any]:
        self._stop_all()
        if self.win is not None:
            self.win.close()  # the process ends next: no need for close_window's clean-up
            self.win = None
        self.running = False
        return {"shutdown": True}

    # ---- loop -----------------------------------------------------------------------------------
    def _wait_and_drain(self) -> None:
        """Handle commands until the frame deadline (paced) or just those waiting (vsync)."""
        if self.frames.paced:
            target = self.frames.next_deadline()
            while True:
                remaining = target - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    self.handle(self.inbox.get(timeout=remaining))
                except queue.Empty:
                    break
            self.frames.advance()
        while True:
            try:
                self.handle(self.inbox.get_nowait())
            except queue.Empty:
                break

    def frame_step(self) -> None:
        self._wait_and_drain()
        if self.win is None or self._experiment_to_run is not None:
            return
        now = time.monotonic()
        self._tick_block(now)
        self._tick_feedback()
        self.scene.draw()
        self._flip(self.win.flip)
        if self._after_flip:
            self.send_status(force=True)  # status first: STATUS after a reply is up to date
        for req_id, extra in self._after_flip:
            self.emit.reply(req_id, {"onset": self.onset, "frame": self.frame, **extra})
        self._after_flip = []
        self.send_status()

    def _flip(self, flip: Callable[[], Any]) -> Any:
        """Finish the frame (photodiode patch, screenshots, markers on the flip), flip, count it."""
        markers, self._markers = self._markers, []
        if self.photodiode is not None:
            if markers:
                self.photodiode.toggle()
            self.photodiode.draw()
        if self._shots:
            self._take_screenshot()
        if markers:
            self.win.callOnFlip(self._on_flip, markers)
        t = flip()
        self.stats.add(time.monotonic())
        release_gl_garbage(self.win)
        self.frame += 1
        return t

    def loop(self) -> None:
        while self.running:
            if self._experiment_to_run is not None:
                run, self._experiment_to_run = self._experiment_to_run, None
                self._run_experiment(run)
            elif self.win is None:
                try:
                    self.handle(self.inbox.get(timeout=STATUS_EVERY_S))
                except queue.Empty:
                    pass
                self.send_status()
            else:
                self.frame_step()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cmd-fd", type=int, required=True)
    ap.add_argument("--evt-fd", type=int, required=True)
    ap.add_argument("--parent-pid", type=int, default=None)
    ap.add_argument("--marker-stream", default="presenter_markers")
    ap.add_argument("--refresh-hz", type=float, default=60.0)
    ap.add_argument("--pace", choices=("auto", "on", "off"), default="auto")
    args = ap.parse_args(argv)
    hung_up, serving = threading.Event(), threading.Event()
    ipc.exit_when_orphaned(args.parent_pid or os.getppid(), hung_up, serving)
    emit = ipc.Emitter(args.evt_fd)
    try:
        from psychopy import core  # noqa: F401  (slow: import before "ready", not at OPEN)
    except Exception as exc:
        emit.send({"event": "fatal", "error": f"cannot import PsychoPy: {exc}"})
        return 2
    try:  # without a usable display this fails; OPEN reports it then
        from psychopy import visual  # noqa: F401
    except Exception as exc:
        print(f"presenter child: psychopy.visual not importable yet: {exc}", file=sys.stderr)
    try:
        child = PresenterChild(emit, args.marker_stream, args.refresh_hz, args.pace)
    except Exception as exc:
        emit.send({"event": "fatal", "error": f"{type(exc).__name__}: {exc}"})
        return 2
    threading.Thread(
        target=ipc.read_messages,
        args=(args.cmd_fd, child.on_message, hung_up),
        name="cmd-reader",
        daemon=True,
    ).start()
    serving.set()
    emit.send({"event": "ready", "pid": os.getpid()})
    child.loop()
    emit.send({"event": "bye"})
    _leave(0)
    return 0


def _leave(code: int) -> None:
    """End the process now that the window is closed and every reply is sent.

    Skips the interpreter's own shutdown, which tears down PsychoPy, SciPy and pandas module by
    module and took 0.7-2.2 s here (about 5 s on a loaded container host) after the work was
    done. Nothing is lost: Builder data are saved when the experiment ends, markers are sent at
    their flips, and PsychoPy's log is flushed here.
    """
    with contextlib.suppress(Exception):
        from psychopy import logging

        logging.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
