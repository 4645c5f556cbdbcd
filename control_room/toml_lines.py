"""Map TOML key paths to the line they were written on.

``tomllib`` returns plain dicts with no positions, but a config error is only useful when it points
at the line to fix. This scanner reads the same text line by line and records where each table
header and each ``key = value`` line sits. It understands what config files use (tables, arrays of
tables, dotted and quoted keys, multi-line arrays and strings); keys inside inline tables map to the
line of the key that holds the inline table, which is still the right line to look at.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY = rf"(?:{_BARE}|{_QUOTED})(?:\s*\.\s*(?:{_BARE}|{_QUOTED}))*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_KEY})\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_KEY})\s*=")


def _split_key(text: str) -> list[str]:
    parts = re.findall(rf"{_BARE}|{_QUOTED}", text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


class LineIndex:
    """``line(path)``: the 1-based line of the longest known prefix of ``path`` (0 if none)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Path, int] = {}
        self._scan(text)

    def _scan(self, text: str) -> None:
        table: Path = ()
        aot_counts: dict[Path, int] = {}
        depth = 0  # open brackets/braces of a multi-line value
        in_ml_string: str | None = None
        for no, raw in enumerate(text.splitlines(), start=1):
            line = raw
            if in_ml_string:
                if in_ml_string in line:
                    in_ml_string = None
                continue
            if depth > 0:
                depth += _bracket_balance(line)
                continue
            m = _HEADER.match(line)
            if m:
                keys = tuple(_split_key(m.group(2)))
                if m.group(1) == "[[":
                    idx = aot_counts.get(keys, 0)
                    aot_counts[keys] = idx + 1
                    self.lines.setdefault(keys, no)
                    table = (*keys, idx)
                else:
                    table = self._resolve_aot(keys, aot_counts)
                self.lines.setdefault(table, no)
                continue
            m = _ASSIGN.match(line)
            if m:
                path = table + tuple(_split_key(m.group(1)))
                self.lines.setdefault(path, no)
                value = line[m.end() :]
                for q in ('"""', "'''"):
                    if value.count(q) == 1:
                        in_ml_string = q
                depth = max(0, _bracket_balance(value))

    @staticmethod
    def _resolve_aot(keys: Path, aot_counts: dict[Path, int]) -> Path:
        """``[a.b]`` after ``[[a]]`` means ``a[last].b``."""
        out: list[str | int] = []
        for i, k in enumerate(keys):
            out.append(k)
            prefix = tuple(keys[: i + 1])
            if prefix in aot_counts and i < len(keys) - 1:
                out.append(aot_counts[prefix] - 1)
        return tuple(out)

    def line(self, path: Path) -> int:
        for n in range(len(path), 0, -1):
            no = self.lines.get(tuple(path[:n]))
            if no:
                return no
        return 0


def _bracket_balance(text: str) -> int:
    """Open minus closed brackets outside strings and comments."""
    bal = 0
    quote: str | None = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#":
            break
        elif c in "[{":
            bal += 1
        elif c in "]}":
            bal -= 1
        i += 1
    return bal
