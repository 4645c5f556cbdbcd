"""What the presenter child runs over many frames: cued blocks, live feedback, experiments.

A command starts one of them and replies (a block or feedback after the flip that shows it); the
frame loop then advances it every frame (``_tick_block``, ``_tick_feedback``) or, for a Builder
experiment, hands the main thread to the experiment's own loop with our pacing, statistics and
markers wrapped around its flips. PAUSE, RESUME and STOP act on whichever runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from services.presenter.block import Block, BlockSpec
from services.presenter.ipc import DEFERRED


class Activities:
    """Mixin of :class:`~services.presenter.child.PresenterChild` over its state (``win``,
    ``block``, ``feedback``, ``experiment``, ``paused``, markers and the frame clock)."""

    # ---- block ----------------------------------------------------------------------------------
    def cmd_run_block(self, req_id: Any, **spec_args: Any) -> Any:
        spec = BlockSpec(**spec_args)
        spec.validate()
        self._stop_all()
        self._activity_counter += 1
        self.block = Block(self._activity_counter, spec)
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
        return DEFERRED

    def _tick_feedback(self) -> None:
        from services.presenter import scene as sc

        for req_id, source, err in self.resolver.poll():
            if source is None:
                self.emit.reply(req_id, error=err)
                continue
            self._stop_all()
            self._activity_counter += 1
            source.id = self._activity_counter
            self.feedback = source
            self.show(
                sc.Scene("feedback", source.stream, [source.display]),
                f"feedback_start:{source.stream}",
                req_id,
                {"stream": source.stream, "channel": source.channel, "feedback": source.id},
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

    def cmd_stop(self, req_id: Any, target: list | None = None) -> dict[str, Any]:
        """Stop what runs; ``target`` [kind, id] stops only that block or feedback (its task)."""
        if target is not None and target != self._current_activity():
            return {"stopped": []}
        stopped = self._stop_all()
        if stopped:
            from services.presenter import scene as sc

            self.show(sc.Scene(), "stop")
        return {"stopped": stopped}

    def _current_activity(self) -> list | None:
        """[kind, id] of what runs over time now (as STATUS shows it), or None."""
        if self.block is not None and self.block.state in ("running", "paused"):
            return ["block", self.block.id]
        if self.feedback is not None:
            return ["feedback", self.feedback.id]
        return None

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

    # ---- experiments ----------------------------------------------------------------------------
    def cmd_run_experiment(self, req_id: Any, file: str, exp_info: dict | None = None) -> Any:
        from services.presenter.experiment import ExperimentRun

        self._stop_all()
        run = ExperimentRun(Path(file), exp_info or {})
        self._activity_counter += 1
        run.id = self._activity_counter
        self.experiment = run
        self._experiment_to_run = run
        return {
            "experiment": run.name,
            "data_file": run.data_file,
            "state": "running",
            "id": run.id,
        }

    def _run_experiment(self, run: Any) -> None:
        from services.presenter import scene as sc

        win = self.win
        original_flip = win.flip
        this_exp = run.this_exp
        original_stamp = this_exp.timestampOnFlip

        def flip(*a: Any, **kw: Any) -> Any:  # pacing, stats and markers for the user's flips
            self.frames.wait()
            t = self._flip(lambda: original_flip(*a, **kw))
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
            self.frames.restart()
            self.send_status(force=True)
