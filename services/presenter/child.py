"""The presenter child process: owns the PsychoPy window on its main thread.

Started by the parent as ``sys.executable -m services.presenter.child --cmd-fd R --evt-fd W``.
A reader thread turns command-pipe lines into a queue; the frame loop drains the queue at the
top of every frame, so a command never waits for a frame it did not start. Stimulus commands are
answered after the flip that shows them, with the flip time on the LSL clock; every onset is
also pushed as an LSL string marker stamped from ``win.callOnFlip``.

Under Xvfb there is no vsync (flip returns in ~2 ms), so with ``--pace auto`` the loop measures a
few flips after opening and, if they are much faster than ``--refresh-hz``, sleeps to a
software deadline before each flip.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from services.presenter import ipc
from services.presenter.block import Block, BlockSpec
from services.presenter.feedback import FeedbackSource, Resolver
from services.presenter.stats import FrameStats

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


class Emitter:
    """Thread-safe writer of replies and events to the parent."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def send(self, msg: dict[str, Any]) -> None:
        with self._lock:
            try:
                ipc.write_all(self.fd, ipc.encode(msg))
            except (BrokenPipeError, OSError):
                os._exit(3)  # parent is gone: nobody to present for

    def reply(self, req_id: Any, result: Any = None, error: str | None = None) -> None:
        if error is None:
            self.send({"id": req_id, "ok": True, "result": result})
        else:
            self.send({"id": req_id, "ok": False, "error": error})


class PresenterChild:
    """State and frame loop of the window-owning process."""

    def __init__(self, emit: Emitter, marker_stream: str, refresh_hz: float, pace: str) -> None:
        import pylsl

        self.emit = emit
        self.refresh_hz = refresh_hz
        self.period = 1.0 / refresh_hz
        self.pace_mode = pace
        self.paced = False
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
        self._block_counter = 0
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
        self._shots: list[tuple[Any, str]] = []  # (req_id, file) to save from this frame
        self._deadline = 0.0
        self._last_status = 0.0
        self.running = True

    # ---- command intake -------------------------------------------------------------------
    def on_message(self, msg: dict[str, Any]) -> None:
        """Reader thread: control an experiment directly (its main thread is busy), else queue."""
        cmd = msg.get("cmd")
        exp = self.experiment
        if exp is not None and exp.state in ("prepared", "running", "paused", "stopping"):
            if cmd in ("pause", "resume", "stop"):
                ok = getattr(exp, cmd)()
                key = {"pause": "paused", "resume": "resumed", "stop": "stopped"}[cmd]
                self.emit.reply(msg.get("id"), {key: ok, "experiment": exp.info()})
                self.send_status(force=True)
                return
            if cmd == "open":  # the window is open (the experiment is using it)
                size = [int(v) for v in self.win.size]
                self.emit.reply(
                    msg.get("id"), {"already_open": True, "size": size, "paced": self.paced}
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
        except (ValueError, TypeError, RuntimeError) as exc:
            self.emit.reply(req_id, error=str(exc))
            return
        except Exception as exc:
            traceback.print_exc()
            self.emit.reply(req_id, error=f"{type(exc).__name__}: {exc}")
            return
        if result is not _DEFERRED:
            self.send_status(force=True)  # so a STATUS right after this reply sees its effect
            self.emit.reply(req_id, result)

    # ---- helpers --------------------------------------------------------------------------
    def show(self, scene: Any, marker: str, req_id: Any = None, extra: dict | None = None) -> Any:
        """Put ``scene`` on screen at the next flip, with a marker; reply after that flip."""
        self.scene = scene
        self._markers.append(marker)
        if req_id is not None:
            self._after_flip.append((req_id, {"marker": marker, **(extra or {})}))
        return _DEFERRED

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
            "paced": self.paced,
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

    # ---- window -----------------------------------------------------------------------------
    def cmd_open(
        self,
        req_id: Any,
        size: list[int] | None = None,
        fullscreen: bool = False,
        screen: int = 0,
        color: Any = "grey",
        photodiode: str | None = None,
        photodiode_size: int = 50,
    ) -> dict[str, Any]:
        if self.win is not None:
            return {
                "already_open": True,
                "size": [int(v) for v in self.win.size],
                "paced": self.paced,
            }
        try:  # PsychoPy may need the X display as soon as psychopy.visual is imported
            from psychopy import visual

            from services.presenter import scene as sc

            sc.check_color(color)
            win = visual.Window(
                size=tuple(size or (800, 600)),
                fullscr=fullscreen,
                screen=screen,
                color=color,
                colorSpace="rgb",
                units="height",
                winType="pyglet",
                allowGUI=not fullscreen,
                checkTiming=False,
                waitBlanking=True,
            )
        except ValueError:
            raise
        except Exception as exc:
            raise RuntimeError(
                f"cannot open a window (DISPLAY={os.environ.get('DISPLAY')!r}, screen {screen}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        win._monitorFrameRate = self.refresh_hz  # Builder code reads this; Xvfb would say ~600
        win.recordFrameIntervals = False
        self.win = win
        try:
            self.photodiode = (
                sc.PhotodiodePatch(win, photodiode, photodiode_size) if photodiode else None
            )
        except ValueError:
            win.close()
            self.win = None
            raise
        self.scene = sc.Scene()
        self.paced = self._decide_pacing()
        self.stats = FrameStats(self.refresh_hz)
        self._deadline = time.monotonic()
        return {
            "already_open": False,
            "size": [int(v) for v in win.size],
            "paced": self.paced,
            "refresh_hz": self.refresh_hz,
        }

    def _decide_pacing(self) -> bool:
        if self.pace_mode in ("on", "off"):
            return self.pace_mode == "on"
        times = []
        for _ in range(8):
            self.win.flip()
            times.append(time.monotonic())
        gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
        return gaps[len(gaps) // 2] < 0.5 * self.period  # no vsync: pace in software

    def cmd_close_window(self, req_id: Any) -> dict[str, Any]:
        self._stop_all()
        self.win.close()
        self.win = self.scene = self.photodiode = None
        return {"closed": True}

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

    def cmd_screenshot(self, req_id: Any, file: str) -> Any:
        self._shots.append((req_id, file))
        return _DEFERRED

    # ---- block ----------------------------------------------------------------------------------
    def cmd_run_block(self, req_id: Any, **spec_args: Any) -> Any:
        spec = BlockSpec(**spec_args)
        spec.validate()
        self._stop_all()
        self._block_counter += 1
        self.block = Block(self._block_counter, spec)
        self.paused = False
        from services.presenter import scene as sc

        return self.show(
            sc.Scene("block", f"block {self.block.id}"),
            f"block_start:{self.block.id}",
            req_id,
            {
                "block": self.block.id,
                "trials": self.block.cues,
                "expected_s": round(self.block.expected_s, 3),
            },
        )

    def _tick_block(self, now: float) -> None:
        from services.presenter import scene as sc

        b = self.block
        if b is None or b.state != "running":
            return
        step = b.advance(now)
        if step is None:
            return
        phase, cue, text = step
        if phase == "end":
            self.show(sc.Scene(), f"block_end:{b.id}")
        elif phase == "iti" or not text:
            self.show(
                sc.Scene("iti" if phase == "iti" else phase, cue),
                phase if phase == "iti" else f"{phase}:{cue}",
            )
        else:
            s = sc.text_scene(self.win, text, "white", 0.12 if phase == "cue" else 0.1)
            s.kind = phase
            self.show(s, f"{phase}:{cue}")

    # ---- feedback -------------------------------------------------------------------------------
    def cmd_feedback(
        self,
        req_id: Any,
        stream: str,
        channel: int = 0,
        vmin: float = 0.0,
        vmax: float = 1.0,
        mode: str = "bar",
        color: Any = "limegreen",
        timeout: float = 5.0,
    ) -> Any:
        from services.presenter import scene as sc

        display = sc.FeedbackDisplay(self.win, mode, color)
        self.resolver.start(req_id, stream, channel, vmin, vmax, timeout, display)
        return _DEFERRED

    def _tick_feedback(self) -> None:
        from services.presenter import scene as sc

        for req_id, source, err in self.resolver.poll():
            if source is None:
                self.emit.reply(req_id, error=err)
                continue
            self._stop_all()
            self.feedback = source
            self.show(
                sc.Scene("feedback", source.stream, [source.display]),
                f"feedback_start:{source.stream}",
                req_id,
                {"stream": source.stream, "channel": source.channel},
            )
        fb = self.feedback
        if fb is not None and not self.paused and fb.update():
            fb.display.set_value(fb.value)

    # ---- control --------------------------------------------------------------------------------
    def cmd_pause(self, req_id: Any) -> dict[str, Any]:
        if self.block is None or self.block.state not in ("running", "paused"):
            if self.feedback is None:
                raise ValueError("nothing to pause: no block, feedback or experiment is running")
        if self.block is not None:
            self.block.pause(time.monotonic())
        self.paused = True
        self._markers.append("pause")
        return {"paused": True}

    def cmd_resume(self, req_id: Any) -> dict[str, Any]:
        if not self.paused:
            raise ValueError("nothing is paused")
        if self.block is not None:
            self.block.resume(time.monotonic())
        self.paused = False
        self._markers.append("resume")
        return {"resumed": True}

    def cmd_stop(self, req_id: Any) -> dict[str, Any]:
        stopped = self._stop_all()
        if stopped:
            from services.presenter import scene as sc

            self.show(sc.Scene(), "stop")
        return {"stopped": stopped}

    def _stop_all(self) -> list[str]:
        """End whatever runs over time (block, feedback); return what was stopped."""
        stopped = []
        if self.block is not None and self.block.state in ("running", "paused"):
            self.block.stop()
            stopped.append("block")
        if self.feedback is not None:
            self.feedback.close()
            self.feedback = None
            stopped.append("feedback")
        self.paused = False
        return stopped

    def cmd_status(self, req_id: Any) -> dict[str, Any]:
        return self.snapshot()

    def cmd_shutdown(self, req_id: Any) -> dict[str, Any]:
        self._stop_all()
        if self.win is not None:
            self.win.close()
            self.win = None
        self.running = False
        return {"shutdown": True}

    # ---- experiments ----------------------------------------------------------------------------
    def cmd_run_experiment(self, req_id: Any, file: str, exp_info: dict | None = None) -> Any:
        from services.presenter.experiment import ExperimentRun

        self._stop_all()
        run = ExperimentRun(Path(file), exp_info or {})
        self.experiment = run
        self._experiment_to_run = run
        return {"experiment": run.name, "data_file": run.data_file, "state": "running"}

    def _run_experiment(self, run: Any) -> None:
        from services.presenter import scene as sc

        win = self.win
        original_flip = win.flip
        this_exp = run.this_exp
        original_stamp = this_exp.timestampOnFlip

        def flip(*a: Any, **kw: Any) -> Any:  # pacing, stats and markers for the user's flips
            self._pace_wait()
            if self._markers:
                win.callOnFlip(self._on_flip, self._markers)
                if self.photodiode is not None:
                    self.photodiode.toggle()
                self._markers = []
            if self.photodiode is not None:
                self.photodiode.draw()
            t = original_flip(*a, **kw)
            self.stats.add(time.monotonic())
            self.frame += 1
            self.send_status()
            return t

        def stamp(w: Any, name: str, *a: Any, **kw: Any) -> Any:  # Builder: "<comp>.started"
            if name.endswith(".started"):
                self._markers.append(f"exp:{name[: -len('.started')]}")
            return original_stamp(w, name, *a, **kw)

        win.flip = flip
        this_exp.timestampOnFlip = stamp
        self.scene = sc.Scene("experiment", run.name)
        try:
            run.run(win, lambda name: self._markers.append(f"experiment_start:{name}"))
        finally:
            win.flip = original_flip
            this_exp.timestampOnFlip = original_stamp
            self._markers.append(f"experiment_end:{run.name}:{run.state}")
            self.last_experiment = run.info()
            self.experiment = None
            self.scene = sc.Scene()
            self.stats.reset_gap()
            self._deadline = time.monotonic()
            self.send_status(force=True)

    # ---- loop -----------------------------------------------------------------------------------
    def _pace_wait(self) -> None:
        """Software vsync: hold the flip until the next frame deadline."""
        if not self.paced:
            return
        self._deadline += self.period
        now = time.monotonic()
        if now > self._deadline + self.period:  # fell behind: restart the grid from now
            self._deadline = now
        elif self._deadline > now:
            time.sleep(self._deadline - now)

    def _wait_and_drain(self) -> None:
        """Handle commands until the frame deadline (paced) or just those waiting (vsync)."""
        if self.paced:
            target = self._deadline + self.period
            while True:
                remaining = target - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    self.handle(self.inbox.get(timeout=remaining))
                except queue.Empty:
                    break
            self._deadline = target
            now = time.monotonic()
            if now > self._deadline + self.period:
                self._deadline = now
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
        if self.photodiode is not None:
            if self._markers:
                self.photodiode.toggle()
            self.photodiode.draw()
        if self._shots:
            self._take_screenshot()
        markers, self._markers = self._markers, []
        if markers:
            self.win.callOnFlip(self._on_flip, markers)
        self.win.flip()
        self.stats.add(time.monotonic())
        self.frame += 1
        if self._after_flip:
            self.send_status(force=True)  # status first: STATUS after a reply is up to date
        for req_id, extra in self._after_flip:
            self.emit.reply(req_id, {"onset": self.onset, "frame": self.frame, **extra})
        self._after_flip = []
        self.send_status()

    def _take_screenshot(self) -> None:
        """Save the frame about to be flipped (back buffer: under Xvfb the front one is black)."""
        shots, self._shots = self._shots, []
        try:
            image = self.win.getMovieFrame(buffer="back")
        except Exception as exc:
            for req_id, _ in shots:
                self.emit.reply(req_id, error=f"screenshot failed: {exc}")
            return
        finally:
            self.win.movieFrames = []
        for req_id, file in shots:
            try:
                image.save(file)
            except Exception as exc:
                self.emit.reply(req_id, error=f"screenshot failed: {exc}")
                continue
            size = [int(v) for v in self.win.size]
            self.emit.reply(req_id, {"file": file, "size": size, "stimulus": self.scene.kind})

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


_DEFERRED = object()


def _reader(child: PresenterChild, fd: int) -> None:
    reader = ipc.LineReader(fd)
    while True:
        try:
            msgs = reader.read_blocking()
        except OSError:
            msgs = None
        if msgs is None:  # parent closed the pipe: shut down
            child.on_message({"id": None, "cmd": "shutdown"})
            return
        for m in msgs:
            child.on_message(m)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cmd-fd", type=int, required=True)
    ap.add_argument("--evt-fd", type=int, required=True)
    ap.add_argument("--marker-stream", default="presenter_markers")
    ap.add_argument("--refresh-hz", type=float, default=60.0)
    ap.add_argument("--pace", choices=("auto", "on", "off"), default="auto")
    args = ap.parse_args(argv)
    emit = Emitter(args.evt_fd)
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
        target=_reader, args=(child, args.cmd_fd), name="cmd-reader", daemon=True
    ).start()
    emit.send({"event": "ready", "pid": os.getpid()})
    child.loop()
    emit.send({"event": "bye"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
