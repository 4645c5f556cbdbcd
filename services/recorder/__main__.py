"""Entry point: ``python -m services.recorder --port 8103``."""

from __future__ import annotations

from typing import Any

import click

from shared_utils.protocol.module import module_options, run_module


@click.command()
@module_options(default_port=8103)
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
    "--rcs-allow",
    multiple=True,
    help="A PC allowed to use remote control besides this one (repeat; needed for an --rcs-host "
    "beyond loopback: the protocol has no token).",
)
@click.option(
    "--inlet-reserve-ms",
    default=500,
    show_default=True,
    help="liblsl's per-inlet sample pre-reservation (its default, 5000 ms, costs ~1.5 GB at "
    "64 ch x 1 MHz); 0 keeps liblsl's value. A [tuning] section in the LSL config wins.",
)
@click.option(
    "--transport",
    type=click.Choice(["auto", "lsl"]),
    default="auto",
    show_default=True,
    help="auto: record a same-host shared-memory stream from its ring (full rate); lsl: always "
    "record what LSL carries.",
)
def main(
    flush_ms: float,
    offset_s: float,
    fsync_s: float,
    probe_local_offsets: bool,
    rcs_port: int | None,
    rcs_host: str,
    rcs_allow: tuple[str, ...],
    inlet_reserve_ms: int,
    transport: str,
    **common: Any,
) -> None:
    """Recorder: every LSL stream (or the ones named) into one crash-safe XDF file."""
    from services.recorder.commands import build_commands
    from services.recorder.core import Recorder
    from services.recorder.rcs import bind_problem
    from services.recorder.recording import RecordingOptions

    if rcs_port is not None and (problem := bind_problem(rcs_host, rcs_allow)):
        raise click.BadParameter(problem, param_hint="--rcs-host")
    if flush_ms <= 0 or offset_s <= 0 or fsync_s < 0:
        raise click.BadParameter("--flush-ms and --offset-s must be > 0, --fsync-s >= 0")
    options = RecordingOptions(
        flush_interval_s=flush_ms / 1000.0,
        offset_interval_s=offset_s,
        fsync_interval_s=fsync_s,
        probe_local_offsets=probe_local_offsets,
        transport=transport,
    )
    run_module(
        "recorder",
        lambda server: build_commands(
            Recorder(
                data_dir=server.data_dir,
                options=options,
                rcs_port=rcs_port,
                rcs_host=rcs_host,
                rcs_allow=rcs_allow,
                tasks=server.tasks,
                allow_absolute=server.allow_absolute_paths,
            )
        ),
        inlet_reserve_ms=inlet_reserve_ms,
        **common,
    )


if __name__ == "__main__":
    main()
