"""``control-room report FILE.xdf``: write the session report of a recording (control_room.report).

Prints the HTML file's path on stdout (the one line a script needs); figures that could not be
drawn are named on stderr with the reason, and appear as placeholders in the report.
"""

from __future__ import annotations

import click


@click.command()
@click.argument("xdf", metavar="FILE.xdf", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the report (default: next to the recording).",
)
@click.option(
    "--screenshot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Presenter screenshot (PNG) to include (default: FILE.xdf.png next to it).",
)
def report(xdf: str, out_dir: str | None, screenshot: str | None) -> None:
    """Write the session report of FILE.xdf: one HTML file with the figures embedded, and the PNGs."""
    from control_room.report import XdfReadError, write_report

    try:
        res = write_report(xdf, out_dir, {"screenshot": screenshot})
    except XdfReadError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # an output folder that cannot be written
        raise click.ClickException(f"cannot write the report: {exc}") from None
    for name, why in res.skipped.items():
        click.echo(f"report: {name} not drawn: {why}", err=True)
    click.echo(str(res.html))
