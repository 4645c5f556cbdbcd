"""Run a named macro: templated commands, waits and checks, reporting every step.

Templating: ``"$name"`` or ``"${name.key}"`` inside string values. A string that is exactly one
template keeps the value's type (``"$streams"`` -> ``null``, ``"${fit.accuracy}"`` -> 0.93);
otherwise values are inserted as text. Names come from the macro's ``default_json``, the caller's
arguments (which win), earlier steps' ``save_as`` results, ``modules.<name>.host/port`` and
``date``/``time``. An unknown name fails the step and names what is available.

Dareplane's ``cmds`` steps keep their meaning: ``[module, PCOMM, 'dst=src']`` sends
``{dst: value_of_src}`` after ``$key`` substitution inside the defaults.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from control_room.config import MacroSpec, Step
from shared_utils.checks import unknown_message

_FULL = re.compile(r"^\$(?:\{([A-Za-z_][\w.\-]*)\}|([A-Za-z_]\w*))$")
_PART = re.compile(r"\$(?:\{([A-Za-z_][\w.\-]*)\}|([A-Za-z_]\w*))")
MAX_DEPTH = 5


class MacroError(Exception):
    """A step failed; the text says which step, what it did and why."""


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

    def describe(self) -> str:
        what = {
            "send": f"{self.module} {self.cmd}",
            "until": f"until {self.module} {self.cmd}",
        }.get(self.kind, self.label)
        return f"step {self.index} ({what})"


@dataclass
class MacroReport:
    macro: str
    ok: bool = True
    steps: list[StepReport] = field(default_factory=list)
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
        }


def lookup(ctx: dict[str, Any], dotted: str) -> Any:
    cur: Any = ctx
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            avail = ", ".join(sorted(k for k in ctx if not k.startswith("_")))
            raise MacroError(
                f"template ${{{dotted}}}: no value for {part!r} (known names: {avail})"
            )
    return cur


def render(value: Any, ctx: dict[str, Any]) -> Any:
    """Substitute templates in every string inside ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        m = _FULL.match(value)
        if m:
            return lookup(ctx, m.group(1) or m.group(2))
        return _PART.sub(lambda mm: str(lookup(ctx, mm.group(1) or mm.group(2))), value)
    if isinstance(value, dict):
        return {k: render(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, ctx) for v in value]
    return value


def check_expect(result: Any, expect: dict[str, Any]) -> str | None:
    """None if ``result`` matches every ``expect`` entry, else what differed.

    Keys are dotted paths into the result; a value is compared for equality, or a table of
    operators: ``{">=": 5}``, ``{"!=": "running"}``.
    """
    for key, want in expect.items():
        try:
            got = lookup(result if isinstance(result, dict) else {"result": result}, key)
        except MacroError:
            return f"{key} missing in reply"
        tests = want if isinstance(want, dict) else {"==": want}
        for op, ref in tests.items():
            try:
                ok = {
                    "==": lambda a, b: a == b,
                    "!=": lambda a, b: a != b,
                    ">=": lambda a, b: a >= b,
                    "<=": lambda a, b: a <= b,
                    ">": lambda a, b: a > b,
                    "<": lambda a, b: a < b,
                }[op](got, ref)
            except (KeyError, TypeError):
                return f"{key}: cannot test {got!r} {op} {ref!r}"
            if not ok:
                return f"{key} is {got!r}, want {op} {ref!r}"
    return None


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
    ) -> None:
        self.macros = macros
        self._send = send
        self._wait_stream = wait_stream
        self._module_info = module_info
        self._stop = stop_event
        self._step_sleep = step_sleep_s
        self._on_step = on_step

    def run(self, name: str, kwargs: dict[str, Any] | None = None, _depth: int = 0) -> MacroReport:
        """Run macro ``name``; raises :class:`MacroError` (with the report attached) on failure."""
        if name not in self.macros:
            raise MacroError(unknown_message("macro", name, self.macros))
        if _depth > MAX_DEPTH:
            raise MacroError(
                f"macro {name!r}: nesting deeper than {MAX_DEPTH} (a macro calls itself?)"
            )
        spec = self.macros[name]
        report = MacroReport(macro=name)
        t0 = time.monotonic()
        ctx = self._context(spec, kwargs or {})
        report.context = ctx
        if spec.delay_s:
            self._sleep(spec.delay_s)
        for i, step in enumerate(spec.steps, start=1):
            rep = StepReport(index=i, label=step.label or step.kind, kind=step.kind)
            report.steps.append(rep)
            s0 = time.monotonic()
            try:
                if self._stop.is_set():
                    raise MacroError("cancelled: the control room is shutting down")
                if step.delay_s:
                    self._sleep(step.delay_s)
                self._run_step(step, rep, ctx, _depth)
                rep.ok = True
            except Exception as exc:  # every failure becomes a clear step report
                rep.error = str(exc)
            rep.duration_s = round(time.monotonic() - s0, 3)
            if self._on_step is not None:
                self._on_step(name, rep)
            if not rep.ok and not step.continue_on_error:
                report.ok = False
                report.duration_s = round(time.monotonic() - t0, 3)
                done = f"{i - 1} of {len(spec.steps)} steps had completed"
                report.error = (
                    f"macro {name!r} stopped at {rep.describe()}"
                    f"{f' [line {step.line}]' if step.line else ''}: {rep.error} ({done})"
                )
                err = MacroError(report.error)
                err.report = report  # type: ignore[attr-defined]
                raise err
            if step.save_as:
                ctx[step.save_as] = rep.result
        report.duration_s = round(time.monotonic() - t0, 3)
        return report

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

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise MacroError("cancelled: the control room is shutting down")

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

    def _run_step(self, step: Step, rep: StepReport, ctx: dict[str, Any], depth: int) -> None:
        if step.kind == "send":
            if self._step_sleep:
                self._sleep(self._step_sleep)
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
            self._sleep(seconds)
            rep.result = {"waited_s": seconds}
        elif step.kind == "wait_stream":
            stream = render(step.stream, ctx)
            rep.kwargs = {"stream": stream}
            deadline = time.monotonic() + step.timeout_s
            while not self._wait_stream(stream, min(0.5, max(0.05, deadline - time.monotonic()))):
                if self._stop.is_set():
                    raise MacroError("cancelled: the control room is shutting down")
                if time.monotonic() >= deadline:
                    raise MacroError(
                        f"LSL stream {stream!r} did not appear within {step.timeout_s} s"
                    )
            rep.result = {"stream": stream, "found": True}
        elif step.kind == "until":
            self._until(step, rep, ctx)
        elif step.kind == "macro":
            sub = self.run(step.module or "", render(step.kwargs or {}, ctx), depth + 1)
            rep.result = sub.as_dict()

    def _until(self, step: Step, rep: StepReport, ctx: dict[str, Any]) -> None:
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
            self._sleep(step.every_s)
