"""``python -m services.bpod --port PORT (--serial DEVICE | --emulator)``: one Bpod box."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from shared_utils.protocol.module import module_options, run_module


@click.command()
@module_options(default_port=8105)
@click.option("--serial", "serial_dev", default=None, help="Serial device of the state machine.")
@click.option("--emulator", is_flag=True, help="Start a software Bpod on a pty and use it.")
@click.option(
    "--machine-type",
    type=click.Choice(["3", "4"]),
    default="3",
    show_default=True,
    help="Emulator: 3 = Bpod 2.x, 4 = Bpod 2+.",
)
@click.option(
    "--firmware",
    type=click.Choice(["22", "23"]),
    default="23",
    show_default=True,
    help="Emulator firmware major version (type 4 runs 23 only, like the real Bpod 2+).",
)
@click.option(
    "--script", default="", help='Emulator inputs every trial, e.g. "Port1In@0.5,Port1Out@0.6".'
)
@click.option(
    "--stream-name", default="bpod_events", show_default=True, help="LSL marker stream name."
)
@click.option(
    "--trials-file",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON-lines file for finished trials (default <data-dir>/bpod/trials_<time>_<pid>.jsonl).",
)
def main(
    serial_dev: str | None,
    emulator: bool,
    machine_type: str,
    firmware: str,
    script: str,
    stream_name: str,
    trials_file: Path | None,
    **common: Any,
) -> None:
    """Bpod state machine service: load state machines, run trials, stream events to LSL."""
    if bool(serial_dev) == emulator:
        raise click.UsageError("give exactly one of --serial DEVICE or --emulator")
    from services.bpod.commands import build_commands
    from services.bpod.core import BpodService
    from services.bpod.emulator import get_profile
    from services.bpod.emulator_process import EmulatorProcess
    from services.bpod.trial_log import default_trials_file

    if emulator:
        try:
            get_profile(int(machine_type), int(firmware))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc

    def factory(server: Any) -> dict[str, Callable[..., Any]]:
        # Runs after logging and LSL are set up: the marker outlet, the emulator start and the
        # first connect are logged to --log-server like everything after them.
        emu = EmulatorProcess(int(machine_type), int(firmware), script) if emulator else None
        trials = trials_file or default_trials_file(server.data_dir)
        core = BpodService(serial_dev, emu, stream_name, trials, tasks=server.tasks)
        try:
            core.connect_at_start()
        except BaseException:  # the module will not run: stop the emulator child now
            core.close()
            raise
        return build_commands(core)

    run_module("bpod", factory, **common)


if __name__ == "__main__":
    main()
