"""``control-room session start|stop|status``: a running control room's sessions (docs/sessions.md).

Thin clients of the control room's ``SESSION_START``, ``SESSION_STOP`` and ``SESSION_STATUS``,
like the other client subcommands; the lifecycle itself is control_room/session.py.
"""

from __future__ import annotations

import json
from typing import Any

import click


def _call(ctx: click.Context, cmd: str, timeout: float, **kwargs: Any) -> Any:
    from control_room.cli_common import call

    return call(ctx, cmd, timeout, **kwargs)


def print_summary(s: dict[str, Any]) -> None:
    """The session as people read it: reference, status, folder, each participant."""
    if not s.get("exp_ref"):
        last = s.get("last")
        click.echo(
            "no session running" + (f"; last: {last['exp_ref']} ({last['status']})" if last else "")
        )
        if last:
            print_summary(last)
        return
    repeat = " (already so: nothing sent again)" if s.get("repeat") else ""
    click.echo(f"session {s['exp_ref']}: {s['status']}{repeat}  main sync: {s.get('main_sync')}")
    click.echo(f"folder: {s.get('folder')}")
    for name, m in (s.get("modules") or {}).items():
        files = ", ".join(m.get("files") or []) or "-"
        err = f"  ERROR: {m['error']}" if m.get("error") else ""
        click.echo(f"  {name:<18}{m.get('kind') or '-':<9}{m.get('status') or '-':<14}{files}{err}")
    if s.get("interrupted"):
        i = s["interrupted"]
        click.echo(f"interrupted: {i.get('error')}: {i.get('message')}")
    for p in s.get("problems") or []:
        click.echo(f"problem: {p}")


@click.group()
def session() -> None:
    """Start, stop and show experiment sessions (one folder per session, every module in it)."""


@session.command()
@click.option("--subject", required=True, help="Subject (animal or participant) name.")
@click.option("--project", default=None, help="Project name (session.json, NWB description).")
@click.option(
    "--procedure", "procedures", multiple=True, help="A procedure of this session (repeatable)."
)
@click.option(
    "--exp-ref", default=None, help="Use this yyyy-mm-dd_N_subject instead of the main sync's."
)
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the start.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw reply.")
@click.pass_context
def start(
    ctx: click.Context,
    subject: str,
    project: str | None,
    procedures: tuple[str, ...],
    exp_ref: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """EXPINFO, EXPINIT and EXPSTART to every module and rig; prints the session folder."""
    res = _call(ctx, "SESSION_START", timeout, subject=subject, project=project,
                procedures=list(procedures), exp_ref=exp_ref)  # fmt: skip
    click.echo(json.dumps(res, indent=2)) if as_json else print_summary(res)


@session.command()
@click.option("--interrupt", is_flag=True, help="Send EXPINTERRUPT instead of EXPEND.")
@click.option("--reason", default=None, help="Why (kept in session.json).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the stop.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw reply.")
@click.pass_context
def stop(
    ctx: click.Context, interrupt: bool, reason: str | None, timeout: float, as_json: bool
) -> None:
    """EXPEND (or EXPINTERRUPT) then EXPCLEANUP to everyone; exit 1 unless it ended cleanly."""
    res = _call(ctx, "SESSION_STOP", timeout, interrupt=interrupt, reason=reason)
    click.echo(json.dumps(res, indent=2)) if as_json else print_summary(res)
    if res.get("status") != "ended" or res.get("problems"):
        raise SystemExit(1)


@session.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw reply.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The running session (or the last one)."""
    res = _call(ctx, "SESSION_STATUS", 10.0)
    click.echo(json.dumps(res, indent=2)) if as_json else print_summary(res)
