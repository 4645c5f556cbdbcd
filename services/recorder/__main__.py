"""Entry point: ``python -m services.recorder --port 8103``."""

from __future__ import annotations

import re
from pathlib import Path

import click

from shared_utils.protocol.module import module_options, run_module


@click.command()
@module_options(default_port=8103)
@click.option(
    "--data-dir",
    default="data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for relative file names in START (created when needed).",
)
@click.option(
    "--flush-ms",
    default=200.0,
    show_default=True,
    help="Longest time a received sample waits before it is written (bounds kill -9 loss).",
)
@click.option("--offset-s", default=3.0, show_default=True, help="Clock offset cadence per stream.")
@click.option(
    "--fsync-s",
    default=0.0,
    show_default=True,
    help="fsync cadence (0: never; survives power loss).",
)
@click.option(
    "--probe-local-offsets",
    is_flag=True,
    help="Measure clock offsets of same-host streams too (they are exactly 0 otherwise).",
)
@click.option(
    "--rcs-port",
    default=None,
    type=int,
    is_flag=False,
    flag_value=22345,
    help="Serve LabRecorder remote control (off unless given; bare --rcs-port means 22345).",
)
@click.option("--rcs-host", default="127.0.0.1", show_default=True, help="Address for --rcs-port.")
@click.option(
    "--inlet-reserve-ms",
    default=500,
    show_default=True,
    help="liblsl's per-inlet sample pre-reservation (its default, 5000 ms, costs ~1.5 GB at "
    "64 ch x 1 MHz); 0 keeps liblsl's value. A [tuning] section in the LSL config wins.",
)
def main(
    data_dir: str | None,
    flush_ms: float,
    offset_s: float,
    fsync_s: float,
    probe_local_offsets: bool,
    rcs_port: int | None,
    rcs_host: str,
    inlet_reserve_ms: int,
    **common: object,
) -> None:
    """Recorder: every LSL stream (or the ones named) into one crash-safe XDF file."""
    from shared_utils.streams.lsl import use_loopback

    cfg = use_loopback()  # before the recorder's resolver makes the first LSL call
    if inlet_reserve_ms > 0:
        tune_inlet_reserve(cfg, inlet_reserve_ms)
    from services.recorder.core import Recorder
    from services.recorder.recording import RecordingOptions
    from services.recorder.server import build_commands

    if flush_ms <= 0 or offset_s <= 0 or fsync_s < 0:
        raise click.BadParameter("--flush-ms and --offset-s must be > 0, --fsync-s >= 0")
    options = RecordingOptions(
        flush_interval_s=flush_ms / 1000.0,
        offset_interval_s=offset_s,
        fsync_interval_s=fsync_s,
        probe_local_offsets=probe_local_offsets,
    )
    recorder = Recorder(data_dir=data_dir, options=options)
    run_module("recorder", build_commands(recorder, rcs_port, rcs_host), **common)


def tune_inlet_reserve(cfg: Path, reserve_ms: int) -> bool:
    """Load the LSL config ``cfg`` plus ``[tuning] InletBufferReserveMs = reserve_ms`` into this
    process (before any LSL call). Bounded memory: each inlet then pre-reserves ``reserve_ms`` of
    samples instead of 5 s; the pool still grows on demand if a backlog needs more. A config that
    has its own ``[tuning]`` section is left alone. Returns whether the reserve was set."""
    import pylsl

    text = cfg.read_text() if cfg.is_file() else ""
    if re.search(r"^\s*\[tuning\]", text, re.IGNORECASE | re.MULTILINE):
        return False
    pylsl.set_config_content(f"{text.rstrip()}\n\n[tuning]\nInletBufferReserveMs = {reserve_ms}\n")
    return True


if __name__ == "__main__":
    main()
