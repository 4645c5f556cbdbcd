"""Fenced blocks of README.md, docs/*.md and examples/**/README.md, their doc-test markers, and how
replies are compared.

Every fenced block in the documentation is either executed by a test or skipped with a reason,
so an example cannot go stale silently. The marker is an HTML comment (invisible on GitHub) on
the last non-blank line before the opening fence::

    <!-- doc-test: nc services.mockup_streamer -->
    ```
    $ nc 127.0.0.1 8101
    UP
    {"ok": true, "cmd": "UP", "result": true}
    ```

``KIND [ARG ...] [key=value ...]``, split like a shell line (quote values with spaces). KINDS
below lists each kind, its options and what it checks; tests/test_docs_markers.py fails on an
unmarked block, an unknown kind or option, and a skip without a reason.

Replies and outputs are compared with documented values, except where the doc elides or the
value is volatile:
- ``...`` elides: ``{...}`` any object, ``[...]`` any list, ``, ...}`` more members, ``, ...]``
  more items, a bare ``...`` any value, ``...`` inside a string any text; a line ``...`` in a
  program's output any number of lines.
- objects without ``...`` must have exactly the documented keys;
- keys in VOLATILE (times, pids, ports, counters that move, paths, versions) match by type only;
- mesh ports (MESH_PORTS) in a block are replaced by the ports of this run; absolute paths in
  outputs are compared by their last two components, and runs of blanks inside a line as one.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The files whose blocks are tested; add a path here (or a file under docs/) to cover it.
DOC_FILES = ("README.md", "docs/*.md", "examples/**/README.md")

#: kind -> (allowed options, what it does). Positional arguments are kind-specific.
KINDS: dict[str, tuple[set[str], str]] = {
    "skip": ({"reason"}, "not run; reason= says why and which test or make target covers it"),
    "nc": (
        {"streams", "files", "args"},
        "nc MODULE: start python -m MODULE, send every request line, compare each documented "
        "reply; a request with no reply shown must succeed",
    ),
    "python": (
        {"modules", "streams", "files", "timeout"},
        "run as a script in a subprocess (modules=services.x: started first, its documented "
        "port replaced); must exit 0",
    ),
    "python-module": (
        {"warns"},
        "run as a module server (argv: its port), then the conformance checker: every required "
        "rule passes, exactly the rules in warns= warn",
    ),
    "shell": (
        {"files", "setup", "needs", "streams", "interrupt-after", "in", "env", "today", "room"},
        "each `$ ` line (or each line) runs in bash in a sandbox (HOME too); `&` lines run in the "
        "background until the block ends; other lines are the expected output; setup= runs first; "
        "needs=tool,...: skipped with the reason when a tool is not installed; interrupt-after=S: "
        "a command still running after S s gets SIGINT (Ctrl-C) and must then exit 0; in=DIR: "
        "runs in a copy of DIR (what it builds stays out of the checkout); env=K=V,...; "
        "today=DATE: that date in the block is today's; `control-room up CONFIG` runs in the "
        "background (its own terminal) on a copy of CONFIG with this run's ports, the clients "
        "reach it, Ctrl-C at the end must stop it with status 0; room='TOML lines': such a "
        "control room (one echo module, these [control_room] lines) is started before the "
        "block's first control-room command. files= (doc_sandbox.Mesh.file) also takes "
        "block:LINE:PATH and edit:LINE:PATH (this doc's block, or edited folder, at PATH; ~ is "
        "the block's HOME)",
    ),
    "serve": (
        {"options-only"},
        "each line starts a long-running server that must become ready (UP on --port, else "
        "--link exists), then is stopped; lines containing options-only= are only parsed",
    ),
    "toml": ({"with", "env"}, "toml config: control_room.config.load_config must accept it"),
    "lsl-config": (set(), "an lsl_api.cfg: liblsl loads it without error, every key is known"),
    "json": (
        {"like", "check"},
        "like=NAME: same keys and value types as a real one made by tests/doc_static.py LIKE; "
        "check=NAME: accepted by the real consumer (doc_static.CHECKS)",
    ),
    "tree": (set(), "a file layout: every named file and folder exists"),
    "excerpt": (set(), "excerpt FILE: the block's lines are FILE's, in order (a `...` line skips)"),
    "edit": (
        {"at", "build", "run", "send", "result", "needs"},
        "edit FILE: the block is an edit of FILE (fragments split by `...` lines, each put at "
        "its anchor in at='after:TEXT;;before:TEXT;;replace:TEXT'), applied to a copy of FILE's "
        "folder; build= runs there, then run= (with {port}) must pass the conformance rules an "
        "edit can break (R1, R4, R11) and answer send= with ok (and result= when given)",
    ),
}

MESH_PORTS = (8101, 8102, 8103, 8104, 8105, 8106, 8107, 8108, 8109, 8110, 9010, 9020, 9021)
VOLATILE = frozenset(
    "pid last_pid child_pid emulator_pid process uptime_s time created created_at started_at "
    "onset frame elapsed_s running_s rate_achieved expected_samples samples next_switch_in_s "
    "version port host hostname uid file path last_file data_file lsl_start bytes seconds "
    "ready_s startup_s ms lsl_time duration_s connections".split()
)

MARKER_HINT = (
    "Mark each block with `<!-- doc-test: KIND ... -->` on the line before its fence; kinds: "
    + ", ".join(KINDS)
    + '; `skip reason="..."` for what cannot run (tests/doc_blocks.py).'
)
MARKER_RE = re.compile(r"^\s*<!--\s*doc-test:\s*(.*?)\s*-->\s*$")
FENCE_RE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^`]*)$")


@dataclass
class Block:
    """One fenced block: where it is, its info string, its text and its marker."""

    path: str  # relative to ROOT
    line: int  # 1-based line of the opening fence
    info: str
    text: str
    marker: str | None = None  # the text after "doc-test:"
    kind: str = ""
    args: list[str] = field(default_factory=list)
    opts: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def describe(self) -> str:
        marker = f"<!-- doc-test: {self.marker} -->" if self.marker else "no marker"
        first = next((ln for ln in self.text.splitlines() if ln.strip()), "")
        return f"{self.where} (```{self.info} block starting {first[:60]!r}; {marker})"

    def lines(self) -> list[tuple[int, str]]:
        """(file line number, text) for each line of the block."""
        return [(self.line + 1 + i, ln) for i, ln in enumerate(self.text.splitlines())]

    def opt_list(self, key: str) -> list[str]:
        return [v for v in self.opts.get(key, "").split(",") if v]


def doc_paths() -> list[Path]:
    out: list[Path] = []
    for pattern in DOC_FILES:
        out += sorted(ROOT.glob(pattern))
    return out


def parse_file(path: Path) -> list[Block]:
    """Every fenced block of one Markdown file, with its marker (if any)."""
    rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3).strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(
            rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]
        ):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        block = Block(rel, i + 1, info, "\n".join(body) + "\n")
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k >= 0 and (mm := MARKER_RE.match(lines[k])):
            set_marker(block, mm.group(1))
        blocks.append(block)
        i = j + 1
    return blocks


def set_marker(block: Block, marker: str) -> None:
    block.marker = marker
    words = shlex.split(marker)
    block.kind = words[0] if words else ""
    for w in words[1:]:
        key, eq, value = w.partition("=")
        if eq and re.fullmatch(r"[a-z][a-z-]*", key):
            block.opts[key] = value
        else:
            block.args.append(w)


def all_blocks() -> list[Block]:
    return [b for p in doc_paths() for b in parse_file(p)]


def blocks_of(*kinds: str) -> list[Block]:
    return [b for b in all_blocks() if b.kind in kinds]


def marker_problems(block: Block) -> list[str]:
    """Why this block's marker is not usable (empty when it is)."""
    if block.marker is None:
        return [f"{block.describe()}: no doc-test marker"]
    if block.kind not in KINDS:
        return [f"{block.describe()}: unknown kind {block.kind!r}; kinds: {', '.join(KINDS)}"]
    allowed = KINDS[block.kind][0]
    bad = [
        f"{block.describe()}: unknown option {k!r} for {block.kind}; allowed: "
        f"{', '.join(sorted(allowed)) or 'none'}"
        for k in block.opts
        if k not in allowed
    ]
    if block.kind == "skip" and len(block.opts.get("reason", "").strip()) < 10:
        bad.append(f'{block.describe()}: a skip needs reason="why, and what covers it instead"')
    if block.kind in ("nc", "toml", "excerpt", "edit") and not block.args:
        bad.append(f"{block.describe()}: {block.kind} needs an argument (module, `config`, file)")
    if block.kind == "json" and not (block.opts.get("like") or block.opts.get("check")):
        bad.append(f"{block.describe()}: json needs like=NAME or check=NAME")
    if block.kind == "edit" and not (block.opts.get("at") and block.opts.get("run")):
        bad.append(f"{block.describe()}: edit needs at=ANCHORS and run=COMMAND")
    return bad


# -- documented JSON with elisions ----------------------------------------------------------------
ANY, ANY_OBJ, ANY_LIST, REST = "\0any", "\0obj", "\0list", "\0rest"


def parse_pattern(text: str, loose: bool = False) -> Any:
    """Documented JSON, where ``...`` elides (see the module docstring), as a pattern.

    ``loose``: an annotated layout, where ``// comments`` are dropped and bare names
    (``b0``) stand for any value.
    """
    out, i, in_str = [], 0, False
    while i < len(text):
        c = text[i]
        if loose and not in_str and text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
            continue
        if loose and not in_str and (c.isalpha() or c == "_"):
            name = re.match(r"\w+", text[i:]).group(0)
            out.append(name if name in ("true", "false", "null") else json.dumps(ANY))
            i += len(name)
            continue
        if in_str:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
            i += 1
            continue
        if c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("{...}", i):
            out.append(json.dumps(ANY_OBJ))
            i += 4
        elif text.startswith("[...]", i):
            out.append(json.dumps(ANY_LIST))
            i += 4
        elif text.startswith("...", i):
            before = "".join(out).rstrip()[-1:]
            after = text[i + 3 :].lstrip()[:1]
            if before in ",{" and after == "}":
                out.append(json.dumps(REST) + ": 1")  # more members
            elif before in ",[" and after == "]":
                out.append(json.dumps(REST))  # more items
            else:
                out.append(json.dumps(ANY))  # any value
            i += 2
        else:
            out.append(c)
        i += 1
    return json.loads("".join(out))


def match(pattern: Any, actual: Any, where: str = "reply") -> list[str]:
    """Differences between a documented pattern and an actual value (empty when they agree)."""
    if pattern == ANY:
        return []
    if pattern == ANY_OBJ:
        return [] if isinstance(actual, dict) else [f"{where}: expected an object, got {actual!r}"]
    if pattern == ANY_LIST:
        return [] if isinstance(actual, list) else [f"{where}: expected a list, got {actual!r}"]
    if isinstance(pattern, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {_short(actual)}"]
        errs = [
            f"{where}: documented key {k!r} missing (has {sorted(actual)})"
            for k in pattern
            if k != REST and k not in actual
        ]
        if REST not in pattern:
            extra = sorted(set(actual) - set(pattern))
            if extra:
                errs.append(f"{where}: keys not documented: {extra} (add them, or `, ...`)")
        for k, v in pattern.items():
            if k != REST and k in actual:
                errs += _match_value(k, v, actual[k], f"{where}.{k}")
        return errs
    if isinstance(pattern, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {_short(actual)}"]
        more = bool(pattern) and pattern[-1] == REST
        items = pattern[:-1] if more else pattern
        if len(actual) < len(items) or (not more and len(actual) != len(items)):
            return [
                f"{where}: documented {len(items)} items{' or more' if more else ''}, "
                f"got {len(actual)}: {_short(actual)}"
            ]
        return [e for i, p in enumerate(items) for e in match(p, actual[i], f"{where}[{i}]")]
    if isinstance(pattern, str) and "..." in pattern and isinstance(actual, str):
        if re.fullmatch(".*".join(map(re.escape, pattern.split("..."))), actual, re.S):
            return []
    if _same(pattern, actual):
        return []
    return [f"{where}: documented {pattern!r}, got {_short(actual)}"]


def _match_value(key: str, pattern: Any, actual: Any, where: str) -> list[str]:
    if key in VOLATILE and not isinstance(pattern, dict | list):
        if pattern is None or actual is None or _kind(pattern) == _kind(actual):
            return []
        return [f"{where}: documented a {_kind(pattern)}, got {_short(actual)}"]
    return match(pattern, actual, where)


def _kind(v: Any) -> str:
    return "number" if isinstance(v, int | float) and not isinstance(v, bool) else type(v).__name__


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (_kind(a) == _kind(b) == "number" and a == b)


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else repr(v)
    return text if len(text) < 300 else text[:300] + "..."


# -- program output --------------------------------------------------------------------------------
ABS_PATH = re.compile(r"(?<![\w.~])/(?:[\w.+-]+/)*([\w.+-]+/[\w.+-]+)")


def _norm(line: str) -> str:
    """Paths by their last two parts; runs of blanks as one (column widths follow the data)."""
    return re.sub(r"(?<=\S)[ \t]{2,}", " ", ABS_PATH.sub(r".../\1", line.rstrip()))


def match_output(documented: list[str], actual: str) -> list[str]:
    """Compare output lines: a line ``...`` skips any lines, ``...`` in a line any text."""
    got = [_norm(x) for x in actual.splitlines() if x.strip()]
    want = [_norm(x) for x in documented if x.strip()]

    def line_ok(p: str, a: str) -> bool:
        return re.fullmatch(".*".join(map(re.escape, p.split("..."))), a) is not None

    def walk(i: int, j: int) -> bool:
        if i == len(want):
            return j == len(got)
        if want[i].strip() == "...":
            return any(walk(i + 1, k) for k in range(j, len(got) + 1))
        return j < len(got) and line_ok(want[i], got[j]) and walk(i + 1, j + 1)

    if walk(0, 0):
        return []
    return [
        "output differs from the documented one:\n--- documented\n"
        + "\n".join(want)
        + "\n--- actual\n"
        + "\n".join(got)
    ]
