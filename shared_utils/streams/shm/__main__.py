"""``python -m shared_utils.streams.shm list|sweep``: see the rings on this host, remove stale ones."""

from __future__ import annotations

import json

import click

from shared_utils.streams.shm import list_rings, sweep_stale


@click.group()
def main() -> None:
    """Shared-memory rings of this host (in /dev/shm)."""


@main.command("list")
@click.option(
    "--session", default=None, help="session name (default: $MESH_SHM_SESSION or 'default')"
)
@click.option("--all-sessions", is_flag=True, help="every session's rings")
def list_cmd(session: str | None, all_sessions: bool) -> None:
    """Print every ring as one JSON line: shape, writer pid and liveness, readers."""
    for ring in list_rings(session, all_sessions):
        click.echo(json.dumps(ring))


@main.command()
@click.option(
    "--session", default=None, help="session name (default: $MESH_SHM_SESSION or 'default')"
)
@click.option("--all-sessions", is_flag=True, help="every session's rings")
def sweep(session: str | None, all_sessions: bool) -> None:
    """Remove the rings whose writer is gone (safe while live writers run)."""
    removed = sweep_stale(session, all_sessions)
    for r in removed:
        click.echo(json.dumps(r))
    click.echo(f"removed {len(removed)} stale ring(s)", err=True)


if __name__ == "__main__":
    main()
