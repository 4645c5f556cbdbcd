"""Validation of ``[macros.*]``: Dareplane's ``cmds`` tables and our ``[[steps]]``."""

from __future__ import annotations

from typing import Any

from control_room.checker import Checker
from control_room.schema import MacroSpec, ModuleSpec, Step
from shared_utils.checks import unknown_message

_MACRO_KEYS = {"name", "description", "default_json", "delay_s", "cmds", "steps", "finally"}
_KINDS = {"send": "send", "wait_s": "wait", "wait_stream": "wait_stream", "until": "until",
          "macro": "macro", "restart": "restart", "session_start": "send",
          "session_stop": "send"}  # fmt: skip
_STEP_KEYS = {
    "send", "cmd", "kwargs", "wait_s", "wait_stream", "until", "expect", "timeout_s",
    "every_s", "save_as", "delay_s", "continue_on_error", "macro", "label", "restart",
    "session_start", "session_stop",
}  # fmt: skip


def check_macros(
    ck: Checker, t: Any, modules: dict[str, ModuleSpec]
) -> tuple[dict[str, MacroSpec], float]:
    if not isinstance(t, dict):
        ck.error(("macros",), "must be a table of [macros.<name>] tables")
        return {}, 0.0
    sleep = 0.0
    if "globals" in t:
        g = t["globals"]
        if isinstance(g, dict):
            ck.unknown(g, ("macros", "globals"), {"sleep_s"})
            sleep = ck.number(g, ("macros", "globals"), "sleep_s", 0.0)
        else:
            ck.error(("macros", "globals"), "must be a table with sleep_s")
    out: dict[str, MacroSpec] = {}
    for name, m in t.items():
        if name == "globals":
            continue
        keys = ("macros", name)
        if not isinstance(m, dict):
            ck.error(keys, "must be a table")
            continue
        ck.unknown(m, keys, _MACRO_KEYS)
        spec = MacroSpec(
            name=name,
            label=ck.get(m, keys, "name", str, name),
            description=ck.get(m, keys, "description", str, ""),
            defaults=ck.get(m, keys, "default_json", dict, {}),
            delay_s=ck.number(m, keys, "delay_s", 0.0),
            line=ck.index.line(keys),
        )
        if "cmds" in m and "steps" in m:
            ck.error(keys, "use either cmds (Dareplane) or [[steps]], not both")
        cmds = ck.get(m, keys, "cmds", dict, {})
        for cname, c in cmds.items():
            step = _dareplane_cmd(ck, (*keys, "cmds", cname), c, modules)
            if step:
                spec.steps.append(step)
        steps = ck.get(m, keys, "steps", list, [])
        for i, s in enumerate(steps):
            step = _step(ck, (*keys, "steps", i), s, modules, t)
            if step:
                spec.steps.append(step)
        if not spec.steps:
            ck.error(
                keys, "macro has no steps (add cmds.com1 = [module, CMD] or [[macros.x.steps]])"
            )
        for i, s in enumerate(ck.get(m, keys, "finally", list, [])):
            step = _step(ck, (*keys, "finally", i), s, modules, t)
            if step:
                spec.finally_steps.append(step)
        out[name] = spec
    return out, sleep


def _check_target(
    ck: Checker, keys: tuple[Any, ...], module: str, modules: dict[str, ModuleSpec]
) -> None:
    if module not in modules and module != "control_room":
        ck.error(keys, unknown_message("module", module, modules))


def _dareplane_cmd(
    ck: Checker, keys: tuple[Any, ...], c: Any, modules: dict[str, ModuleSpec]
) -> Step | None:
    if not (isinstance(c, list) and len(c) >= 2 and all(isinstance(x, str) for x in c)):
        ck.error(keys, f"must be [module, PCOMM, 'dst=src', ...] (strings), got {c!r}")
        return None
    _check_target(ck, keys, c[0], modules)
    mapping = []
    for item in c[2:]:
        dst, sep, src = item.partition("=")
        if not sep or not dst or not src:
            ck.error(keys, f"argument mapping {item!r} must look like 'dst=src'")
            continue
        mapping.append((dst.strip(), src.strip()))
    return Step(
        kind="send", module=c[0], cmd=c[1], mapping=mapping, label=str(keys[-1]),
        line=ck.index.line(keys),
    )  # fmt: skip


def _step(
    ck: Checker,
    keys: tuple[Any, ...],
    s: Any,
    modules: dict[str, ModuleSpec],
    macros: dict[str, Any],
) -> Step | None:
    if not isinstance(s, dict):
        ck.error(keys, "each step must be a table")
        return None
    ck.unknown(s, keys, _STEP_KEYS)
    kinds = [k for k in _KINDS if k in s]
    if len(kinds) != 1:
        ck.error(
            keys,
            f"a step needs exactly one of {' / '.join(_KINDS)}"
            + (f", got {', '.join(kinds)}" if kinds else ""),
        )
        return None
    kind = kinds[0]
    step = Step(
        kind=_KINDS[kind],
        timeout_s=ck.number(s, keys, "timeout_s", 30.0, lo=0.0),
        every_s=ck.number(s, keys, "every_s", 0.2, lo=0.01),
        save_as=ck.get(s, keys, "save_as", str, None),
        delay_s=ck.number(s, keys, "delay_s", 0.0),
        continue_on_error=ck.get(s, keys, "continue_on_error", bool, False),
        label=ck.get(s, keys, "label", str, ""),
        line=ck.index.line(keys),
    )  # fmt: skip
    if kind in ("send", "until"):
        step.module = ck.get(s, keys, kind, str, "")
        _check_target(ck, (*keys, kind), step.module, modules)
        step.cmd = ck.get(s, keys, "cmd", str, None)
        if not step.cmd:
            ck.error((*keys, "cmd"), f"a {kind} step needs cmd = 'COMMAND'")
        step.kwargs = ck.get(s, keys, "kwargs", dict, None)
        step.expect = ck.get(s, keys, "expect", dict, {})
    elif kind in ("session_start", "session_stop"):
        _session_step(ck, keys, s, kind, step)
    elif kind == "wait_s":
        if isinstance(s["wait_s"], str) and s["wait_s"].startswith("$"):
            step.seconds = s["wait_s"]
        else:
            step.seconds = ck.number(s, keys, "wait_s", 0.0)
    elif kind == "wait_stream":
        step.stream = ck.get(s, keys, "wait_stream", str, "")
    elif kind == "restart":
        step.module = ck.get(s, keys, "restart", str, "")
        if step.module not in modules:
            ck.error((*keys, "restart"), unknown_message("module", step.module, modules))
    else:
        step.module = ck.get(s, keys, "macro", str, "")
        if step.module not in macros:
            ck.error((*keys, "macro"), unknown_message("macro", step.module, macros))
    return step


def _session_step(
    ck: Checker, keys: tuple[Any, ...], s: dict[str, Any], kind: str, step: Step
) -> None:
    """``session_start = {subject = "$subject", ...}`` / ``session_stop = true`` (or a table
    ``{interrupt = true, reason = "..."}``): the control room's SESSION_START / SESSION_STOP."""
    value = s[kind]
    step.module = "control_room"
    step.cmd = "SESSION_START" if kind == "session_start" else "SESSION_STOP"
    if kind == "session_start":
        if not isinstance(value, dict) or "subject" not in value:
            ck.error((*keys, kind), 'must be a table with the subject: {subject = "$subject"}')
        step.kwargs = value if isinstance(value, dict) else {}
    elif value is True:
        step.kwargs = {}
    elif isinstance(value, dict):
        step.kwargs = value
    else:
        ck.error((*keys, kind), "must be true or a table such as {interrupt = true}")
