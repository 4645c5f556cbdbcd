"""A fixed-rate loop for periodic work (decoders, controllers, stimulus updates).

Drop-in for ``dareplane_utils.general.event_loop.EventLoop`` (same constructor and method names),
without its two problems: there the period becomes ``dt_s`` plus the callbacks' runtime, and one
raising callback ends the loop. Here tick ``k`` is due at ``t0 + k * dt_s`` whatever the callbacks
cost; a tick that runs past the next deadline is counted as an overrun, the loop catches up, and
deadlines missed by a whole period are skipped (counted) rather than run in a burst. A raising
callback is logged and the others keep running.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from shared_utils.logging import get_logger
from shared_utils.streams.timing import sleep_s, sleep_until

__all__ = ["DelayedCallback", "EventLoop", "sleep_s"]

log = get_logger("shared_utils.streams.event_loop")


def _wants_ctx(fn: Callable[..., Any]) -> bool:
    """True if ``fn`` accepts a ``ctx`` keyword (named, keyword-only, or via ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    return any(
        (p.name == "ctx" and p.kind is not p.POSITIONAL_ONLY) or p.kind is p.VAR_KEYWORD
        for p in params
    )


class _Callback:
    """A user callable, called as ``fn(ctx=ctx)`` if it takes ``ctx`` and ``fn()`` otherwise."""

    __slots__ = ("fn", "pass_ctx", "name", "failures", "last_report")

    def __init__(self, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"callback must be callable, got {fn!r}")
        self.fn = fn.fn if isinstance(fn, _Callback) else fn
        self.pass_ctx = _wants_ctx(self.fn)
        self.name = getattr(self.fn, "__qualname__", repr(self.fn))
        self.failures = 0
        self.last_report = 0.0

    def __call__(self, ctx: Any = None) -> Any:
        return self.fn(ctx=ctx) if self.pass_ctx else self.fn()


@dataclass
class DelayedCallback:
    """A once-callback due ``delay_s`` after ``start_ts`` (perf_counter time, taken when added)."""

    cb: Callable[..., Any]
    delay_s: float
    start_ts: float = field(default_factory=time.perf_counter)

    @property
    def due(self) -> float:
        return self.start_ts + self.delay_s


class EventLoop:
    """Call periodic, once and delayed callbacks every ``dt_s`` seconds until ``stop_event``.

    Callbacks receive ``ctx=`` if their signature takes it. Callbacks may be added from any
    thread, also while the loop runs. Counters: ``ticks``, ``overruns`` (ticks that ran past the
    next deadline), ``skipped`` (deadlines dropped after falling a whole period behind), ``errors``.
    """

    def __init__(self, dt_s: float, stop_event: threading.Event | None = None, ctx: Any = None):
        if not dt_s > 0:
            raise ValueError(f"dt_s must be > 0 seconds, got {dt_s!r}")
        self.dt_s = float(dt_s)
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.ctx = ctx
        self.callbacks: list[_Callback] = []
        self.callbacks_once: list[_Callback] = []
        self.delayed_callbacks_once: list[DelayedCallback] = []
        self.now = 0.0
        self.last_run_ts = time.perf_counter()
        self.ticks = 0
        self.overruns = 0
        self.skipped = 0
        self.errors = 0
        self._lock = threading.Lock()

    # -- registering (Dareplane-compatible names) ----------------------------------------------

    def validate_callback(self, cb: Callable[..., Any]) -> _Callback:
        """Wrap ``cb`` so it can be called as ``cb(ctx=...)`` whether or not it takes ``ctx``."""
        return _Callback(cb)

    def add_callback(self, cb: Callable[..., Any]) -> None:
        """Run ``cb`` on every tick."""
        with self._lock:
            self.callbacks.append(self.validate_callback(cb))

    def add_callbacks(self, cbs: Iterable[Callable[..., Any]]) -> None:
        for cb in cbs:
            self.add_callback(cb)

    def add_callback_once(self, cb: Callable[..., Any]) -> None:
        """Run ``cb`` once, on the next tick."""
        with self._lock:
            self.callbacks_once.append(self.validate_callback(cb))

    def add_callbacks_once(self, cbs: Iterable[Callable[..., Any]]) -> None:
        for cb in cbs:
            self.add_callback_once(cb)

    def add_delayed_callback_once(self, cb: Callable[..., Any], dt: float = 0.0) -> None:
        """Run ``cb`` once, on the first tick at least ``dt`` seconds from now."""
        with self._lock:
            self.delayed_callbacks_once.append(DelayedCallback(self.validate_callback(cb), dt))

    add_delayed_callback = add_delayed_callback_once

    def remove_callback(self, cb: Callable[..., Any]) -> bool:
        """Stop calling periodic callback ``cb``; returns whether it was registered."""
        fn = cb.fn if isinstance(cb, _Callback) else cb
        with self._lock:
            kept = [c for c in self.callbacks if c.fn is not fn]
            removed = len(kept) != len(self.callbacks)
            self.callbacks = kept
        return removed

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current tick."""
        self.stop_event.set()

    # -- running ----------------------------------------------------------------------------

    def run(self) -> None:
        """Tick every ``dt_s`` (first tick immediately) until ``stop_event`` is set."""
        dt = self.dt_s
        deadline = time.perf_counter()
        while not self.stop_event.is_set():
            if not sleep_until(deadline, self.stop_event):
                break
            self.now = time.perf_counter()
            self.last_run_ts = self.now
            self.process_callbacks()
            self.ticks += 1
            deadline += dt
            late = time.perf_counter() - deadline
            if late > 0:
                self.overruns += 1
                behind = int(late // dt)
                if behind:  # a whole period lost: skip those deadlines instead of bursting
                    self.skipped += behind
                    deadline += behind * dt

    def process_callbacks(self) -> None:
        """One tick: once-callbacks, due delayed callbacks, then the periodic ones."""
        now = self.now or time.perf_counter()
        with self._lock:
            once, self.callbacks_once = self.callbacks_once, []
            due = [d for d in self.delayed_callbacks_once if d.due <= now]
            if due:
                self.delayed_callbacks_once = [
                    d for d in self.delayed_callbacks_once if d.due > now
                ]
            periodic = list(self.callbacks)
        for cb in once:
            self._call(cb)
        for d in due:
            self._call(d.cb if isinstance(d.cb, _Callback) else _Callback(d.cb))
        for cb in periodic:
            self._call(cb)

    def _call(self, cb: _Callback) -> None:
        """Run one callback; an exception is logged (rate-limited) and does not stop the loop."""
        try:
            cb(ctx=self.ctx)
        except Exception:
            self.errors += 1
            cb.failures += 1
            now = time.monotonic()
            if cb.failures == 1:
                log.exception("event loop callback failed", callback=cb.name)
                cb.last_report = now
            elif now - cb.last_report >= 1.0:
                log.exception(
                    "event loop callback keeps failing", callback=cb.name, failures=cb.failures
                )
                cb.last_report = now
