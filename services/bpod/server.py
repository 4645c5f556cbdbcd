"""Thin protocol layer: maps commands onto :class:`services.bpod.service.BpodService`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.bpod.driver import BpodError
from services.bpod.service import BpodService
from shared_utils.errors import CommandError


def build_commands(service: BpodService) -> Callable[[Any], dict[str, Callable[..., Any]]]:
    """Return a factory that, given the DefaultServer, builds the command map."""

    def factory(server: Any) -> dict[str, Callable[..., Any]]:
        def connect() -> dict:
            """Connect (or reconnect) to the Bpod; restarts a dead emulator."""
            return service.connect()

        def info() -> dict:
            """Model, firmware, input/output channel names and event names."""
            return service.info()

        def load(state_machine: dict) -> dict:
            """Load a JSON state machine (names, not codes); it runs from the next trial on."""
            return service.load(state_machine)

        def run(trials: int = 1, wait: bool = False, state_machine: dict | None = None) -> dict:
            """Run trials in the background (task id at once); wait=true replies with the trials."""
            if state_machine is not None:
                service.load(state_machine)
            reply = service.start_run(
                trials, lambda fn: server.tasks.start_thread(fn, name="bpod-run")
            )
            if not wait:
                return reply
            service.wait_run()
            return service.run_result()

        def result() -> dict:
            """Trials finished in the current or last run (states, events, times)."""
            return service.run_result()

        def stop() -> dict:
            """Stop the running trial and run; all outputs off."""
            return service.stop()

        def override(channel: str, value: int) -> dict:
            """Drive an output by name (Valve1, PWM1, BNC1...); 0 releases it."""
            return service.override(channel, value)

        def soft_code(code: int) -> dict:
            """Send soft code n to the running trial (event SoftCode<n>)."""
            return service.soft_code(code)

        def emulate_input(event: str) -> dict:
            """Simulate an input edge (Port1In, Port1Out, BNC1High...) during a trial."""
            try:
                return service.emulate_input(event)
            except BpodError as exc:
                raise CommandError(str(exc)) from None

        def status() -> dict:
            """Connection, run progress, current state, last error."""
            return service.status()

        def close() -> dict:
            """Stop, outputs off, disconnect, stop the emulator."""
            return service.close()

        return {
            "CONNECT": connect,
            "INFO": info,
            "LOAD": load,
            "RUN": run,
            "RESULT": result,
            "STOP": stop,
            "OVERRIDE": override,
            "SOFT_CODE": soft_code,
            "EMULATE_INPUT": emulate_input,
            "STATUS": status,
            "CLOSE": close,
        }

    return factory
