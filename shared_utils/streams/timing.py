"""Precise waits that do not burn a core.

The OS sleep is accurate to well under a millisecond on Linux, but not to microseconds, and a pure
busy-wait (Dareplane's ``sleep_s`` spins for up to 30 ms per call) keeps a core at 100 % in every
loop that polls with it. Here the thread sleeps until shortly before the deadline and only then
yields in a tight loop, so a 100 ms wait costs about a millisecond of CPU.
"""

from __future__ import annotations

import threading
import time

__all__ = ["SPIN_S", "sleep_s", "sleep_until"]

SPIN_S = 0.0015  # the last stretch before a deadline is spent yielding, not sleeping


def sleep_until(deadline: float, stop_event: threading.Event | None = None) -> bool:
    """Wait until ``time.perf_counter() >= deadline``; returns False if ``stop_event`` got set.

    With a ``stop_event`` the coarse part of the wait wakes as soon as the event is set, so loops
    with long periods still stop promptly.
    """
    remaining = deadline - time.perf_counter()
    if remaining > SPIN_S:
        if stop_event is None:
            time.sleep(remaining - SPIN_S)
        elif stop_event.wait(remaining - SPIN_S):
            return False
    while time.perf_counter() < deadline:
        time.sleep(0)  # releases the GIL so other threads run during the spin
    return stop_event is None or not stop_event.is_set()


def sleep_s(s: float, partial_sleep_threshold: float = 0.0, nsteps: int = 0) -> None:
    """Sleep ``s`` seconds with sub-millisecond precision.

    Same name and signature as Dareplane's ``sleep_s`` so ported code only changes its import;
    the two tuning arguments are accepted and ignored (nothing here needs tuning).
    """
    if s > 0:
        sleep_until(time.perf_counter() + s)
