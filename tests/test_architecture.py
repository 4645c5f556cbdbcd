"""The layering rules, checked on the source: who may import what, and what must not happen.

- service core files are testable without sockets: only a service's ``commands.py``, its
  ``__main__.py`` and files that are themselves network endpoints may import socket/zmq or the
  server base;
- every service has one shape: ``core.py``, ``commands.py`` with ``build_commands(core)``, and a
  click ``__main__.py`` that leaves LSL and logging set-up to ``run_module``;
- ``shared_utils`` imports neither ``services`` nor ``control_room``; the control room reaches
  services only over the protocol; services do not import each other;
- inside ``shared_utils``, ``streams`` never imports ``protocol``; in the control room the command
  server and the dashboard never import the room (the arrow is ``room -> server``, ``room -> web``);
- no ``shell=True`` and no ``__del__`` in product code; importing a module starts no thread;
- ``docs/architecture.md``'s layout names every ``shared_utils`` module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("shared_utils", "services", "control_room")
TRANSPORT = {
    "socket",
    "socketserver",
    "zmq",
    "shared_utils.server",
    "shared_utils.module_cli",
    "shared_utils.protocol.server",
    "shared_utils.protocol.module",
    "shared_utils.protocol.io_loop",
    "shared_utils.protocol.connection",
}
# Files whose job is to be a network endpoint (besides each service's commands.py/__main__.py).
ENDPOINT_FILES = {"services/recorder/rcs.py"}


def _py_files(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def test_service_core_files_do_not_import_transport() -> None:
    """Core logic of every service imports without sockets or the server base."""
    offenders = []
    for path in _py_files("services"):
        if path.name in ("commands.py", "__main__.py") or _rel(path) in ENDPOINT_FILES:
            continue
        bad = {m for m in _imports(path) if m in TRANSPORT or m.split(".")[0] == "zmq"}
        if bad:
            offenders.append(f"{_rel(path)}: {sorted(bad)}")
    assert not offenders, "core files importing transport:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("top", "forbidden"),
    [("shared_utils", ("services", "control_room")), ("control_room", ("services",))],
)
def test_dependencies_point_one_way(top: str, forbidden: tuple[str, ...]) -> None:
    """shared_utils imports no service or control room; the control room imports no service."""
    offenders = [
        f"{_rel(p)}: {m}"
        for p in _py_files(top)
        for m in _imports(p)
        if m.split(".")[0] in forbidden
    ]
    assert not offenders, "\n".join(offenders)


def test_services_do_not_import_each_other() -> None:
    """A service shares code with others only through shared_utils."""
    offenders = []
    for path in _py_files("services"):
        own = path.relative_to(ROOT / "services").parts[0]
        for m in _imports(path):
            parts = m.split(".")
            if parts[0] == "services" and len(parts) > 1 and parts[1] != own:
                offenders.append(f"{_rel(path)}: {m}")
    assert not offenders, "\n".join(offenders)


def test_every_service_has_one_shape() -> None:
    """services/<name>/ holds core.py, commands.py with build_commands(core) and a click
    __main__.py; no service sets up LSL or logging itself (run_module is the one place)."""
    setup_calls = {"use_loopback", "setup_lsl", "configure_logging"}
    for svc in sorted(p for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists()):
        assert (svc / "core.py").exists(), svc.name
        assert "click" in (svc / "__main__.py").read_text(), svc.name
        tree = ast.parse((svc / "commands.py").read_text())
        build = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert [f.name for f in build] == ["build_commands"], svc.name
        args = build[0].args
        assert len(args.args) == 1, svc.name
        assert args.vararg is None, svc.name
        assert args.kwarg is None, svc.name
        assert not args.kwonlyargs, svc.name
        assert build[0].returns is not None, svc.name
        assert "dict" in ast.unparse(build[0].returns), svc.name
        main = ast.parse((svc / "__main__.py").read_text())
        run = [
            n
            for n in ast.walk(main)
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "run_module"
        ]
        assert len(run) == 1, f"{svc.name}: __main__.py calls run_module once"
        factory = run[0].args[1] if len(run[0].args) > 1 else None
        assert isinstance(factory, ast.Lambda | ast.Name), (
            f"{svc.name}: run_module gets a factory that builds the core after set-up"
        )
        calls = {
            n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
            for path in svc.rglob("*.py")
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Call)
        }
        assert not calls & setup_calls, f"{svc.name} calls {sorted(calls & setup_calls)}"


@pytest.mark.parametrize(
    ("files", "forbidden"),
    [
        ("shared_utils/streams", "shared_utils.protocol"),
        ("control_room/server.py", "control_room.room"),
        ("control_room/web", "control_room.room"),
    ],
)
def test_inner_arrows_point_one_way(files: str, forbidden: str) -> None:
    """Streams know nothing of the protocol; what the room serves does not import the room."""
    target = ROOT / files
    paths = [target] if target.is_file() else _py_files(files)
    offenders = [
        f"{_rel(p)}: {m}"
        for p in paths
        for m in _imports(p)
        if m == forbidden or m.startswith(forbidden + ".")
    ]
    assert not offenders, "\n".join(offenders)


def test_the_architecture_doc_names_every_shared_module() -> None:
    """docs/architecture.md's layout lists every shared_utils file (a newcomer finds it there)."""
    from doc_blocks import parse_file
    from doc_static import tree_paths

    doc = ROOT / "docs" / "architecture.md"
    trees = [b for b in parse_file(doc) if b.kind == "tree"]
    assert trees, "docs/architecture.md has no layout block"
    named = {p.resolve() for b in trees for _, p in tree_paths(b)}
    missing = [
        _rel(p) for p in _py_files("shared_utils") if p.name != "__init__.py" and p not in named
    ]
    # a package's __init__ is named by its folder; every other file by its own line
    assert not missing, "not listed in docs/architecture.md:\n" + "\n".join(missing)


def test_no_shell_true_and_no_finalizers() -> None:
    """Payload values never reach a shell; cleanup is explicit (close/context managers)."""
    offenders = []
    for path in _py_files(*PRODUCT):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    offenders.append(f"{_rel(path)}:{node.value.lineno} shell=")
            if isinstance(node, ast.FunctionDef) and node.name == "__del__":
                offenders.append(f"{_rel(path)}:{node.lineno} __del__")
    assert not offenders, "\n".join(offenders)


def test_importing_every_module_starts_nothing() -> None:
    """Importing the whole product starts no thread and configures no logging."""
    modules = []
    for path in _py_files(*PRODUCT):
        # __main__ runs its command; PsychoPy's window code needs a display just to import
        # (it only ever runs inside the presenter's child process).
        if path.name == "__main__.py" or any(m.startswith("psychopy") for m in _imports(path)):
            continue
        mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules.append(mod.removesuffix(".__init__"))
    code = (
        "import importlib, threading, structlog, sys\n"
        f"mods = {modules!r}\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "threads = [t.name for t in threading.enumerate()]\n"
        "assert threads == ['MainThread'], threads\n"
        "assert not structlog.is_configured(), 'structlog configured at import'\n"
        "print(len(mods))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.strip()) > 50


MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def test_product_files_and_functions_stay_small() -> None:
    """No product file over 400 lines, no function over 80: split where the parts have names."""
    big_files, big_funcs = [], []
    for path in _py_files(*PRODUCT):
        text = path.read_text()
        n = text.count("\n")
        if n > MAX_FILE_LINES:
            big_files.append(f"{_rel(path)}: {n} lines")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big_funcs.append(f"{_rel(path)}:{node.lineno} {node.name}: {length} lines")
    assert not big_files, "files over 400 lines:\n" + "\n".join(big_files)
    assert not big_funcs, "functions over 80 lines:\n" + "\n".join(big_funcs)
