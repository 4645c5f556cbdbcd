"""The decoder's commands (FIT, SAVE, LOAD, START, STOP, STATUS, SET) as one stateful object.

No sockets here: ``commands.py`` maps command names onto these methods. A lock serialises commands
that change state, because the server runs each connection on its own thread. Numbers are checked
against the documented ``RANGES`` (docs/decoder.md); file names resolve in the mesh data folder
(:mod:`shared_utils.paths`), so the file the recorder just wrote is found under the same name. A
live run is a task in the server's table when the service is given the server's ``tasks``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.decoder import model_io
from services.decoder.arguments import (
    MAX_NAMES,
    MODEL_SUFFIXES,
    RANGES,
    XDF_SUFFIXES,
    parse_bands,
)
from services.decoder.controller import HysteresisController
from services.decoder.features import FeatureSettings
from services.decoder.live_io import make_outlet, open_input
from services.decoder.model_io import DecoderModel, ModelFileError
from services.decoder.notify import Notifier, NotifyConfig
from services.decoder.online import (
    MODES,
    DecodePipeline,
    LiveLoop,
    choose_positive,
    output_labels,
)
from services.decoder.training import TrainingError, fit_recording, read_recording
from shared_utils.checks import check_ranges, check_text, unknown_message
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger
from shared_utils.paths import data_dir as default_data_dir
from shared_utils.paths import resolve_in

if TYPE_CHECKING:
    from shared_utils.protocol.tasks import TaskManager

log = get_logger("decoder")


class DecoderService:
    """Holds the current model and at most one live decoding run."""

    def __init__(
        self,
        model_file: str | None = None,
        tasks: TaskManager | None = None,
        data_dir: str | Path | None = None,
        allow_absolute: bool = False,
    ) -> None:
        """``model_file``: a model to LOAD at once (a missing or bad file raises CommandError;
        the operator's start-up option, so an absolute path is accepted); ``tasks``: the
        server's task table; ``data_dir``: where FIT, SAVE and LOAD resolve names."""
        self._tasks = tasks
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.allow_absolute = allow_absolute
        self._lock = threading.RLock()
        self.model: DecoderModel | None = None
        self.model_source: str | None = None  # "fit:<xdf>" or the file it was loaded from
        self.loop: LiveLoop | None = None
        self.run: dict[str, Any] = {}
        self.last_run: dict[str, Any] = {}
        self.controller = HysteresisController()
        self.notifier: Notifier | None = None
        if model_file:  # the operator's option, not a command: any path, relative to data_dir
            self._load((self.data_dir / Path(model_file).expanduser()).resolve())

    def _path(self, name: str, what: str, suffixes: tuple[str, ...], **kw: Any) -> Path:
        return resolve_in(
            self.data_dir,
            name,
            what=what,
            suffixes=suffixes,
            allow_absolute=self.allow_absolute,
            **kw,
        )

    # -- calibration --------------------------------------------------------------------------
    def fit(
        self,
        xdf: str,
        signal: str = "mock_eeg",
        markers: str | None = None,
        window_s: float = 1.0,
        epoch_step_s: float = 0.25,
        tmin_s: float = 0.5,
        bands: list | None = None,
        order: int = 2,
        classes: list | None = None,
        channels: list | None = None,
        folds: int = 5,
        shrinkage: float | None = None,
    ) -> dict[str, Any]:
        """Fit on a recording: epochs after each marker, band-power features, shrinkage LDA.

        "xdf" is a name in the mesh data folder (the recorder's reply "file" works as is)."""
        markers = markers or f"{signal}_markers"
        check_ranges(
            RANGES, window_s=window_s, epoch_step_s=epoch_step_s, tmin_s=tmin_s, order=order,
            folds=folds, shrinkage=shrinkage,
        )  # fmt: skip
        check_text("signal", signal)
        check_text("markers", markers)
        for what, names in (("classes", classes), ("channels", channels)):
            if names is not None and len(names) > MAX_NAMES:
                raise CommandError(f"{what}: {len(names)} names, at most {MAX_NAMES}")
        band_list = parse_bands(bands)
        settings = FeatureSettings(bands=band_list, order=order, window_s=window_s)
        path = self._path(xdf, "xdf", XDF_SUFFIXES, must_exist=True)
        try:
            rec = read_recording(str(path), signal, markers)
            model, report = fit_recording(
                rec,
                settings,
                channels=[str(c) for c in channels] if channels else None,
                classes=[str(c) for c in classes] if classes else None,
                tmin_s=tmin_s,
                epoch_step_s=epoch_step_s,
                folds=folds,
                shrinkage=shrinkage,
            )
        except (TrainingError, ValueError) as e:
            raise CommandError(str(e)) from e
        model.training.update(xdf=str(path), signal=signal, markers=markers)
        with self._lock:
            self.model, self.model_source = model, f"fit:{path}"
        log.info("model fitted", **{k: report[k] for k in ("cv_accuracy", "n_epochs", "classes")})
        return {**report, "xdf": str(path)}

    def save(self, file: str, overwrite: bool = False) -> dict[str, Any]:
        """Write the current model to a versioned JSON file in the data folder (an existing
        file only with "overwrite": true)."""
        with self._lock:
            if self.model is None:
                raise CommandError("no model to save: FIT or LOAD one first")
            target = self._path(file, "model file", MODEL_SUFFIXES, overwrite=overwrite)
            existed = target.exists()
            try:
                path = model_io.save(self.model, target)
            except OSError as e:
                raise CommandError(f"cannot write {target}: {e.strerror or e}") from e
        log.info("model saved", file=str(path), overwrote=existed)
        return {
            "file": str(path),
            "format": model_io.MODEL_FORMAT,
            "version": model_io.MODEL_VERSION,
            "overwrote": existed,
        }

    def load(self, file: str) -> dict[str, Any]:
        """Read a model file from the data folder; it is used by the next START."""
        return self._load(self._path(file, "model file", MODEL_SUFFIXES, must_exist=True))

    def _load(self, path: Path) -> dict[str, Any]:
        try:
            model = model_io.load(path)
        except FileNotFoundError as e:
            raise CommandError(f"model file not found: {path}") from e
        except ModelFileError as e:
            raise CommandError(f"{path}: {e}") from e
        with self._lock:
            self.model, self.model_source = model, str(path)
        return {"file": self.model_source, **model.summary()}

    # -- live decoding ------------------------------------------------------------------------
    def start(
        self,
        input: str = "mock_eeg",
        output: str = "decoder",
        window_s: float | None = None,
        step_s: float = 0.05,
        mode: str = "proba",
        positive_class: str | None = None,
        on_threshold: float | None = None,
        off_threshold: float | None = None,
        smoothing_s: float | None = None,
        min_dwell_s: float | None = None,
        notify: dict | None = None,
        resolve_timeout_s: float = 5.0,
        transport: str = "auto",
    ) -> dict[str, Any]:
        """Decode the live ``input`` stream and push predictions to the LSL outlet ``output``.

        "transport": "auto" reads a same-host shared-memory ring behind the input when there is
        one, "lsl" never does, "shm" reads the ring of that name without LSL.
        """
        check_ranges(
            RANGES, window_s=window_s, step_s=step_s, on_threshold=on_threshold,
            off_threshold=off_threshold, smoothing_s=smoothing_s, min_dwell_s=min_dwell_s,
            resolve_timeout_s=resolve_timeout_s,
        )  # fmt: skip
        check_text("input", input)
        check_text("output", output)
        if positive_class is not None:
            check_text("positive_class", positive_class)
        thresholds = _given(on_threshold, off_threshold, smoothing_s, min_dwell_s)
        with self._lock:
            if self.loop is not None and self.loop.running:
                raise CommandError(f"already decoding {self.run.get('input')!r}; STOP first")
            if self.loop is not None:  # a run that ended on an error: release it first
                self.stop()
            model = self._check_start(input, output, window_s, step_s, mode)
            try:
                positive = choose_positive(model, positive_class)
                # Unset values keep what SET (or the previous run) chose; initially 0.6/0.4/0/0.
                params = replace(self.controller.params, **thresholds).validated()
                controller = HysteresisController(params)
                notify_cfg = NotifyConfig.parse(notify) if notify else None
            except ValueError as e:
                raise CommandError(str(e)) from e
            source = open_input(input, model, window_s, resolve_timeout_s, transport)
            n_window = max(2, round((window_s or model.features.window_s) * model.srate))
            step = max(1, round(step_s * model.srate))
            notifier = Notifier(notify_cfg) if notify_cfg else None  # its thread starts here
            pipeline = DecodePipeline(
                model, source.index, n_window, step, positive, mode, controller, notifier
            )
            out_labels = output_labels(model, positive, mode)
            outlet = make_outlet(output, out_labels, model, positive, mode)
            loop = LiveLoop(source.inlet, outlet, pipeline, source.fmt_name, log)
            self.loop, self.controller, self.notifier = loop, controller, notifier
            self.run = {
                "input": input,
                "output": output,
                "transport": source.transport,
                "mode": mode,
                "positive_class": positive,
                "channels": out_labels,
                "window_s": n_window / model.srate,
                "step_s": step / model.srate,
                "model_window_s": model.features.window_s,
                "controller": dict(vars(controller.params)),
                "started_at": time.time(),
                "model": self.model_source,
            }
            loop.start()
            if self._tasks is not None:
                task = self._tasks.start_job(
                    f"DECODE {input}", lambda: self._stop_loop(loop), lambda: not loop.running
                )
                self.run["task"] = task.id
        log.info("decoding", **{k: self.run[k] for k in ("input", "output", "mode")})
        return dict(self.run)

    def _stop_loop(self, loop: LiveLoop) -> None:
        """Its task was stopped: stop this run if it is still the current one."""
        with self._lock:
            if self.loop is loop:
                self.stop()

    def _check_start(
        self, input: str, output: str, window_s: float | None, step_s: float, mode: str
    ) -> DecoderModel:
        """START's arguments that need no stream; returns the model to decode with."""
        if output == input:
            raise CommandError("output must be a different stream name than input")
        model = self.model
        if model is None:
            raise CommandError("no model: FIT or LOAD one before START")
        if mode not in MODES:
            raise CommandError(unknown_message("mode", mode, MODES))
        if step_s < 0 or (window_s is not None and window_s <= 0):
            raise CommandError("window_s must be > 0 and step_s >= 0")
        return model

    def stop(self) -> dict[str, Any]:
        """Stop decoding and close the output stream."""
        with self._lock:
            loop, notifier = self.loop, self.notifier
            if loop is None:
                return {"stopped": False, "predictions": 0}
            loop.stop()
            if notifier is not None:
                notifier.close()
            self.loop = None
            self.last_run = self._run_stats(loop)  # STATUS keeps showing the finished run
            return {"stopped": True, "predictions": loop.pipeline.predictions, "error": loop.error}

    def set(
        self,
        on_threshold: float | None = None,
        off_threshold: float | None = None,
        smoothing_s: float | None = None,
        min_dwell_s: float | None = None,
    ) -> dict[str, Any]:
        """Change controller thresholds live (also before START: they seed the next run)."""
        check_ranges(
            RANGES, on_threshold=on_threshold, off_threshold=off_threshold,
            smoothing_s=smoothing_s, min_dwell_s=min_dwell_s,
        )  # fmt: skip
        changes = _given(on_threshold, off_threshold, smoothing_s, min_dwell_s)
        if not changes:
            raise CommandError(
                "SET needs at least one of on_threshold, off_threshold, smoothing_s, min_dwell_s"
            )
        with self._lock:
            try:
                params = self.controller.set(**changes)
            except ValueError as e:
                raise CommandError(str(e)) from e
        return {
            "on_threshold": params.on_threshold,
            "off_threshold": params.off_threshold,
            "smoothing_s": params.smoothing_s,
            "min_dwell_s": params.min_dwell_s,
        }

    def status(self) -> dict[str, Any]:
        """Running state, latency statistics, predictions made, model in use, controller state."""
        loop, c = self.loop, self.controller
        out: dict[str, Any] = {
            "running": bool(loop and loop.running),
            "model": None
            if self.model is None
            else {"source": self.model_source, **self.model.summary()},
            "controller": {
                "state": "on" if c.state else "off",
                "smoothed": c.smoothed,
                "switches": c.switches,
                **vars(c.params),
            },
        }
        if loop is not None:
            out.update(self._run_stats(loop))
        elif self.last_run:
            out["last_run"] = self.last_run
        if self.notifier is not None:
            out["notify"] = self.notifier.stats()
        return out

    def _run_stats(self, loop: LiveLoop) -> dict[str, Any]:
        last = loop.pipeline.last
        return {
            "run": self.run,
            "predictions": loop.pipeline.predictions,
            "samples": loop.samples,
            "input_age_s": None
            if loop.last_arrival is None
            else round(loop.clock() - loop.last_arrival, 3),
            "latency_ms": loop.latency.summary_ms(),
            "compute_ms": loop.compute.summary_ms(),
            "last_output": None if last is None else [round(float(v), 4) for v in last],
            "clock_offset_s": loop.offset,
            "error": loop.error,
        }

    def close(self) -> None:
        """Release LSL objects before the process exits."""
        self.stop()


def _given(
    on_threshold: float | None,
    off_threshold: float | None,
    smoothing_s: float | None,
    min_dwell_s: float | None,
) -> dict[str, float]:
    """The controller settings a START or SET named (the others keep their values)."""
    given = {
        "on_threshold": on_threshold,
        "off_threshold": off_threshold,
        "smoothing_s": smoothing_s,
        "min_dwell_s": min_dwell_s,
    }
    return {k: float(v) for k, v in given.items() if v is not None}
