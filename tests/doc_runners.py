"""How each kind of documented block is executed (see tests/doc_blocks.py for the markers).

Each runner takes a block and the test file's Mesh and returns a list of problems, each naming
the documentation file and line, so a failing test says exactly what in the docs is wrong.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, stop_process_group, wait_until_up
from doc_blocks import ROOT, Block, match, match_output, parse_pattern
from doc_edits import copy_example, run_edit
from doc_rooms import Room, Rooms
from doc_sandbox import Mesh

Problems = list[str]


# -- nc transcripts -----------------------------------------------------------------------------
def run_nc(block: Block, mesh: Mesh) -> Problems:
    """Start the module, send each request line, compare each reply with the documented one."""
    module = block.args[0]
    for name in block.opt_list("streams"):
        mesh.stream(name)
    for spec in block.opt_list("files"):
        mesh.file(spec)
    # A module of its own: a transcript changes the module's state (streams, models, CLOSE).
    port = mesh.module(module, *shlex.split(block.opts.get("args", "")), owner=block.where)
    try:
        return _transcript(block, mesh, module, port)
    finally:
        mesh.release(block.where)


def _transcript(block: Block, mesh: Mesh, module: str, port: int) -> Problems:
    problems: Problems = []
    mapping: dict[int, int] = {}
    for no, line in block.lines():
        if line.startswith("$"):
            if m := re.search(r"\bnc\s+\S+\s+(\d+)", line):
                mapping[int(m.group(1))] = port
            if (m := re.search(r"-m\s+(\S+)", line)) and m.group(1) != module:
                problems.append(f"{block.path}:{no}: starts {m.group(1)}, the marker says {module}")
    text, _ = mesh.ports(mesh.sandbox.rewrite(block.text), mapping)
    steps: list[tuple[int, str, tuple[int, str] | None]] = []
    for (no, _), line in zip(block.lines(), text.splitlines(), strict=True):
        if not line.strip() or line.startswith("$"):
            continue
        if _is_reply(line):
            if not steps or steps[-1][2] is not None:
                problems.append(f"{block.path}:{no}: a reply line with no request before it")
            else:
                steps[-1] = (*steps[-1][:2], (no, line))
        else:
            steps.append((no, line.strip(), None))
    with socket.create_connection(("127.0.0.1", port), timeout=90) as sock:
        replies = sock.makefile("rb")
        for no, request, documented in steps:
            sock.sendall(request.encode() + b"\n")
            raw = replies.readline()
            where = f"{block.path}:{no}: {request[:70]!r}"
            if not raw:
                problems.append(
                    f"{where}: the module closed the connection without a reply; "
                    f"its output: {mesh.output_of(module)}"
                )
                break
            actual = json.loads(raw)
            if documented is None:
                if actual.get("ok") is not True:
                    problems.append(
                        f"{where}: failed (no reply is documented, so it must "
                        f"succeed): {actual.get('error')}"
                    )
            else:
                doc = parse_pattern(documented[1])
                where = f"{block.path}:{documented[0]}: reply to {request[:50]!r}"
                if doc.get("ok") != actual.get("ok"):
                    problems.append(f"{where}: documented ok={doc.get('ok')}, got {actual}")
                else:
                    problems += [f"{where}: {e}" for e in match(doc, actual)]
    return problems


def _is_reply(line: str) -> bool:
    try:
        value = parse_pattern(line)
    except ValueError:
        return False
    return isinstance(value, dict) and ("ok" in value or "event" in value)


# -- Python ---------------------------------------------------------------------------------------
def _script(block: Block, mesh: Mesh, mapping: dict[int, int]) -> Path:
    text, _ = mesh.ports(mesh.sandbox.rewrite(block.text), mapping)
    stem = re.sub(r"\W", "_", block.path)
    path = mesh.sandbox.base / f"doc_{stem}_{block.line}.py"
    path.write_text(text)
    return path


def _doc_lines(block: Block, script: Path, text: str) -> str:
    """A traceback's script line numbers turned into documentation lines."""
    return re.sub(
        rf'File "{re.escape(str(script))}", line (\d+)',
        lambda m: f"{block.path}:{block.line + int(m.group(1))}",
        text,
    )


def run_python(block: Block, mesh: Mesh) -> Problems:
    """Run the snippet as a script (modules it talks to started first); it must exit 0."""
    mapping: dict[int, int] = {}
    for spec in block.opt_list("modules"):
        module, _, doc_port = spec.partition(":")
        port = mesh.module(module)
        if doc_port:
            mapping[int(doc_port)] = port
    for name in block.opt_list("streams"):
        mesh.stream(name)
    for spec in block.opt_list("files"):
        mesh.file(spec)
    script = _script(block, mesh, mapping)
    try:
        res = subprocess.run(
            [sys.executable, str(script)],
            cwd=mesh.sandbox.base,
            env=mesh.sandbox.env,
            capture_output=True,
            text=True,
            timeout=float(block.opts.get("timeout", 90)),
        )
    except subprocess.TimeoutExpired:
        return [f"{block.describe()}: still running after {block.opts.get('timeout', 90)} s"]
    if res.returncode:
        tail = _doc_lines(block, script, (res.stdout + res.stderr)[-3000:])
        return [f"{block.describe()}: exited with {res.returncode}:\n{tail}"]
    return []


def run_python_module(block: Block, mesh: Mesh) -> Problems:
    """Run the snippet as a module server (argv: its port) and check it for conformance."""
    from shared_utils.protocol.conformance import RECOMMENDED, failures, run_checks

    script, port = _script(block, mesh, {}), free_port()
    proc = mesh.spawn([sys.executable, str(script), str(port)])
    try:
        wait_until_up(port, proc, timeout=30)
        results = run_checks("127.0.0.1", port)
    finally:
        stop_process_group(proc)
        proc.stdout.close()
    problems = [
        f"{block.describe()}: required rule {r.rule} fails: {r.detail}"
        for r in results
        if r.rule in failures(results)
    ]
    warned = {r.rule for r in results if not r.ok and r.level == RECOMMENDED}
    if warned != set(block.opt_list("warns")):
        problems.append(
            f"{block.describe()}: warns about {sorted(warned)}, the marker (and the "
            f"text) say {block.opt_list('warns')}"
        )
    return problems


# -- shell ----------------------------------------------------------------------------------------
def shell_steps(text: str) -> list[tuple[int, str, list[str]]]:
    """(index of the line, command, documented output lines). With `$ ` prompts, the other
    lines are output; without, every line is a command. Comments are dropped."""
    lines = text.splitlines()
    prompts = any(ln.startswith("$ ") for ln in lines)
    steps: list[tuple[int, str, list[str]]] = []
    for i, line in enumerate(lines):
        if prompts and not line.startswith("$ "):
            if steps and line.strip():
                steps[-1][2].append(line)
            continue
        cmd = re.sub(r"(^|\s+)#(\s.*)?$", "", line[2:] if prompts else line).strip()
        if cmd:
            steps.append((i, cmd, []))
    return steps


def _wait_ready(cmd: str, proc: subprocess.Popen, deadline_s: float = 60) -> str | None:
    """Block until a started server is ready; None, or why it is not."""
    deadline = time.monotonic() + deadline_s
    port = re.search(r"--port[ =](\d+)", cmd) or re.search(r"127\.0\.0\.1:(\d+)", cmd)
    link = re.search(r"--link[ =](\S+)", cmd)
    if port and "-m services." in cmd:
        try:
            wait_until_up(int(port.group(1)), proc, deadline_s)
            return None
        except (RuntimeError, TimeoutError) as exc:
            return str(exc)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode} before it was ready"
        if link and os.path.lexists(link.group(1)):
            return None
        if port and not link:
            try:
                socket.create_connection(("127.0.0.1", int(port.group(1))), timeout=1).close()
                return None
            except OSError:
                pass
        time.sleep(0.05)
    return "not ready within 60 s" if port or link else "no --port or --link to wait for"


def _start(cmd: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-c", f"exec {cmd}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        stop_process_group(proc)
        out, _ = proc.communicate()
    return proc.returncode, out


def _run(cmd: str, env: dict[str, str], cwd: Path, interrupt_s: float) -> Any:
    """Run a command to its end, or (``interrupt_s`` > 0, a live view that runs until Ctrl-C)
    send it SIGINT after that long: it must then end by itself, with status 0."""
    if not interrupt_s:
        return subprocess.run(
            ["bash", "-c", cmd], cwd=cwd, env=env, text=True, capture_output=True, timeout=180
        )
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {cmd}"],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=interrupt_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does in a terminal
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            stop_process_group(proc)
            out, err = proc.communicate()
            err += "\n(still running 20 s after SIGINT)"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_shell(block: Block, mesh: Mesh) -> Problems:
    """Run each command in bash (cwd: the sandbox or a copy of in=, HOME: a fresh folder); `&`
    ones and `control-room up` in the background until the block ends; compare documented
    output."""
    sandbox, problems = mesh.sandbox, []
    missing = [tool for tool in block.opt_list("needs") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{block.where} needs {', '.join(missing)} (not installed)")
    tag = re.sub(r"\W", "_", block.where)
    home = sandbox.base / f"home-{tag}"
    home.mkdir(exist_ok=True)
    env = {
        **sandbox.env,
        "HOME": str(home),
        **dict(kv.split("=", 1) for kv in block.opt_list("env")),
    }
    cwd = sandbox.base
    if folder := block.opts.get("in"):
        cwd = copy_example(ROOT / folder, sandbox.base / f"in-{tag}")
    for name in block.opt_list("streams"):
        mesh.stream(name)
    for spec in block.opt_list("files"):
        mesh.file(spec, block.path, home)
    text, setup = block.text, block.opts.get("setup", "")
    if today := block.opts.get("today"):
        text, setup = (t.replace(today, date.today().isoformat()) for t in (text, setup))
    text, mapping = mesh.ports(sandbox.rewrite(text), {})
    setup, mapping = mesh.ports(sandbox.rewrite(setup), mapping)
    # the CLI's clients reach no control room but the block's own (one it starts sets this)
    env["CONTROL_ROOM_PORT"] = str(mapping.setdefault(9010, free_port()))
    steps = [(-1, setup, [])] if setup else []
    background: list[subprocess.Popen] = []
    rooms: list[Room] = []
    try:
        for i, cmd, output in steps + shell_steps(text):
            where = f"{block.path}:{block.line + 1 + i}: {cmd[:100]!r}" if i >= 0 else "setup"
            rooms_for = Rooms(rooms, mesh, mapping, env, cwd, f"{tag}-{i}")
            done, why = rooms_for.before(cmd, block.opts.get("room"))
            if why:
                problems.append(f"{where}: the control room {why}")
                break
            if done:  # it was `control-room up`: it runs until the block ends
                continue
            if cmd.endswith("&"):
                background.append(_start(cmd[:-1].strip(), env, cwd))
                if why := _wait_ready(cmd, background[-1]):
                    problems.append(f"{where}: {why}: {_stop(background[-1])[1][-2000:]}")
                    break
                continue
            res = _run(cmd, env, cwd, float(block.opts.get("interrupt-after", 0)))
            if res.returncode:
                problems.append(
                    f"{where}: exit status {res.returncode}:\n{(res.stdout + res.stderr)[-2000:]}"
                )
                break
            problems += (
                [f"{where}: {e}" for e in match_output(output, res.stdout)] if output else []
            )
    finally:
        for proc in background:
            _stop(proc)
        for r in reversed(rooms):
            if (why := r.interrupt()) and not problems:
                problems.append(f"{block.where}: the control room: {why}:\n{r.output()[-2000:]}")
    return problems


def run_serve(block: Block, mesh: Mesh) -> Problems:
    """Start each documented server line, wait until it is ready, stop it (exit status 0)."""
    problems: Problems = []
    only_parse = block.opt_list("options-only")
    text, _ = mesh.ports(mesh.sandbox.rewrite(block.text), {})
    for i, cmd, _ in shell_steps(text):
        where = f"{block.path}:{block.line + 1 + i}: {cmd[:100]!r}"
        cmd = re.sub(r"\[([^\[\]]*)\]", r"\1", cmd)  # optional parts: try them too
        if any(s in cmd for s in only_parse):
            res = subprocess.run(
                ["bash", "-c", f"{cmd} --help"],
                cwd=mesh.sandbox.base,
                env=mesh.sandbox.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if res.returncode:
                problems.append(f"{where}: its options do not parse: {res.stderr[-1500:]}")
            continue
        proc = _start(cmd, mesh.sandbox.env, mesh.sandbox.base)
        why = _wait_ready(cmd, proc)
        code, out = _stop(proc)
        if why or code:
            problems.append(
                f"{where}: {why or f'exit status {code} after SIGTERM'}:\n{out[-2000:]}"
            )
    return problems


RUNNERS: dict[str, Callable[[Block, Mesh], Problems]] = {
    "nc": run_nc,
    "python": run_python,
    "python-module": run_python_module,
    "shell": run_shell,
    "serve": run_serve,
    "edit": run_edit,
}
