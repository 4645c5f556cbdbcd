"""``control-room macro NAME``: run a macro in a running control room and print each step as it
finishes, as ``up`` does.

One connection subscribes to events and sends ``MACRO`` (its reply comes at the end); the control
room pushes a ``macro_step`` event per finished step on it. A second connection checks every second
that the control room still answers, so a control room whose host vanished gives a clear error
within seconds instead of a client waiting for a day. Ctrl-C sends ``CANCEL``: the running step
ends, the macro's finally steps still run and are printed; a second Ctrl-C leaves at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from shared_utils.errors import CommandFailed, ModuleError

PING_EVERY_S = 1.0
DEAD_AFTER_S = 6.0  # no answer to UP for this long: the control room is gone


def step_text(s: dict[str, Any], sub: str | None = None) -> str:
    """One step of a MACRO reply or ``macro_step`` event, as a line."""
    what = f"{s['module']} {s['cmd']}" if s.get("cmd") else s.get("label") or s.get("kind")
    if s.get("kind") == "restart":
        what = f"restart {s.get('module')}"
    index = f"{'finally ' if s.get('section') == 'finally' else ''}{s['index']:>3}"
    prefix = f"[{sub}] " if sub else ""
    if s.get("ok"):
        detail = f"ok {s['duration_s']:.2f}s  {json.dumps(s.get('result'), default=str)[:120]}"
    else:
        detail = f"FAILED {s['duration_s']:.2f}s  {s.get('error')}"
    return f"{prefix}{index} {what:<30} {detail}"


class _Printer:
    """Prints each step once, whether it came as an event or only in the final reply."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: set[tuple[str, str, int]] = set()

    def show(self, macro: str, step: dict[str, Any]) -> None:
        key = (macro, step.get("section", "steps"), step["index"])
        if key in self.seen:
            return
        self.seen.add(key)
        click.echo(step_text(step, None if macro == self.name else macro))

    def drain(self, events: Any) -> None:
        while events:
            ev = events.popleft()
            if ev.get("event") == "macro_step" and isinstance(ev.get("step"), dict):
                self.show(str(ev.get("macro")), ev["step"])


def follow_macro(
    connect: Callable[[float | None], Any], where: str, name: str, kwargs: dict[str, Any]
) -> None:
    """Run macro ``name`` and print it live; ``connect(timeout)`` opens an authenticated client."""
    worker, pinger = connect(None), connect(2.0)
    out: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            worker.send("SUBSCRIBE")
            out["reply"] = worker.call("MACRO", {"name": name, "kwargs": kwargs, "wait": True})
        except (ModuleError, OSError) as exc:
            out["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="macro", daemon=True).start()
    printer = _Printer(name)
    last_answer = next_ping = time.monotonic()
    cancelled = False
    try:
        while not done.is_set():
            try:
                done.wait(0.1)
                printer.drain(worker.events)
                if time.monotonic() >= next_ping:
                    next_ping = time.monotonic() + PING_EVERY_S
                    if pinger.up():
                        last_answer = time.monotonic()
                    elif time.monotonic() - last_answer > DEAD_AFTER_S:
                        raise click.ClickException(
                            f"the control room at {where} stopped answering (no reply for "
                            f"{DEAD_AFTER_S:.0f} s); macro {name!r} may still be running there"
                        )
            except KeyboardInterrupt:
                if cancelled:
                    raise click.ClickException(
                        f"interrupted; macro {name!r} may still be running its finally steps"
                    ) from None
                cancelled = True
                click.echo(f"cancelling macro {name!r} (its finally steps still run) ...")
                try:
                    pinger.send("CANCEL")
                except CommandFailed:
                    pass  # it had just finished
        printer.drain(worker.events)
    finally:
        pinger.close()
        worker.close()
    _finish(printer, name, out)


def _finish(printer: _Printer, name: str, out: dict[str, Any]) -> None:
    error = out.get("error")
    if error is None:
        res = out["reply"]
        for s in [*res.get("steps", []), *res.get("finally", [])]:
            printer.show(name, s)
        click.echo(f"macro {name} done in {res['duration_s']:.2f} s")
        return
    if isinstance(error, CommandFailed):
        text = error.error
        # every step was printed already: the first line (what failed, and why) is enough
        first, _, rest = text.partition("\n")
        raise click.ClickException(first if printer.seen else text)
    raise click.ClickException(f"lost the control room while macro {name!r} ran: {error}")
