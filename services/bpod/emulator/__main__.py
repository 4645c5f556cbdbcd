"""``python -m services.bpod.emulator --link PATH``: a Bpod you can open with pyserial at PATH."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

import click


@click.command()
@click.option("--link", required=True, type=click.Path(path_type=Path), help="Symlink to create.")
@click.option("--machine-type", type=click.Choice(["3", "4"]), default="3", show_default=True)
@click.option("--firmware", type=click.Choice(["22", "23"]), default="23", show_default=True)
@click.option(
    "--script",
    default="",
    help='Inputs replayed in every trial, seconds after trial start: "Port1In@0.5,Port1Out@0.6".',
)
@click.option("--no-discovery", is_flag=True, help="Do not send the 0xDE discovery byte when idle.")
@click.option("--parent-pid", type=int, default=None, help="Exit when this parent process dies.")
@click.option(
    "--remove-dir", is_flag=True, help="On exit also remove the (then empty) folder of --link."
)
def main(
    link: Path,
    machine_type: str,
    firmware: str,
    script: str,
    no_discovery: bool,
    parent_pid: int | None,
    remove_dir: bool,
) -> None:
    """Emulate a Bpod state machine on a pseudo-terminal until SIGTERM/SIGINT.

    Machine type 3 runs firmware 22 or 23; type 4 (Bpod 2+) only 23, as the real board does.
    """
    from services.bpod.emulator import PtyEmulator, get_profile, parse_script

    try:
        profile = get_profile(int(machine_type), int(firmware))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        items = parse_script(script, profile)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--script") from exc
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the link exists: a stop then removes it
        signal.signal(sig, lambda *_: stop.set())
    emu = PtyEmulator(link, profile, discovery=not no_discovery, script=items)
    ports = " ".join(str(p) for p in emu.links)
    print(f"READY {ports}", flush=True)  # parents wait for this line
    try:
        emu.serve(stop, parent_pid=parent_pid)
    finally:
        emu.close()
        if remove_dir:
            with contextlib.suppress(OSError):
                link.parent.rmdir()  # empty now: the links were just removed
    sys.exit(0)


if __name__ == "__main__":
    main()
