"""Entry point: ``python -m services.presenter --port PORT [--fullscreen] [--size WxH] ...``."""

from __future__ import annotations

import os
from typing import Any

import click

from shared_utils.protocol.module import module_options, run_module


@click.command()
@module_options(default_port=8106)
@click.option("--fullscreen", is_flag=True, help="Open the window full screen.")
@click.option("--screen", default=0, show_default=True, help="Screen (monitor) index.")
@click.option("--size", default="800x600", show_default=True, help="Window size WxH in pixels.")
@click.option(
    "--experiments-dir",
    default="examples",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder of stimulus material: RUN_EXPERIMENT scripts and SHOW_IMAGE images "
    "(names in those commands are relative to it).",
)
@click.option(
    "--marker-stream",
    default="presenter_markers",
    show_default=True,
    help="Name of the LSL string stream of stimulus onset markers.",
)
@click.option(
    "--photodiode",
    default=None,
    type=click.Choice(["bottom_left", "bottom_right", "top_left", "top_right"]),
    help="Draw a photodiode patch in this corner (toggles at every onset).",
)
@click.option("--photodiode-size", default=50, show_default=True, help="Patch size in pixels.")
@click.option(
    "--refresh-hz",
    default=60.0,
    show_default=True,
    help="Nominal refresh rate (used for pacing without vsync and dropped frames).",
)
@click.option(
    "--pace",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "on", "off"]),
    help="Software frame pacing: auto = only when flips do not wait for vsync (Xvfb).",
)
def main(
    fullscreen: bool,
    screen: int,
    size: str,
    experiments_dir: str,
    marker_stream: str,
    photodiode: str | None,
    photodiode_size: int,
    refresh_hz: float,
    pace: str,
    **common: Any,
) -> None:
    """PsychoPy presenter: stimuli, cued blocks, LSL feedback and Builder experiments.

    Without $DISPLAY it starts its own virtual display (Xvfb), which ends with it.
    """
    from services.presenter.commands import build_commands
    from services.presenter.core import Presenter, parse_size
    from shared_utils.platform.xvfb import XvfbError, display_or_xvfb, spawn_tied

    try:
        wh = parse_size(size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from exc
    try:  # on the main thread: Linux ends Xvfb with this process, even on SIGKILL
        display, xvfb = display_or_xvfb(f"{max(1280, wh[0])}x{max(1024, wh[1])}x24", spawn_tied)
    except XvfbError as exc:
        raise click.ClickException(str(exc)) from exc
    os.environ["DISPLAY"] = display  # the PsychoPy child inherits it

    def factory(server: Any) -> dict:
        # After LSL is set up: the child inherits LSLAPICFG. Its slow PsychoPy import starts
        # now, while the server binds; CLOSE (or shutdown, or a failed bind) stops it.
        presenter = Presenter(
            size=wh,
            fullscreen=fullscreen,
            screen=screen,
            experiments_dir=experiments_dir,
            marker_stream=marker_stream,
            photodiode=photodiode,
            photodiode_size=photodiode_size,
            refresh_hz=refresh_hz,
            pace=pace,
            data_dir=server.data_dir,
            allow_absolute_paths=server.allow_absolute_paths,
            tasks=server.tasks,
            xvfb_pid=xvfb.proc.pid if xvfb else None,
        )
        presenter.warm_up()
        return build_commands(presenter)

    try:
        run_module("presenter", factory, **common)
    finally:  # after the module's CLOSE stopped the child, which drew on this display
        if xvfb is not None:
            xvfb.stop()


if __name__ == "__main__":
    main()
