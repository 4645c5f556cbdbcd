"""Presenter commands, parent side: argument checks, file names, child lifecycle, replies.

No sockets and no PsychoPy here: each method checks its arguments against the documented ranges
(:mod:`services.presenter.limits`), resolves file names inside their folders
(:func:`shared_utils.paths.resolve_in`: screenshots in the data folder, images and experiments in
the experiments folder) and forwards the rest to the window-owning child through
:class:`ChildLink`, which times out every wait. Blocks, feedback and experiments become server
tasks (:mod:`services.presenter.tracking`). ``commands.py`` maps command names onto these
methods unchanged.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from services.presenter import limits
from services.presenter.block import BlockSpec
from services.presenter.link import ChildLink
from services.presenter.tracking import ActivityTasks
from shared_utils.checks import check_number, check_string, unknown_message
from shared_utils.errors import CommandError
from shared_utils.paths import resolve_in
from shared_utils.protocol.tasks import TaskManager

STIMULUS_TIMEOUT_S = 5.0  # a stimulus reply waits for its flip: a few frames, generously
CORNERS = limits.CORNERS


def parse_size(text: str) -> tuple[int, int]:
    """``"800x600"`` -> (800, 600); raises ``ValueError`` otherwise."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ValueError(f"size must look like 800x600, got {text!r}") from exc
    lo, hi = limits.WINDOW_PX
    if not (lo <= w <= hi and lo <= h <= hi):
        raise ValueError(f"size {w}x{h}: each side must be {lo}..{hi} pixels")
    return w, h


class Presenter:
    """Holds the presenter configuration and the child process behind every command."""

    def __init__(
        self,
        size: tuple[int, int] = (800, 600),
        fullscreen: bool = False,
        screen: int = 0,
        experiments_dir: str | Path = "examples",
        marker_stream: str = "presenter_markers",
        photodiode: str | None = None,
        photodiode_size: int = 50,
        refresh_hz: float = 60.0,
        pace: str = "auto",
        ready_timeout: float = 60.0,
        data_dir: str | Path = "data",
        allow_absolute_paths: bool = False,
        tasks: TaskManager | None = None,
        xvfb_pid: int | None = None,
    ) -> None:
        if photodiode is not None and photodiode not in CORNERS:
            raise ValueError(unknown_message("photodiode corner", photodiode, CORNERS))
        self.size = size
        self.fullscreen = fullscreen
        self.screen = screen
        self.experiments_dir = Path(experiments_dir).resolve()
        self.data_dir = Path(data_dir).resolve()
        self.allow_absolute = allow_absolute_paths
        self.photodiode = photodiode
        self.photodiode_size = photodiode_size
        self.ready_timeout = ready_timeout
        self.link = ChildLink(marker_stream, refresh_hz, pace)
        self.activities = ActivityTasks(self.link, tasks)
        self.xvfb_pid = xvfb_pid  # the virtual display this module started, if any
        self._lifecycle = threading.Lock()  # one OPEN/CLOSE at a time

    # ---- lifecycle -------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Start the child now so its slow PsychoPy import is done before the first OPEN."""
        self.link.start()

    def _ensure_child(self) -> bool:
        """Start the child if it is not running; returns True when it had to be (re)started."""
        restarted = False
        if not self.link.alive:
            if self.link.proc is not None and self.link.proc.poll() is not None:
                self.link.restarts += 1
            self.link.start()
            restarted = True
        self.link.wait_ready(self.ready_timeout)
        return restarted

    def open(
        self,
        size: list | None = None,
        fullscreen: bool | None = None,
        screen: int | None = None,
        color: str | list | None = None,
        photodiode: str | None = None,
        photodiode_size: int | None = None,
        timeout: float = 30.0,
        restart: bool = False,
    ) -> dict[str, Any]:
        """Open the stimulus window (starting or restarting the PsychoPy child if needed).

        On an open window, ``color``, ``photodiode`` and ``photodiode_size`` are applied, and a
        different ``size``, ``fullscreen`` or ``screen`` is refused (CLOSE_WINDOW first).
        ``restart`` kills a running child first: the way out when it is stuck (e.g. in user code).
        """
        given = {
            k: v
            for k, v in {
                "size": size,
                "fullscreen": fullscreen,
                "screen": screen,
                "color": color,
                "photodiode": photodiode,
                "photodiode_size": photodiode_size,
            }.items()
            if v is not None
        }
        if size is not None:
            size = limits.window_size(size)
        if screen is not None:
            check_number("screen", screen, *limits.SCREEN, integer=True)
        if color is not None:
            limits.colour(color)
        if photodiode_size is not None:
            check_number("photodiode_size", photodiode_size, *limits.PHOTODIODE_PX, integer=True)
        corner = limits.corner(photodiode) if photodiode is not None else self.photodiode
        limits.timeout(timeout)
        with self._lifecycle:
            if restart and self.link.alive:
                self.link.kill()
            restarted = self._ensure_child()
            result = self.link.request(
                "open",
                {
                    "size": list(size or self.size),
                    "fullscreen": self.fullscreen if fullscreen is None else fullscreen,
                    "screen": self.screen if screen is None else screen,
                    "color": "grey" if color is None else color,
                    "photodiode": corner,
                    "photodiode_size": photodiode_size or self.photodiode_size,
                    "given": sorted(given),
                },
                timeout=timeout,
            )
        return {**result, "child_pid": self.link.pid, "child_started": restarted}

    def close_window(self) -> dict[str, Any]:
        """Close the stimulus window; the child stays up so the next OPEN is fast."""
        with self._lifecycle:
            return self.link.request("close_window", timeout=STIMULUS_TIMEOUT_S)

    def close(self) -> None:
        """Stop the PsychoPy child before the module exits."""
        self.link.stop()

    # ---- stimuli ---------------------------------------------------------------------------
    def show_text(
        self,
        text: str,
        color: str | list = "white",
        height: float = 0.08,
        pos: list | None = None,
        wrap_width: float | None = None,
    ) -> dict[str, Any]:
        """Show text (height and pos in window-height units); reply after the flip with its onset."""
        check_string("text", text, limits.TEXT_CHARS, min_len=0)
        limits.colour(color)
        check_number("height", height, *limits.HEIGHT)
        if wrap_width is not None:
            check_number("wrap_width", wrap_width, *limits.WRAP)
        return self.link.request(
            "show_text",
            {
                "text": text,
                "color": color,
                "height": height,
                "pos": limits.position(pos or [0, 0]),
                "wrap_width": wrap_width,
            },
            timeout=STIMULUS_TIMEOUT_S,
        )

    def show_image(
        self, file: str, size: list | None = None, pos: list | None = None
    ) -> dict[str, Any]:
        """Show an image file from the experiments folder (fitted to the window unless size is given)."""
        if size is not None:
            size = limits.image_size(size)
        pos = limits.position(pos or [0, 0])
        path = self._experiment_file(file, "image file")
        return self.link.request(
            "show_image", {"file": str(path), "size": size, "pos": pos}, timeout=STIMULUS_TIMEOUT_S
        )

    def fixation(self, color: str | list = "white", size: float = 0.1) -> dict[str, Any]:
        """Show a fixation cross."""
        limits.colour(color)
        check_number("size", size, *limits.FIXATION_SIZE)
        return self.link.request(
            "fixation", {"color": color, "size": size}, timeout=STIMULUS_TIMEOUT_S
        )

    def clear(self) -> dict[str, Any]:
        """Blank the screen (ends a block or feedback)."""
        return self.link.request("clear", timeout=STIMULUS_TIMEOUT_S)

    def run_block(
        self,
        n_trials: int = 10,
        cues: list | None = None,
        cue_s: float = 1.0,
        stimulus_s: float = 3.0,
        iti_s: float = 2.0,
        iti_jitter_s: float = 0.0,
        cue_text: str = "{cue}",
        stimulus_text: str = "+",
        order: str = "random",
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Start a cued trial block (cue, stimulus, inter-trial interval) as a task; progress in STATUS."""
        spec = {
            "n_trials": n_trials,
            "cues": ["left", "right"] if cues is None else cues,
            "cue_s": cue_s,
            "stimulus_s": stimulus_s,
            "iti_s": iti_s,
            "iti_jitter_s": iti_jitter_s,
            "cue_text": cue_text,
            "stimulus_text": stimulus_text,
            "order": order,
            "seed": seed,
        }
        BlockSpec(**spec).validate()
        reply = self.link.request("run_block", spec, timeout=STIMULUS_TIMEOUT_S)
        return self.activities.attach(reply, "block", "block")

    def feedback(
        self,
        stream: str,
        channel: int = 0,
        vmin: float = 0.0,
        vmax: float = 1.0,
        mode: str = "bar",
        color: str | list = "limegreen",
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Show a bar (or colour disc) driven live by channel `channel` of an LSL stream (a task)."""
        check_string("stream", stream, limits.STREAM_CHARS)
        check_number("channel", channel, *limits.CHANNEL, integer=True)
        check_number("vmin", vmin)
        check_number("vmax", vmax)
        if vmax == vmin:
            raise CommandError("vmax must differ from vmin")
        if mode not in ("bar", "color"):
            raise CommandError(unknown_message("feedback mode", mode, ["bar", "color"]))
        limits.colour(color)
        limits.timeout(timeout)
        reply = self.link.request(
            "feedback",
            {
                "stream": stream,
                "channel": channel,
                "vmin": vmin,
                "vmax": vmax,
                "mode": mode,
                "color": color,
                "timeout": timeout,
            },
            timeout=timeout + STIMULUS_TIMEOUT_S,
        )
        return self.activities.attach(reply, "feedback", "feedback")

    def screenshot(self, file: str, overwrite: bool = False) -> dict[str, Any]:
        """Save what the window shows as a PNG in the data folder (never over a file unless overwrite)."""
        path = resolve_in(
            self.data_dir,
            file,
            what="screenshot file",
            suffixes=[".png"],
            allow_absolute=self.allow_absolute,
            overwrite=overwrite,
            create_dirs=True,
        )
        return self.link.request(
            "screenshot", {"file": str(path), "overwrite": overwrite}, timeout=STIMULUS_TIMEOUT_S
        )

    # ---- control ---------------------------------------------------------------------------
    def pause(self) -> dict[str, Any]:
        """Pause the running block, feedback or experiment (display keeps refreshing)."""
        return self.link.request("pause", timeout=STIMULUS_TIMEOUT_S)

    def resume(self) -> dict[str, Any]:
        """Resume what PAUSE paused."""
        return self.link.request("resume", timeout=STIMULUS_TIMEOUT_S)

    def stop(self) -> dict[str, Any]:
        """Stop the running block, feedback or experiment; no-op when nothing runs."""
        if not self.link.alive:
            return {"stopped": []}
        return self.link.request("stop", timeout=STIMULUS_TIMEOUT_S)

    def run_experiment(self, file: str, exp_info: dict | None = None) -> dict[str, Any]:
        """Run a Builder-exported .py (or .psyexp) from the experiments folder as a task."""
        path = self._experiment_file(file, "experiment", suffixes=[".py", ".psyexp"])
        info = limits.exp_info(exp_info or {})
        reply = self.link.request(
            "run_experiment", {"file": str(path), "exp_info": info}, timeout=30.0
        )
        return self.activities.attach(reply, "experiment", "id")

    def _experiment_file(self, file: str, what: str, suffixes: list[str] | None = None) -> Path:
        """An existing file inside the experiments folder (absolute paths only by flag)."""
        return resolve_in(
            self.experiments_dir,
            file,
            what=what,
            suffixes=suffixes,
            allow_absolute=self.allow_absolute,
            must_exist=True,
            folder_name="experiments folder",
        )

    def status(self) -> dict[str, Any]:
        """Frame rate, dropped frames, current stimulus, block/feedback/experiment, child state."""
        link = self.link
        alive = link.alive
        st = dict(link.status) if alive else {}
        return {
            "child_alive": alive,
            "child_pid": link.pid if alive else None,
            "child_exit_code": None if alive else link.exit_code,
            "child_error": None
            if alive
            else (link.death_message() if link.exit_code is not None else None),
            "child_restarts": link.restarts,
            "window_open": bool(st.get("window_open")),
            "experiments_dir": str(self.experiments_dir),
            "data_dir": str(self.data_dir),
            "display": os.environ.get("DISPLAY"),
            "xvfb_pid": self.xvfb_pid,
            **{k: v for k, v in st.items() if k != "window_open"},
        }
