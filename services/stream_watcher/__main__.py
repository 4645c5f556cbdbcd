"""Entry point: ``python -m services.stream_watcher --port PORT``."""

from __future__ import annotations

from typing import Any

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
    buffer_s: float, max_values: int, stall_after_s: float, watch: tuple[str, ...], **common: Any
) -> None:
    """List and watch LSL streams; report appear/stall/vanish; serve windows as JSON."""
    from services.stream_watcher.commands import build_commands
    from services.stream_watcher.core import WatchService

    # The factory runs inside run_module, after the LSL config is chosen: the core touches LSL
    # at once (its resolver and monitor start with it).
    run_module(
        "stream_watcher",
        lambda server: build_commands(
            WatchService(
                buffer_s=buffer_s,
                max_values=max_values,
                stall_after_s=stall_after_s,
                watch=watch,
                tasks=server.tasks,
            )
        ),
        **common,
    )


if __name__ == "__main__":
    main()
