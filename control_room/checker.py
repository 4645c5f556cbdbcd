"""Typed lookups into a parsed TOML table that record problems instead of raising.

Each problem is stored as ``file:line: dotted.key: message`` so all of them can be shown at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from control_room.toml_lines import LineIndex
from shared_utils.checks import hint


class Checker:
    """Collects problems with file and line; typed getters that never raise."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.index = LineIndex(text)
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def where(self, keys: tuple[Any, ...]) -> str:
        line = self.index.line(keys)
        dotted = ".".join(f"[{k}]" if isinstance(k, int) else str(k) for k in keys)
        dotted = dotted.replace(".[", "[")
        return f"{self.path}:{line}: {dotted}" if line else f"{self.path}: {dotted}"

    def error(self, keys: tuple[Any, ...], msg: str) -> None:
        self.problems.append(f"{self.where(keys)}: {msg}")

    def warn(self, keys: tuple[Any, ...], msg: str) -> None:
        self.warnings.append(f"{self.where(keys)}: {msg}")

    def unknown(self, table: dict[str, Any], keys: tuple[Any, ...], allowed: set[str]) -> None:
        for k in table:
            if k not in allowed:
                self.error(
                    (*keys, k),
                    f"unknown key{hint(k, allowed)}; allowed here: {', '.join(sorted(allowed))}",
                )

    def get(
        self, table: dict[str, Any], keys: tuple[Any, ...], key: str, types: Any, default: Any
    ) -> Any:
        if key not in table:
            return default
        value = table[key]
        ok = isinstance(value, types) and not (
            isinstance(value, bool) and bool not in _as_tuple(types)
        )
        if not ok:
            names = " or ".join(t.__name__ for t in _as_tuple(types))
            self.error((*keys, key), f"must be {names}, got {type(value).__name__} {value!r}")
            return default
        return value

    def number(
        self, table: dict[str, Any], keys: tuple[Any, ...], key: str, default: float, lo: float = 0
    ) -> float:
        value = self.get(table, keys, key, (int, float), default)
        if value < lo:
            self.error((*keys, key), f"must be >= {lo}, got {value}")
            return default
        return float(value)

    def port(self, table: dict[str, Any], keys: tuple[Any, ...], key: str, default: int) -> int:
        value = self.get(table, keys, key, int, default)
        if not 0 <= value <= 65535:
            self.error(
                (*keys, key), f"must be a port number 0-65535 (0 = pick a free one), got {value}"
            )
            return default
        return value

    def str_list(self, table: dict[str, Any], keys: tuple[Any, ...], key: str) -> list[str]:
        value = self.get(table, keys, key, list, [])
        if not all(isinstance(v, str) for v in value):
            self.error((*keys, key), f"must be a list of strings, got {value!r}")
            return []
        return list(value)


def _as_tuple(types: Any) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)
