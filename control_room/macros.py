"""Run a named macro: templated commands, waits and checks, reporting every step.

Names for templates (control_room/templates.py) come from the macro's ``default_json``, the
caller's arguments (which win), earlier steps' ``save_as`` results, ``modules.<name>.host/port``
and ``date``/``time``.

``finally`` steps run after the steps whatever happened: a failing step, a cancel (Ctrl-C,
``CANCEL``, ``control-room down``) or an exception in the caller's thread. A failed calibration must
not leave the recording, the mock EEG and a stimulus block running until someone notices. Every
finally step runs even if an earlier one fails; their outcome is part of the report.

Dareplane's ``cmds`` steps keep their meaning: ``[module, PCOMM, 'dst=src']`` sends
``{dst: value_of_src}`` after ``$key`` substitution inside the defaults.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from control_room.config import MacroSpec, Step
from control_room.templates import MacroError, check_expect, lookup, render
from shared_utils.checks import unknown_message

__all__ = [
    "Cancel",
    "MacroError",
    "MacroReport",
    "MacroRunner",
    "StepReport",
    "check_expect",
    "lookup",
    "render",
]
MAX_DEPTH = 5


class Cancel(threading.Event):
    """Set to cancel a running macro; ``reason`` says why (shown in the failing step)."""

    reason = "cancelled"

    def cancel(self, reason: str) -> None:
        if not self.is_set():
            self.reason = reason
        self.set()


_NEVER = Cancel()  # finally steps are never cancelled: their waits end on their own timeouts


@dataclass
class StepReport:
    index: int
    label: str
    kind: str
    ok: bool = False
    module: str | None = None
    cmd: str | None = None
    kwargs: Any = None
    result: Any = None
    error: str | None = None
    duration_s: float = 0.0
    section: str = "steps"  # "steps" or "finally"

    def describe(self) -> str:
        what = {
            "send": f"{self.module} {self.cmd}",
            "until": f"until {self.module} {self.cmd}",
            "restart": f"restart {self.module}",
        }.get(self.kind, self.label)
        prefix = "finally step" if self.section == "finally" else "step"
        return f"{prefix} {self.index} ({what})"


@dataclass
class MacroReport:
    macro: str
    ok: bool = True
    steps: list[StepReport] = field(default_factory=list)
    finally_steps: list[StepReport] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0
    context: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "macro": self.macro,
            "ok": self.ok,
            "error": self.error,
            "duration_s": self.duration_s,
            "steps": [vars(s) for s in self.steps],
            "finally": [vars(s) for s in self.finally_steps],
        }


class MacroRunner:
    """Executes macros against a control room (anything with ``send`` and ``wait_stream``)."""

    def __init__(
        self,
        macros: dict[str, MacroSpec],
        send: Callable[..., Any],
        wait_stream: Callable[[str, float], bool],
        module_info: Callable[[], dict[str, dict[str, Any]]],
        stop_event: Any,
        step_sleep_s: float = 0.0,
        on_step: Callable[[str, StepReport], None] | None = None,
        restart: Callable[[str], Any] | None = None,
    ) -> None:
        self.macros = macros
        self._send = send
        self._wait_stream = wait_stream
        self._module_info = module_info
        self._stop = stop_event
        self._step_sleep = step_sleep_s
        self._on_step = on_step
        self._restart = restart

    def run(
        self,
        name: str,
        kwargs: dict[str, Any] | None = None,
        _depth: int = 0,
        cancel: threading.Event | None = None,
    ) -> MacroReport:
        """Run macro ``name``, then its finally steps; raises :class:`MacroError` (with the report
        attached) if a step or a finally step failed. ``cancel`` (default: the runner's stop
        event) ends the steps early; the finally steps still run."""
        if name not in self.macros:
            raise MacroError(unknown_message("macro", name, self.macros))
        if _depth > MAX_DEPTH:
            raise MacroError(
                f"macro {name!r}: nesting deeper than {MAX_DEPTH} (a macro calls itself?)"
            )
        cancel = cancel if cancel is not None else self._stop
        spec = self.macros[name]
        report = MacroReport(macro=name)
        t0 = time.monotonic()
        ctx = self._context(spec, kwargs or {})
        report.context = ctx
        try:
            self._run_steps(spec, report, ctx, _depth, cancel)
        finally:  # also on KeyboardInterrupt in the caller's thread, which then propagates
            self._run_finally(spec, report, ctx, _depth)
            report.duration_s = round(time.monotonic() - t0, 3)
        if not report.ok:
            err = MacroError(report.error)
            err.report = report  # type: ignore[attr-defined]
            raise err
        return report

    def _run_steps(
        self, spec: MacroSpec, report: MacroReport, ctx: dict[str, Any], depth: int, cancel: Any
    ) -> None:
        """The steps in order, up to the first failure (not ``continue_on_error``)."""
        for i, step in enumerate(spec.steps, start=1):
            pause = spec.delay_s if i == 1 else 0.0  # Dareplane's delay_s: once, before the first
            rep = self._one(spec.name, step, i, "steps", ctx, depth, cancel, pause)
            report.steps.append(rep)
            if not rep.ok and not step.continue_on_error:
                report.ok = False
                done = f"{i - 1} of {len(spec.steps)} steps had completed"
                report.error = (
                    f"macro {spec.name!r} stopped at {rep.describe()}"
                    f"{_line(step)}: {rep.error} ({done})"
                )
                return

    def _run_finally(
        self, spec: MacroSpec, report: MacroReport, ctx: dict[str, Any], depth: int
    ) -> None:
        """Every finally step, whatever the others did; failures are added to the report."""
        failures = []
        for i, step in enumerate(spec.finally_steps, start=1):
            rep = self._one(spec.name, step, i, "finally", ctx, depth, _NEVER)
            report.finally_steps.append(rep)
            if not rep.ok and not step.continue_on_error:
                failures.append(f"{rep.describe()}{_line(step)}: {rep.error}")
        if failures:
            report.ok = False
            text = "; ".join(failures)
            if report.error:
                report.error += f"; then {text}"
            else:
                report.error = f"macro {spec.name!r}: {text}"

    def _one(
        self,
        macro: str,
        step: Step,
        index: int,
        section: str,
        ctx: dict[str, Any],
        depth: int,
        cancel: Any,
        pause_s: float = 0.0,
    ) -> StepReport:
        """Run one step into a report (never raises: every failure becomes the step's error)."""
        rep = StepReport(index=index, label=step.label or step.kind, kind=step.kind)
        rep.section = section
        s0 = time.monotonic()
        try:
            if cancel.is_set():
                raise MacroError(f"cancelled: {getattr(cancel, 'reason', 'cancelled')}")
            for pause in (pause_s, step.delay_s):
                if pause:
                    self._sleep(pause, cancel)
            self._run_step(step, rep, ctx, depth, cancel)
            rep.ok = True
        except Exception as exc:  # every failure becomes a clear step report
            rep.error = str(exc)
        rep.duration_s = round(time.monotonic() - s0, 3)
        if rep.ok and step.save_as:
            ctx[step.save_as] = rep.result
        if self._on_step is not None:
            self._on_step(macro, rep)
        return rep

    def _context(self, spec: MacroSpec, kwargs: dict[str, Any]) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "date": time.strftime("%Y%m%d"),
            "time": time.strftime("%H%M%S"),
            "modules": self._module_info(),
        }
        defaults = {**spec.defaults, **kwargs}
        # Dareplane's evaluate_templates: one pass, in order, over the defaults themselves
        for k, v in defaults.items():
            ctx[k] = render(v, {**ctx, **defaults})
        return ctx

    @staticmethod
    def _sleep(seconds: float, cancel: Any) -> None:
        if cancel.wait(seconds):
            raise MacroError(f"cancelled: {getattr(cancel, 'reason', 'cancelled')}")

    def _payload(self, step: Step, ctx: dict[str, Any]) -> dict[str, Any]:
        if step.mapping is not None:
            missing = [src for _, src in step.mapping if src not in ctx]
            if missing:
                raise MacroError(
                    f"argument(s) {', '.join(missing)} not in the macro's default_json "
                    f"or the arguments given"
                )
            return {dst: ctx[src] for dst, src in step.mapping}
        return render(step.kwargs or {}, ctx)

    def _run_step(
        self, step: Step, rep: StepReport, ctx: dict[str, Any], depth: int, cancel: Any
    ) -> None:
        if step.kind == "send":
            if self._step_sleep:
                self._sleep(self._step_sleep, cancel)
            rep.module, rep.cmd = step.module, step.cmd
            rep.kwargs = self._payload(step, ctx)
            rep.result = self._send(
                step.module,
                step.cmd,
                rep.kwargs,
                source=f"macro:{rep.label}",
                timeout=step.timeout_s,
            )
            if step.expect:
                why = check_expect(rep.result, render(step.expect, ctx))
                if why:
                    raise MacroError(f"unexpected reply: {why}")
        elif step.kind == "wait":
            seconds = render(step.seconds, ctx)
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                raise MacroError(f"wait_s must be a number of seconds >= 0, got {seconds!r}")
            self._sleep(seconds, cancel)
            rep.result = {"waited_s": seconds}
        elif step.kind == "wait_stream":
            stream = render(step.stream, ctx)
            rep.kwargs = {"stream": stream}
            deadline = time.monotonic() + step.timeout_s
            while not self._wait_stream(stream, min(0.5, max(0.05, deadline - time.monotonic()))):
                if cancel.is_set():
                    raise MacroError(f"cancelled: {getattr(cancel, 'reason', 'cancelled')}")
                if time.monotonic() >= deadline:
                    raise MacroError(
                        f"LSL stream {stream!r} did not appear within {step.timeout_s} s"
                    )
            rep.result = {"stream": stream, "found": True}
        elif step.kind == "until":
            self._until(step, rep, ctx, cancel)
        elif step.kind == "restart":
            rep.module = step.module
            if self._restart is None:
                raise MacroError("restart steps need a control room")
            rep.result = self._restart(step.module)
        elif step.kind == "macro":
            sub = self.run(step.module or "", render(step.kwargs or {}, ctx), depth + 1, cancel)
            rep.result = sub.as_dict()

    def _until(self, step: Step, rep: StepReport, ctx: dict[str, Any], cancel: Any) -> None:
        """Repeat a command until it succeeds (and its reply matches ``expect``)."""
        rep.module, rep.cmd = step.module, step.cmd
        rep.kwargs = self._payload(step, ctx)
        expect = render(step.expect, ctx)
        deadline = time.monotonic() + step.timeout_s
        last = "no attempt"
        polls = 0
        while True:
            polls += 1
            try:
                result = self._send(
                    step.module, step.cmd, rep.kwargs, source=f"macro:{rep.label}",
                    timeout=max(1.0, min(10.0, step.timeout_s)), quiet=True,
                )  # fmt: skip
                why = check_expect(result, expect) if expect else None
                if why is None:
                    rep.result = result
                    return
                last = why
            except Exception as exc:
                last = str(exc)
            if time.monotonic() + step.every_s > deadline:
                raise MacroError(
                    f"{step.module} {step.cmd} did not succeed within {step.timeout_s} s "
                    f"({polls} tries); last: {last}"
                )
            self._sleep(step.every_s, cancel)


def _line(step: Step) -> str:
    return f" [line {step.line}]" if step.line else ""
