"""Command table: one place that knows each command's arguments, types, defaults and help.

Built from plain functions (Dareplane's ``pcommand_map``), it validates keyword arguments before a
call, so a wrong name or type is answered with a message naming the field, and it feeds ``HELP``.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared_utils.checks import did_you_mean, hint, short
from shared_utils.errors import CommandError

_SIMPLE_TYPES: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "list",
    dict: "dict",
}


@dataclass
class Param:
    """One keyword argument of a command."""

    name: str
    required: bool
    default: Any
    types: tuple[type, ...] | None  # None: not checked
    nullable: bool
    type_name: str

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type_name, "required": self.required}
        if not self.required:
            d["default"] = self.default
        return d


@dataclass
class Command:
    """A callable plus what is known about its arguments."""

    name: str
    func: Callable[..., Any]
    params: dict[str, Param]
    accepts_any: bool  # has **kwargs
    doc: str

    def help(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "doc": self.doc,
            "kwargs": [p.describe() for p in self.params.values()],
            "accepts_extra": self.accepts_any,
        }

    def check_values(self, kwargs: dict[str, Any]) -> None:
        """The checks every argument gets, whatever the signature (see :meth:`validate`)."""
        for k, v in kwargs.items():
            if k in _RESERVED:
                raise CommandError(f"{self.name}: {k!r} cannot be an argument name")
            problem = _unusable(v)
            if problem:
                raise CommandError(f"{self.name}: argument {k!r} {problem}")

    def validate(self, kwargs: dict[str, Any]) -> None:
        """Raise :class:`CommandError` naming any unknown, missing or mistyped argument.

        Whatever the annotations say, numbers must be finite and fit in 64 bits and strings must
        not hold NUL bytes, at any depth: such values cannot mean anything to a module and would
        otherwise explode later (an overflow in STATUS, a NUL in a path).
        """
        self.check_values(kwargs)
        if not self.accepts_any:
            unknown = [k for k in kwargs if k not in self.params]
            if unknown:
                valid = list(self.params) or ["(none)"]
                hints = [f"{k!r}{hint(k, self.params)}" for k in unknown]
                raise CommandError(
                    f"{self.name}: unknown argument {', '.join(hints)}; valid arguments: "
                    f"{', '.join(valid)}"
                )
        missing = [p.name for p in self.params.values() if p.required and p.name not in kwargs]
        if missing:
            raise CommandError(f"{self.name}: missing required argument {', '.join(missing)}")
        for k, v in kwargs.items():
            p = self.params.get(k)
            if p is None or p.types is None:
                continue
            if v is None and p.nullable:
                continue
            if not _type_ok(v, p.types):
                raise CommandError(
                    f"{self.name}: argument {k!r} must be {p.type_name}, got "
                    f"{_json_type(v)} {_short(v)}"
                )


_RESERVED = frozenset({"self", "cls"})
_INT_LIMIT = 2**63


def _bad_text(text: str) -> str | None:
    """Why a string cannot reach a file name, a log or a reply: NUL, or a lone surrogate
    (JSON's ``"\\ud800"`` decodes to one; it cannot be encoded as UTF-8)."""
    if "\x00" in text:
        return "contains a NUL byte"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (\\ud800-\\udfff is not text)"
    return None


def _unusable(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` (a decoded JSON value) cannot be passed to a command, or None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"must be a finite number, got {value}"
    if isinstance(value, int):
        return (
            None
            if -_INT_LIMIT <= value < _INT_LIMIT
            else "is out of range (numbers must fit in 64 bits)"
        )
    if isinstance(value, str):
        return _bad_text(value)
    if depth > 32:
        return "is nested too deeply (32 levels at most)"
    if isinstance(value, list):
        for item in value:
            if (problem := _unusable(item, depth + 1)) is not None:
                return problem
    elif isinstance(value, dict):
        for key, item in value.items():
            if (problem := _bad_text(key)) is not None:
                return f"{problem} in a key"
            if (problem := _unusable(item, depth + 1)) is not None:
                return problem
    return None


def _type_ok(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


def _json_type(v: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(v), type(v).__name__)


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _analyse_annotation(ann: Any) -> tuple[tuple[type, ...] | None, bool, str]:
    """Map an annotation to (checkable types, accepts None, readable name)."""
    if ann is inspect.Parameter.empty:
        return None, True, "any"
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        parts = typing.get_args(ann)
        nullable = type(None) in parts
        checked: list[type] = []
        names: list[str] = []
        for part in parts:
            if part is type(None):
                continue
            t, _, n = _analyse_annotation(part)
            if t is None:
                return None, True, str(ann)
            checked.extend(t)
            names.append(n)
        return tuple(checked), nullable, " or ".join(names) + (" or null" if nullable else "")
    base = origin or ann
    if base in _SIMPLE_TYPES:
        return (base,), False, _SIMPLE_TYPES[base]
    if base in (tuple,):
        return (list,), False, "list"
    return None, True, getattr(ann, "__name__", str(ann))


def make_command(name: str, func: Callable[..., Any]) -> Command:
    """Inspect ``func`` (a function, method, partial or callable object) into a :class:`Command`."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return Command(name, func, {}, True, _first_doc_line(func))
    try:
        target = getattr(func, "func", func)  # functools.partial
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: validate names only
        hints = {}
    params: dict[str, Param] = {}
    accepts_any = False
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_any = True
            continue
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            continue
        ann = hints.get(p.name, p.annotation)
        checked, nullable, tname = _analyse_annotation(ann)
        required = p.default is inspect.Parameter.empty
        params[p.name] = Param(
            name=p.name,
            required=required,
            default=None if required else p.default,
            types=checked,
            nullable=nullable or (not required and p.default is None),
            type_name=tname,
        )
    return Command(name, func, params, accepts_any, _first_doc_line(func))


def _first_doc_line(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or inspect.getdoc(getattr(func, "func", None)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def unknown_command_message(name: str, names: list[str]) -> str:
    """The reply to a command name the module does not have (did-you-mean, then every command)."""
    close = did_you_mean(name, names, cutoff=0.5)
    hint = f" Did you mean {close}?" if close else ""
    return f"unknown command {short(name)}.{hint} Valid commands: {', '.join(names)} (send HELP for details)"
