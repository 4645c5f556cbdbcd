"""Run a Builder-exported PsychoPy experiment inside the presenter child, on its window.

This follows the call sequence of PsychoPy's ``Session.runExperiment`` (setupData ->
setupWindow(win=ours) -> setupDevices -> run -> saveData), with two differences: data go where
the experiment's own ``setupData`` puts them (no session data folder), and control is by
setting ``thisExp.status`` from the child's command-reader thread, which the generated code
polls every frame (PAUSED makes it call its ``pauseExperiment``, FINISHED ends it).

A ``.psyexp`` file is compiled by PsychoPy into ``<stem>_compiled.py`` next to it first, so the
compiled script's data paths (relative to its folder) match the Builder file's.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

REQUIRED = ("setupData", "run")


class _StoppedEarly(Exception):
    """STOP came before the experiment's first frame."""


def compile_psyexp(path: Path) -> Path:
    """Compile a Builder ``.psyexp`` into a Python script next to it; return the script path."""
    from psychopy import experiment

    exp = experiment.Experiment()
    exp.loadFromXML(str(path))
    exp.settings.params["Use version"].val = ""
    out = path.with_name(path.stem + "_compiled.py")
    out.write_text(exp.writeScript(target="PsychoPy"), encoding="utf8")
    return out


def load_module(script: Path) -> ModuleType:
    """Import an experiment script under a unique name without running its ``__main__`` block."""
    name = f"presenter_exp_{script.stem}_{abs(hash(str(script))) & 0xFFFFFF:x}"
    spec = importlib.util.spec_from_file_location(name, script)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {script}")
    module = importlib.util.module_from_spec(spec)
    argv = sys.argv
    sys.argv = [str(script)]  # generated code parses argv (e.g. --pilot); don't show it ours
    try:
        spec.loader.exec_module(module)
    finally:
        sys.argv = argv
    missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise ValueError(
            f"{script.name} is not a Builder-exported experiment (missing {', '.join(missing)}); "
            "export it from PsychoPy Builder (2023.1 or later)"
        )
    return module


def merge_exp_info(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Overlay user values on the script's ``expInfo``; ``participant`` also sets
    ``participant|hid`` style keys (Builder's pipe syntax marks hidden/fixed fields)."""
    merged = dict(defaults)
    by_base = {k.split("|")[0]: k for k in defaults}
    for k, v in given.items():
        merged[by_base.get(k, k)] = v
    return merged


class ExperimentRun:
    """One experiment run: prepared on the main thread, run there, controlled from any thread."""

    def __init__(self, file: Path, exp_info: dict[str, Any]) -> None:
        self.file = file
        self.script = compile_psyexp(file) if file.suffix == ".psyexp" else file
        self.module = load_module(self.script)
        self.name = str(getattr(self.module, "expName", file.stem))
        self.exp_info = merge_exp_info(dict(getattr(self.module, "expInfo", {}) or {}), exp_info)
        self.this_exp = self.module.setupData(expInfo=self.exp_info)
        self.data_file = str(self.this_exp.dataFileName)
        # prepared | running | paused | stopping | finished | stopped | error
        self.state = "prepared"
        self.error: str | None = None
        self.id = 0  # set by the child (STATUS and the run's task refer to it)
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "file": str(self.file),
            "state": self.state,
            "data_file": self.data_file,
            "error": self.error,
        }

    def run(self, win: Any, on_started: Callable[[str], None]) -> None:
        """Blocking: run the experiment on ``win`` and save its data. Never raises.

        The final state (finished/stopped/error) is published only after the data are saved,
        so a client that sees it can read the data file.
        """
        from psychopy.constants import FINISHED

        mod, this_exp = self.module, self.this_exp
        cwd = os.getcwd()
        saved = (win.units, win.colorSpace, win.color)
        log_file = None
        final = "finished"
        try:
            with self._lock:
                if self.state == "stopping":  # STOP arrived before the first frame
                    raise _StoppedEarly
                self.state = "running"
            if callable(getattr(mod, "setupLogging", None)):
                log_file = mod.setupLogging(filename=this_exp.dataFileName)
            if callable(getattr(mod, "setupWindow", None)):
                mod.setupWindow(expInfo=self.exp_info, win=win)
            if callable(getattr(mod, "setupDevices", None)):
                mod.setupDevices(expInfo=self.exp_info, thisExp=this_exp, win=win)
            on_started(self.name)
            mod.run(
                expInfo=self.exp_info,
                thisExp=this_exp,
                win=win,
                globalClock="float",
                thisSession=None,
            )
        except _StoppedEarly:
            pass
        except Exception as exc:  # the user's code: report, never take the child down
            final = "error"
            self.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            os.chdir(cwd)
            try:
                if callable(getattr(mod, "saveData", None)):
                    mod.saveData(thisExp=this_exp)
                this_exp.abort()  # saved; stop PsychoPy saving again at exit
            except Exception as exc:
                final = "error"
                self.error = (self.error or "") + f" (saving data failed: {exc})"
                traceback.print_exc()
            if log_file is not None:
                from psychopy import logging

                logging.flush()
                logging.root.removeTarget(log_file)
            this_exp.status = FINISHED
            win.clearAutoDraw()
            win.units, win.colorSpace, win.color = saved
            with self._lock:
                if final != "error" and self.state == "stopping":
                    final = "stopped"
                self.state = final

    def pause(self) -> bool:
        from psychopy.constants import PAUSED

        with self._lock:
            if self.state != "running":
                return False
            self.this_exp.status = PAUSED
            self.state = "paused"
            return True

    def resume(self) -> bool:
        from psychopy.constants import STARTED

        with self._lock:
            if self.state != "paused":
                return False
            self.this_exp.status = STARTED
            self.state = "running"
            return True

    def stop(self) -> bool:
        from psychopy.constants import FINISHED

        with self._lock:
            if self.state not in ("prepared", "running", "paused"):
                return False
            self.this_exp.status = FINISHED
            self.state = "stopping"  # "stopped" once run() has returned and data are saved
            return True
