"""Entry point: ``python -m services.stream_watcher --port PORT``."""

from __future__ import annotations

import click

from shared_utils.protocol.module import module_options, run_module


@click.command()
@module_options(default_port=8102)
@click.option(
    "--buffer-s", default=30.0, show_default=True, help="Seconds kept per watched stream."
)
@click.option(
    "--max-values",
    default=500_000,
    show_default=True,
    help="Cap on samples x channels per GET_WINDOW reply.",
)
@click.option(
    "--stall-after-s",
    default=1.0,
    show_default=True,
    help="Silence after which a stream counts as stalled.",
)
@click.option(
    "--watch",
    "watch",
    multiple=True,
    help="Stream name to watch from the start (repeatable; waits for it to appear).",
)
def main(
    buffer_s: float, max_values: int, stall_after_s: float, watch: tuple[str, ...], **common: object
) -> None:
    """List and watch LSL streams; report appear/stall/vanish; serve windows as JSON."""
    from services.stream_watcher.core import WatchService
    from services.stream_watcher.server import build_commands

    def commands(_server: object) -> dict:
        # Built inside run_module, after the LSL config is chosen: the service touches LSL at once.
        service = WatchService(
            buffer_s=buffer_s, max_values=max_values, stall_after_s=stall_after_s
        )
        for name in watch:
            service.watch_when_visible(name)
        return build_commands(service)

    run_module("stream_watcher", commands, **common)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
