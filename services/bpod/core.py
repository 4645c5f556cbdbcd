"""The Bpod service core: one box, its driver, the LSL marker stream and the trials file.

No sockets here: :mod:`services.bpod.commands` maps protocol commands onto these methods, whose
first docstring lines are the commands' help. A run of trials happens in a background task (of
the ``tasks`` given, the module server's when it runs as a module) so commands such as ``STOP``,
``OVERRIDE`` and ``SOFT_CODE`` keep working while the animal does its thing, and
``STOP|{"task": id}`` ends the run too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pylsl

from services.bpod.compiler import CompiledStateMachine, compile_state_machine
from services.bpod.driver import BpodBusy, BpodDriver, BpodError, DeviceGone
from services.bpod.emulator_process import EmulatorProcess
from services.bpod.manual import ManualControls
from services.bpod.state_machine import StateMachine, StateMachineError
from services.bpod.trial import Events, ProtocolError, TrialRecord, TrialReplay
from services.bpod.trial_log import TrialLog
from shared_utils.checks import check_number
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger
from shared_utils.protocol.tasks import TaskManager

log = get_logger("services.bpod")
MAX_TRIALS = (1, 10_000)  # per RUN; each finished trial is also kept for RESULT


class BpodService(ManualControls):
    """State of one Bpod box as seen by the protocol commands."""

    def __init__(
        self,
        serial: str | None = None,
        emulator: EmulatorProcess | None = None,
        marker_stream: str = "bpod_events",
        trials_file: Path | None = None,
        tasks: TaskManager | None = None,
    ) -> None:
        if (serial is None) == (emulator is None):
            raise ValueError("give exactly one of a serial device or an emulator")
        self.emulator = emulator
        self.serial = serial
        self.driver: BpodDriver | None = None
        self.compiled: CompiledStateMachine | None = None
        self.sm: StateMachine | None = None
        self.trial_log = TrialLog(marker_stream, trials_file)
        self.tasks = tasks if tasks is not None else TaskManager()
        # One command at a time on the device: CONNECT closes and reopens the port, so nothing
        # else may touch it meanwhile (the trial thread only reads while CONNECT is refused).
        self.lock = threading.RLock()
        self.run_thread: threading.Thread | None = None
        self.run_stop = threading.Event()
        self.task_id: int | None = None
        self.trial_no = 0
        self.trials_requested = 0
        self.trials_done_in_run = 0
        self.current_state: str | None = None
        self.last_error: str | None = None
        self.results: list[dict] = []
        self._run_failed = False  # set before last_error, so STATUS never shows a half-ended run
        self._lsl_t0 = 0.0
        self._cycle_s = 1e-4
        self.on_load: Callable[[StateMachine], None] | None = None  # a session notes each one

    # ---------------------------------------------------------------- helpers
    def _require_connected(self) -> BpodDriver:
        if self.driver is None or not self.driver.connected or self.driver.hw is None:
            raise CommandError(
                "not connected to a Bpod; send CONNECT first"
                + (f" (last error: {self.last_error})" if self.last_error else "")
            )
        return self.driver

    @property
    def running(self) -> bool:
        return self.run_thread is not None and self.run_thread.is_alive() and not self._run_failed

    # ---------------------------------------------------------------- commands
    def connect_at_start(self) -> None:
        """First connection when the module starts: a box that is not there yet is logged, not
        fatal (the module keeps serving, and CONNECT retries)."""
        try:
            self.connect()
        except CommandError as exc:
            log.warning("not connected at start", error=str(exc))

    def connect(self) -> dict:
        """Connect (or reconnect) to the Bpod; restarts a dead emulator."""
        with self.lock:
            if self.running:
                raise CommandError("a run is in progress; STOP it before CONNECT")
            if self.driver is not None:
                self.driver.close_port()
            port = self.serial
            if self.emulator is not None:
                port = self.emulator.link.as_posix()
                if not self.emulator.alive:
                    port = self.emulator.start()
            self.driver = BpodDriver(port)
            try:
                hw = self.driver.connect()
            except BpodError as exc:
                self.last_error = str(exc)
                raise CommandError(f"cannot connect to {port}: {exc}") from exc
            self._cycle_s = hw.timer_period_us * 1e-6
            self.last_error = None
            if self.sm is not None:  # recompile for the (possibly different) hardware
                try:
                    self.compiled = compile_state_machine(self.sm, hw)
                except StateMachineError as exc:
                    self.compiled = None
                    self.last_error = f"loaded state machine does not fit this device: {exc}"
            log.info(
                "connected", port=port, model=hw.model, firmware=f"{hw.fw_major}.{hw.fw_minor}"
            )
            return {"serial": port, **self._info(hw)}

    def _info(self, hw: Any) -> dict:
        d = hw.to_dict()
        d["app_port"] = self.driver.app_port if self.driver else None
        d["flex_port"] = self.driver.flex_port if self.driver else None
        d["modules"] = self.driver.modules if self.driver else []
        return d

    def info(self) -> dict:
        """Model, firmware, input/output channel names and event names."""
        with self.lock:
            drv = self._require_connected()
            return {"serial": drv.port, "emulator": self.emulator is not None, **self._info(drv.hw)}

    def load(self, state_machine: dict) -> dict:
        """Load a JSON state machine (names, not codes); it runs from the next trial on.

        Validated and compiled for the connected device at once, so a bad name is refused here.
        """
        with self.lock:
            drv = self._require_connected()
            try:
                sm = StateMachine.from_dict(state_machine)
                compiled = compile_state_machine(sm, drv.hw)
            except StateMachineError as exc:
                raise CommandError(f"LOAD: {exc}") from None
            self.sm, self.compiled = sm, compiled
        if self.on_load is not None:
            self.on_load(sm)
        log.info("state machine loaded", name=sm.name, states=compiled.n_states)
        return {
            "state_machine": sm.name,
            "states": compiled.state_names,
            "bytes": len(compiled.body) + 5,
            "running": self.running,
        }

    def run(self, trials: int = 1, wait: bool = False, state_machine: dict | None = None) -> dict:
        """Run trials in the background (task id at once); wait=true replies with the trials."""
        if state_machine is not None:
            self.load(state_machine)
        reply = self.start_run(trials)
        if not wait:
            return reply
        self.wait_run()
        return self.run_result()

    def start_run(self, trials: int) -> dict:
        """Start ``trials`` trials as a tracked background task; returns its id at once."""
        check_number("trials", trials, *MAX_TRIALS, integer=True)
        with self.lock:
            drv = self._require_connected()
            if self.running:
                raise CommandError(f"a run is in progress (task {self.task_id}); STOP it or wait")
            if self.compiled is None:
                raise CommandError(
                    'no state machine loaded; send LOAD|{"state_machine": {...}} first'
                )
            self.trials_requested = trials
            self.trials_done_in_run = 0
            self.results = []
            self._run_failed = False
            started = threading.Event()

            def body(stop_event: threading.Event) -> None:
                # The task's own stop event doubles as ours: STOP|{"task": id} ends the trial too.
                self.run_stop = stop_event
                self.run_thread = threading.current_thread()
                started.set()
                self._run(drv, trials, stop_event)

            task = self.tasks.start_thread(body, name="bpod-run")
            started.wait(5)
            self.task_id = task.id
            return {"task": self.task_id, "trials": trials, "state_machine": self.compiled.name}

    def wait_run(self, timeout: float | None = None) -> None:
        th = self.run_thread
        if th is not None:
            th.join(timeout)

    def _run(self, drv: BpodDriver, trials: int, stop_event: threading.Event) -> None:
        for _ in range(trials):
            if stop_event.is_set():
                break
            with self.lock:
                compiled = self.compiled
                self.trial_no += 1
                n = self.trial_no
            try:
                rec = drv.run_trial(
                    compiled,
                    n,
                    on_start=lambda _us, n=n, c=compiled: self._on_start(n, c),
                    on_events=self._on_events,
                    on_soft_code=self._on_soft_code,
                    stop_event=self.run_stop,
                )
            except DeviceGone as exc:
                drv.close_port()  # already closed on most paths; makes "connected" false first
                self._fail(n, f"device gone during trial {n}: {exc}")
                return
            except (BpodError, ProtocolError) as exc:
                self._fail(n, f"trial {n} failed: {exc}")
                drv.recover()
                return
            rec.lsl_start = self._lsl_t0
            self._finish(rec)
            if rec.stopped:
                break

    def _on_start(self, n: int, compiled: CompiledStateMachine) -> None:
        self._lsl_t0 = pylsl.local_clock()
        self.current_state = compiled.state_names[0]
        self.trial_log.marker(f"trial_start:{n}", self._lsl_t0)
        self.trial_log.marker(f"state:{self.current_state}", self._lsl_t0)

    def _on_events(
        self, replay: TrialReplay, pkt: Events, names: list[str], new_state: str | None
    ) -> None:
        ts = self._lsl_t0 + pkt.cycle * self._cycle_s
        for name in names:
            self.trial_log.marker(f"event:{name}", ts)
        if new_state is not None:
            self.current_state = None if new_state == "exit" else new_state
            self.trial_log.marker(f"state:{new_state}", ts)

    def _on_soft_code(self, code: int) -> None:
        self.trial_log.marker(f"softcode:{code}")

    def _finish(self, rec: TrialRecord) -> None:
        d = rec.to_dict()
        self.trial_log.marker(f"trial_end:{rec.trial}", self._lsl_t0 + rec.n_cycles * self._cycle_s)
        self.current_state = None
        self.trial_log.write_trial(d)
        self.results.append(d)
        self.trials_done_in_run += 1
        log.info(
            "trial",
            trial=rec.trial,
            visited=d["visited"],
            duration_s=d["duration_s"],
            stopped=rec.stopped,
        )

    def _fail(self, n: int, message: str) -> None:
        self._run_failed = True
        self.last_error = message
        self.current_state = None
        self.trial_log.marker(f"trial_error:{n}")
        log.error("trial failed", trial=n, error=message)

    def run_result(self) -> dict:
        """Trials finished in the current or last run (states, events, times)."""
        return {
            "task": self.task_id,
            "completed": self.trials_done_in_run,
            "requested": self.trials_requested,
            "trials": self.results,
            "error": self.last_error,
        }

    def stop(self) -> dict:
        """Stop the running trial and run; all outputs off.

        The trial loop sends ``X`` and reads the end packet; then every output is driven to 0.
        """
        was_running = self.running
        self.run_stop.set()
        if was_running:
            self.wait_run(5)  # the trial loop sends 'X' and reads the end packet (no lock held)
        with self.lock:
            drv = self.driver
            if drv is None or not drv.connected:
                return {"stopped": was_running, "connected": False}
            if self.running:
                raise CommandError("the device did not end the trial within 5 s; check it")
            try:
                drv.safe_state()
            except BpodError as exc:
                self.last_error = str(exc)
        return {"stopped": was_running, "trials_done": self.trials_done_in_run}

    def status(self) -> dict:
        """Connection, run progress, current state, last error."""
        drv = self.driver
        return {
            "connected": bool(drv and drv.connected),
            "serial": drv.port if drv else self.serial,
            "emulator_pid": self.emulator.pid if self.emulator else None,
            "running": self.running,
            "task": self.task_id,
            "trial": self.trial_no,
            "trials_done": self.trials_done_in_run,
            "trials_requested": self.trials_requested,
            "state": self.current_state,
            "state_machine": self.compiled.name if self.compiled else None,
            "last_error": self.last_error,
            "marker_stream": self.trial_log.marker_stream,
            "trials_file": str(self.trial_log.trials_file),
        }

    def close(self) -> dict:
        """Stop, outputs off, disconnect, stop the emulator."""
        try:
            self.stop()
        finally:
            with self.lock:
                if self.driver is not None:
                    self.driver.disconnect()
                if self.emulator is not None:
                    self.emulator.cleanup()
        return {"closed": True}


__all__ = ["BpodBusy", "BpodService"]
