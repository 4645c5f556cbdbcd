"""Entry point: ``python -m services.decoder --port 8104``."""

from __future__ import annotations

from typing import Any

import click

from shared_utils.protocol.module import module_options, run_module


@click.command()
@module_options(default_port=8104)
@click.option(
    "--model",
    "model_file",
    default=None,
    help="Model file to LOAD at start-up (relative to --data-dir, or absolute).",
)
def main(model_file: str | None, **common: Any) -> None:
    """Decoder: FIT on an XDF recording, then decode a live LSL stream (START/STOP/SET)."""
    from services.decoder.commands import build_commands
    from services.decoder.core import DecoderService

    run_module(
        "decoder",
        lambda server: build_commands(
            DecoderService(
                model_file,
                tasks=server.tasks,
                data_dir=server.data_dir,
                allow_absolute=server.allow_absolute_paths,
            )
        ),
        **common,
    )


if __name__ == "__main__":
    main()
