"""A module whose session handlers misbehave on purpose, for the session tests.

Built on DefaultServer like every service: ``--hang MSG`` (its MSG handler sleeps 30 s: a rig
that never answers), ``--refuse MSG`` (its MSG handler refuses), ``--claim-main-sync`` (EXPINFO
claims the role and proposes ``<today>_7_<subject>``), ``--record FILE`` (append every EXP*
message it handles to FILE, so a test sees what reached it and how often).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from typing import Any

import click

from shared_utils.errors import CommandError
from shared_utils.module_cli import module_options, run_module

MESSAGES = ("EXPINFO", "EXPINIT", "EXPSTART", "EXPEND", "EXPINTERRUPT", "EXPCLEANUP")


@click.command()
@module_options(default_port=0)
@click.option("--hang", multiple=True)
@click.option("--refuse", multiple=True)
@click.option("--claim-main-sync", is_flag=True)
@click.option("--record", default=None)
def main(
    hang: tuple[str, ...], refuse: tuple[str, ...], claim_main_sync: bool, record: str | None,
    **common: Any,
) -> None:  # fmt: skip
    def handler(msg: str) -> Any:
        def handle(**kwargs: Any) -> dict[str, Any]:
            if record:
                with open(record, "a") as f:
                    f.write(json.dumps({"msg": msg, "kwargs": kwargs}) + "\n")
            if msg in hang:
                time.sleep(30)
            if msg in refuse:
                raise CommandError(f"{msg} refused on purpose")
            if msg == "EXPINFO" and claim_main_sync and kwargs.get("claim_main_sync") is not False:
                ref = f"{_dt.date.today().isoformat()}_7_{kwargs.get('subject')}"
                return {"main_sync": True, "exp_ref": ref}
            return {}

        handle.__doc__ = f"{msg} as configured on the command line."
        return handle

    run_module("exp_module", {m: handler(m) for m in MESSAGES}, **common)


if __name__ == "__main__":
    main()
