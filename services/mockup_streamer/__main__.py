"""Entry point: ``python -m services.mockup_streamer --port PORT``."""

from __future__ import annotations

from typing import Any

import click

from shared_utils.protocol.module import module_options, run_module


@click.command()
@module_options(default_port=8101)
def main(**common: Any) -> None:
    """Synthetic EEG (alpha high/low states with markers) or XDF replay as LSL streams."""
    from services.mockup_streamer.commands import build_commands
    from services.mockup_streamer.core import MockupStreamer

    run_module(
        "mockup_streamer",
        lambda server: build_commands(
            MockupStreamer(
                tasks=server.tasks,
                data_dir=server.data_dir,
                allow_absolute=server.allow_absolute_paths,
            )
        ),
        **common,
    )


if __name__ == "__main__":
    main()
