"""What the ``control-room`` subcommands share: loading a config for ``up``/``run``, JSON
arguments, and a client of a running control room that authenticates and explains refusals.

The subcommands in cli.py, session_cmd.py, export_cmd.py and report_cmd.py use these; keeping
them apart lets those files import them without importing the whole command group.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from control_room.config import ConfigError, MeshConfig, load_config


def load_mesh(
    path: str, port: int | None = None, attach: bool = False, web_port: int | None = None
) -> MeshConfig:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise click.ClickException(f"invalid config:\n{exc}") from None
    for w in cfg.warnings:
        click.echo(f"warning: {w}", err=True)
    if port is not None:
        cfg.control.port = port
    if web_port is not None:  # -1: no dashboard
        cfg.control.web, cfg.control.web_port = web_port >= 0, max(web_port, 0)
    if attach:
        # The modules are already running (e.g. one container each under docker compose):
        # connect to them on their configured ports instead of starting them.
        for spec in cfg.modules.values():
            spec.kind, spec.argv, spec.restart, spec.display = "attach", [], "no", False
    return cfg


def json_arg(text: str | None, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{what} is not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(value, dict):
        raise click.BadParameter(f'{what} must be a JSON object like {{"key": 1}}')
    return value


def token_from(ctx: click.Context) -> str | None:
    """The mesh token for the control room's port: --token-file, else $MESH_TOKEN (never argv)."""
    from control_room.tokens import TOKEN_ENV, TokenError, read_token_file

    if ctx.obj.get("token_file"):
        try:
            return read_token_file(ctx.obj["token_file"])
        except TokenError as exc:
            raise click.ClickException(str(exc)) from None
    return os.environ.get(TOKEN_ENV) or None


def client(ctx: click.Context, timeout: float | None = 10.0) -> Any:
    from shared_utils.protocol.client import ModuleClient

    return ModuleClient(
        ctx.obj["host"],
        ctx.obj["port"],
        timeout=timeout,
        protocol="json",
        token=token_from(ctx),
        connect_timeout=3.0,
    )


def call(ctx: click.Context, cmd: str, timeout: float = 10.0, **kwargs: Any) -> Any:
    from shared_utils.errors import CommandFailed, ModuleUnreachable

    where = f"{ctx.obj['host']}:{ctx.obj['port']}"
    try:
        with client(ctx, timeout) as c:
            return c.send(cmd, **kwargs)
    except ModuleUnreachable as exc:
        raise click.ClickException(
            f"no control room answering at {where} ({exc}); start one with "
            "`control-room up CONFIG` or pass --port"
        ) from None
    except CommandFailed as exc:
        raise click.ClickException(auth_text(exc.error, where) or exc.error) from None


def auth_text(error: str, where: str) -> str | None:
    """A clear message when the control room refused us for want of the right token."""
    if "authentication required" in error:
        return (
            f"the control room at {where} requires the mesh token: set $MESH_TOKEN or pass "
            "--token-file PATH (it answered: authentication required)"
        )
    if "wrong token" in error:
        return (
            f"the control room at {where} refused the token from "
            "--token-file / $MESH_TOKEN: it is not the mesh token (wrong token)"
        )
    return None
