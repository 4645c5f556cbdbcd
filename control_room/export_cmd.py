"""``control-room export``: a recorded session to BIDS and/or NWB, in this process.

Also the end-of-run hook of ``control-room run`` (:func:`export_after_run`): the run's XDF is
exported to both formats beside it and the paths printed. The work itself is
``shared_utils.export`` (the recorder's EXPORT command runs the same code).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click


@click.command("export")
@click.argument("source", type=click.Path(exists=True))
@click.option(
    "--to",
    "formats",
    type=click.Choice(["bids", "nwb"]),
    multiple=True,
    help="Format; repeat for both (default: both).",
)
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="Output folder (one format), or the parent of <out>/bids and <out>/nwb "
    "(default: SESSION/<format>, or <xdf name>_<format> beside a bare XDF).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--subject", default=None, help="Subject (default: session.json 'subject').")
@click.option("--session", default=None, help="Session label (default: from session.json).")
@click.option("--task", default=None, help="BIDS task label (default: closedloop).")
@click.option(
    "--trials",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Bpod trial file (.jsonl) to include; repeatable.",
)
@click.option("--line-freq", type=float, default=None, help="Power line frequency (50 or 60 Hz).")
@click.option(
    "--bids-format",
    type=click.Choice(["BrainVision", "EDF"]),
    default="BrainVision",
    show_default=True,
    help="EEG file format inside BIDS.",
)
@click.option(
    "--subject-info",
    default=None,
    help='NWB subject fields as JSON, e.g. \'{"species": "Mus musculus", "sex": "F", '
    '"age": "P90D"}\'.',
)
@click.option("--validate", is_flag=True, help="Run nwbinspector / the BIDS validator after.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON line.")
def export(
    source: str,
    formats: tuple[str, ...],
    out: str | None,
    overwrite: bool,
    subject: str | None,
    session: str | None,
    task: str | None,
    trials: tuple[str, ...],
    line_freq: float | None,
    bids_format: str,
    subject_info: str | None,
    validate: bool,
    as_json: bool,
) -> None:
    """Export SOURCE (a session folder or an .xdf file) to BIDS and/or NWB.

    Every stream, marker and Bpod trial that fits the format is carried over on the recorder's
    clock; what cannot be is listed with the reason. Nothing existing is replaced without
    --overwrite, and a failed export leaves no partial output.
    """
    from control_room.cli_common import json_arg as _json_arg
    from shared_utils.export import ExportError, ExportOptions, export_many

    opts = ExportOptions(
        subject=subject,
        session=session,
        task=task,
        line_freq=line_freq,
        bids_format=bids_format,
        subject_info=_json_arg(subject_info, "--subject-info"),
    )
    progress = None if as_json else (lambda stage: click.echo(f"... {stage}", err=True))
    try:
        results = export_many(
            source,
            list(formats) or ["bids", "nwb"],
            out,
            overwrite,
            trials=list(trials),
            options=opts,
            validate=validate,
            progress=progress,
        )
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"results": [r.to_dict() for r in results]}))
    else:
        for r in results:
            click.echo("\n".join(r.lines()))
    if any((r.validation or {}).get("errors") for r in results):
        raise SystemExit(1)


def export_after_run(xdf: str | None, echo: Any = None) -> dict[str, Any] | None:
    """End of ``control-room run``: export the run's XDF to BIDS and NWB beside it, print where.

    Never fails the run: a missing library or an export error is printed and returned.
    """
    from shared_utils.export import ExportError, export_many, missing_dependencies

    say = echo or (lambda text: print(text, file=sys.stdout, flush=True))
    if not xdf:
        return None
    missing = missing_dependencies()
    if missing:
        say(f"export skipped: needs {', '.join(missing)} (pip install 'closedloop-mesh[export]')")
        return {"error": f"missing {missing}"}
    say(f"exporting {xdf} to BIDS and NWB ...")
    try:
        results = export_many(xdf, ["bids", "nwb"])
    except ExportError as exc:
        say(f"export failed: {exc}")
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the recording is safe; say what went wrong
        say(f"export failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {}
    for r in results:
        main = [f for f in r.files if f.suffix in (".nwb", ".vhdr")]
        where = main[0] if r.format == "nwb" and main else r.out
        say(f"  {r.format.upper():<4} {where}  ({len(r.skipped)} skipped, {r.seconds:.1f} s)")
        for s in r.skipped:
            say(f"       skipped {s}")
        for n in r.notes:
            say(f"       note: {n}")
        out[r.format] = str(where)
    return out
