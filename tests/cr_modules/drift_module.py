"""A module on a "host" whose clock the test steps, for tests/test_sessions_clocks.py.

The control room measures each host's clock offset from the LSL clock a module of ours puts into
its STATUS reply (``lsl_clock``, read by the built-in STATUS with ``pylsl.local_clock()``;
control_room/clocks.py). On one machine no real host clock can drift against another: every
process reads the same kernel CLOCK_MONOTONIC, and a time namespace's offset is fixed before its
first process runs. So this module is the drifting host: ``SHIFT_CLOCK|{"ms": X}`` sets this
process's LSL clock X ms ahead of the machine's, as a rig's clock is after an NTP step or a
suspended VM, and from then on every reader of ``pylsl.local_clock()`` in this process (the
built-in STATUS among them) sees the shifted clock. The module runtime, the STATUS reply, the
session messages and everything in the control room are the real ones.
"""

from __future__ import annotations

from typing import Any

import click
import pylsl

from shared_utils.errors import CommandError
from shared_utils.module_cli import module_options, run_module

_machine_clock = pylsl.local_clock
_shift_s = [0.0]


def _host_clock() -> float:
    return _machine_clock() + _shift_s[0]


def shift_clock(ms: Any) -> dict[str, float]:
    """Run this host's LSL clock ``ms`` milliseconds ahead of the machine's (0: back in step)."""
    if isinstance(ms, bool) or not isinstance(ms, int | float) or abs(ms) > 60_000:
        raise CommandError("SHIFT_CLOCK: ms must be a number of milliseconds within +-60000")
    _shift_s[0] = float(ms) / 1000
    return {"shift_ms": float(ms), "lsl_clock": _host_clock()}


@click.command()
@module_options(default_port=0)
def main(**common: Any) -> None:
    pylsl.local_clock = _host_clock  # this process's LSL clock is the host's, shift included
    run_module("drift_module", {"SHIFT_CLOCK": shift_clock}, **common)


if __name__ == "__main__":
    main()
