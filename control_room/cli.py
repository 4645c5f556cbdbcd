"""``control-room`` command line.

``up`` and ``run`` host a control room in this process; every other subcommand is a thin client
of a running one (its port: ``--port`` or ``$CONTROL_ROOM_PORT``, default 9010), so a second
terminal, a script or a CI job all drive the same session.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from control_room import export_cmd, session_cmd
from control_room.cli_common import call, client, json_arg, load_mesh, token_from
from control_room.config import MeshConfig
from control_room.stop_signals import StopSignals

DEFAULT_PORT = 9010
_ATTACH_HELP = "Connect to modules already running on the configured ports (docker compose)."
_WEB_HELP = "Dashboard port (default [control_room] web_port, 9030; 0 = any free port, -1 = none)."


@click.group()
@click.option("--host", default="127.0.0.1", show_default=True, help="Control room address.")
@click.option(
    "--port",
    type=int,
    default=DEFAULT_PORT,
    envvar="CONTROL_ROOM_PORT",
    show_default=True,
    help="Control room port (for the client subcommands).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    envvar="MESH_TOKEN_FILE",
    default=None,
    help="File whose first line is the mesh token (else $MESH_TOKEN); sent with AUTH.",
)
@click.pass_context
def main(ctx: click.Context, host: str, port: int, token_file: str | None) -> None:
    """Start, watch and command a mesh of modules."""
    ctx.ensure_object(dict)
    ctx.obj.update(host=host, port=port, token_file=token_file)


# -- hosting -----------------------------------------------------------------------------------------


def _host(cfg: MeshConfig) -> Any:
    from control_room.handle import StartError
    from control_room.room import ControlRoom

    room = ControlRoom(cfg, console=sys.stdout)
    signalled: list[str] = []

    def on_stop(name: str) -> None:  # on a normal thread, once (control_room/stop_signals.py)
        signalled.append(name)
        click.echo(f"\n{name}: shutting down")
        room.stop_event.set()
        room.cancel_macro(f"{name} received")  # its finally steps still run
        if room.startup_s is None and room.supervisor is not None:
            room.supervisor.request_stop()  # still starting: cancel the start
        room.down_requested.set()

    StopSignals(on_stop)
    click.echo(f"starting {len(cfg.modules)} modules from {cfg.path}")
    try:
        startup = room.up()
    except StartError as exc:
        if signalled:  # a stop signal cancelled the start
            raise click.ClickException(
                f"interrupted ({signalled[0]}) during start-up; nothing left running"
            ) from None
        raise click.ClickException(f"start-up failed, nothing left running:\n{exc}") from None
    click.echo(f"all {len(cfg.modules)} modules ready in {startup:.2f} s")
    return room


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--port", "cr_port", type=int, default=None, help="Override [control_room] port.")
@click.option("--attach", is_flag=True, help=_ATTACH_HELP)
@click.option("--web-port", type=int, default=None, help=_WEB_HELP)
def up(config: str, cr_port: int | None, attach: bool, web_port: int | None) -> None:
    """Start the mesh in CONFIG and keep it running (Ctrl-C or `control-room down` stops it)."""
    cfg = load_mesh(config, cr_port, attach, web_port)
    room = _host(cfg)
    _print_status(room.status())
    click.echo("running; Ctrl-C or `control-room down` to stop")
    while not room.down_requested.wait(0.5):
        pass
    _shutdown(room)


def _shutdown(room: Any) -> dict[str, list[str]]:
    click.echo("shutting down ...")
    t0 = time.monotonic()
    steps = room.down()
    bad = {n: s for n, s in steps.items() if any(x in ("SIGTERM", "SIGKILL") for x in s)}
    for n, s in bad.items():
        click.echo(f"  {n}: needed {', '.join(s)}")
    click.echo(f"stopped in {time.monotonic() - t0:.2f} s; log file {room.status()['log_file']}")
    return steps


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--macro",
    "macro_name",
    default=None,
    help="Macro to run (default: [control_room] run_macro, else 'experiment').",
)
@click.option("--args", "macro_args", default=None, help="JSON object of macro arguments.")
@click.option("--port", "cr_port", type=int, default=None, help="Override [control_room] port.")
@click.option("--attach", is_flag=True, help=_ATTACH_HELP)
@click.option("--web-port", type=int, default=None, help=_WEB_HELP)
def run(
    config: str,
    macro_name: str | None,
    macro_args: str | None,
    cr_port: int | None,
    attach: bool,
    web_port: int | None,
) -> None:
    """Start the mesh, run its experiment macro, shut down and print a summary."""
    from control_room.macros import MacroError
    from control_room.summary import collect_summary, print_summary, read_xdf

    cfg = load_mesh(config, cr_port, attach, web_port)
    name = macro_name or cfg.control.run_macro or "experiment"
    if name not in cfg.macros:
        raise click.ClickException(
            f"no macro {name!r} in {config}; macros: {', '.join(cfg.macros)}"
        )
    kwargs = json_arg(macro_args, "--args")
    room = _host(cfg)
    report, error = None, None
    t0 = time.monotonic()
    try:
        click.echo(f"running macro {name!r} ({len(cfg.macros[name].steps)} steps)")
        report = room.run_macro(name, kwargs)
    except MacroError as exc:
        error = str(exc)
        report = getattr(exc, "report", None)
    summary = collect_summary(room, report, time.monotonic() - t0)
    steps = _shutdown(room)
    for n, info in room.module_info().items():  # how each module ended
        summary["modules"][n].update(state=info["state"], stop=steps.get(n))
    summary["xdf"] = read_xdf(summary["file"])
    from control_room.report import report_after_run

    summary["report"] = report_after_run(summary)  # {"html","skipped","seconds"} | {"error"} | None
    summary["export"] = export_cmd.export_after_run(summary["file"])  # BIDS + NWB beside the XDF
    print_summary(summary, error)
    if error:
        raise SystemExit(1)


# -- client subcommands ------------------------------------------------------------------------------


def _print_status(st: dict[str, Any]) -> None:
    click.echo(f"{'module':<18}{'state':<14}{'port':>6} {'pid':>8} {'restarts':>8}  ready_s")
    for m in st.get("modules", {}).values():
        ready = m["ready_s"] if m["ready_s"] is not None else "-"
        # a module on another host: where, how, and its pid there (pid above is the local client)
        where = f"  on {m['host']} via {m['launch']}" if m.get("launch", "local") != "local" else ""
        if m.get("remote_pid"):
            where += f" (pid {m['remote_pid']} there)"
        click.echo(
            f"{m['name']:<18}{m['state']:<14}{m['port'] or '-':>6} {m['pid'] or '-':>8} "
            f"{m['restarts']:>8}  {ready:<7}{where}"
        )
    for host, c in (st.get("clocks") or {}).items():
        if not c.get("same_host"):
            click.echo(
                f"clock of {host}: offset {c['offset_ms']:+.3f} ms (+-{c['uncertainty_ms']:.3f}), "
                f"drift {c['drift_ms']:+.3f} ms"
                + (f"  WARNING: {c['warning']}" if c.get("warning") else "")
            )
    if st.get("running_macro"):
        click.echo(f"running macro: {st['running_macro']}")
    click.echo(
        f"log file: {st.get('log_file')}   events: {st.get('pub')}   markers: {st.get('marker_stream')}"
    )
    if st.get("web"):
        click.echo(f"dashboard: {st['web']}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw STATUS reply.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show every module's state."""
    st = call(ctx, "STATUS")
    if as_json:
        click.echo(json.dumps(st, indent=2))
    else:
        _print_status(st)


@main.command()
@click.argument("module")
@click.argument("cmd")
@click.argument("payload", required=False)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the reply.")
@click.pass_context
def send(ctx: click.Context, module: str, cmd: str, payload: str | None, timeout: float) -> None:
    """Send CMD (with a JSON PAYLOAD) to MODULE through the control room."""
    kwargs = json_arg(payload, "PAYLOAD")
    res = call(
        ctx, "SEND", timeout + 2, module=module, command=cmd, kwargs=kwargs, timeout_s=timeout
    )
    click.echo(json.dumps(res, indent=2, default=str))


@main.command()
@click.argument("name")
@click.argument("payload", required=False)
@click.option("--no-wait", is_flag=True, help="Start it and return at once.")
@click.pass_context
def macro(ctx: click.Context, name: str, payload: str | None, no_wait: bool) -> None:
    """Run macro NAME (optional JSON arguments) and print each step's reply."""
    from control_room.follow import follow_macro

    kwargs = json_arg(payload, "PAYLOAD")
    if no_wait:
        call(ctx, "MACRO", name=name, kwargs=kwargs, wait=False)
        click.echo(f"macro {name} started")
        return
    where = f"{ctx.obj['host']}:{ctx.obj['port']}"
    call(ctx, "UP")  # a clear error now if there is no control room (or the token is wrong)
    follow_macro(lambda timeout: client(ctx, timeout), where, name, kwargs)


@main.command()
@click.argument("module")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for ready.")
@click.pass_context
def restart(ctx: click.Context, module: str, timeout: float) -> None:
    """Restart MODULE (also one that failed after its restart budget) and wait until ready."""
    info = call(ctx, "RESTART", timeout, module=module)
    click.echo(f"{module} {info['state']}: pid {info['pid']}, ready in {info['ready_s']} s")


@main.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records.")
@click.option("--module", "module", default=None, help="Only this module's records.")
@click.option("-n", "n", default=50, show_default=True, help="How many recent records.")
@click.pass_context
def logs(ctx: click.Context, follow: bool, module: str | None, n: int) -> None:
    """Print recent log records (module output included)."""
    from shared_utils.logging.receiver import format_line

    res = call(ctx, "LOGS", module=module, n=n)
    for rec in res["records"]:
        click.echo(format_line(rec))
    since = res["next"]
    while follow:
        time.sleep(0.3)
        try:
            res = call(ctx, "LOGS", module=module, since=since, n=0)
        except click.ClickException:
            click.echo("control room gone")
            return
        for rec in res["records"]:
            click.echo(format_line(rec))
        since = res["next"]


@main.command()
@click.argument("target")
@click.option("--timeout", default=2.0, show_default=True)
@click.option("--strict", is_flag=True, help="Recommended rules fail too (not only warn).")
@click.pass_context
def check(ctx: click.Context, target: str, timeout: float, strict: bool) -> None:
    """Check the module at HOST:PORT against the protocol rules (AUTH with the mesh token;
    docs/protocol.md section 8)."""
    from shared_utils.protocol.conformance import failures, run_checks, summary

    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {target!r}")
    import socket

    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise click.ClickException(f"cannot connect to {target}: {exc}") from None
    results = run_checks(host or "127.0.0.1", int(port), timeout, token=token_from(ctx))
    for r in results:
        click.echo(r.line())
    click.echo(summary(target, results, strict))
    if failures(results, strict):
        raise SystemExit(1)


@main.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Shut down the running control room and all its modules."""
    call(ctx, "DOWN")
    click.echo("control room shutting down")


from control_room.report_cmd import report  # noqa: E402 - subcommand kept in its own file
from shared_utils.streams.view import view  # noqa: E402 - a live stream in the terminal

main.add_command(report)
main.add_command(export_cmd.export)  # control-room export SESSION_OR_XDF --to bids|nwb
main.add_command(session_cmd.session)  # control-room session start|stop|status
main.add_command(view)  # control-room view [STREAM]
