"""Documented edits of an example (``edit FILE``): "add your command here" blocks, applied to a
copy of the example and run, so the place they name and the code they show stay right.

The block is split into fragments at lines that are only ``...``; each goes to its anchor in
``at=`` (``;;`` between anchors): ``after:TEXT`` / ``before:TEXT`` the one line containing TEXT,
``replace:TEXT`` that line and, when it opens brackets, every line up to where they close
(brackets are counted, strings are not parsed: enough for a command table).
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import free_port, stop_process_group
from doc_blocks import ROOT, Block, match, parse_pattern

if TYPE_CHECKING:
    from doc_sandbox import Mesh

#: The conformance rules an edit of the command table can break (fast: no timeouts waited out).
EDIT_RULES = ["R1", "R4", "R11"]


def copy_example(src: Path, dest: Path) -> Path:
    """A copy of an example folder without built programs (ELF files) or caches."""

    def built(folder: str, names: list[str]) -> list[str]:
        out = []
        for n in names:
            p = Path(folder) / n
            if n in ("__pycache__", "data") or p.is_file() and p.read_bytes()[:4] == b"\x7fELF":
                out.append(n)
        return out

    if not dest.exists():
        shutil.copytree(src, dest, ignore=built)
    return dest


def apply_edit(block: Block, dest: Path) -> list[str]:
    """Copy the folder of the block's FILE to ``dest`` and apply the block; problems, if any."""
    target = ROOT / block.args[0]
    copy_example(target.parent, dest)
    lines = (dest / target.name).read_text().splitlines()
    fragments: list[list[str]] = [[]]
    for line in block.text.splitlines():
        if line.strip() == "...":
            fragments.append([])
        else:
            fragments[-1].append(line)
    anchors = [a for a in block.opts.get("at", "").split(";;") if a]
    if len(anchors) != len(fragments):
        return [f"{block.describe()}: {len(fragments)} fragments, {len(anchors)} anchors in at="]
    problems: list[str] = []
    for fragment, anchor in zip(fragments, anchors, strict=True):
        how, _, text = anchor.partition(":")
        hits = [i for i, ln in enumerate(lines) if text in ln]
        if how not in ("after", "before", "replace") or len(hits) != 1:
            problems.append(
                f"{block.describe()}: anchor {anchor!r} must be after:/before:/replace: and "
                f"match one line of {block.args[0]}; it matches {len(hits)}"
            )
            continue
        i = hits[0]
        end = i + 1
        if how == "replace":
            depth = 0
            for end in range(i, len(lines)):
                depth += sum(map(lines[end].count, "{[(")) - sum(map(lines[end].count, "}])"))
                if depth <= 0:
                    break
            end += 1
        start = {"after": i + 1, "before": i, "replace": i}[how]
        stop = end if how == "replace" else start
        lines[start:stop] = fragment
    (dest / target.name).write_text("\n".join(lines) + "\n")
    return problems


def run_edit(block: Block, mesh: Mesh) -> list[str]:
    """Apply the edit, build, start the module; it passes EDIT_RULES and answers send=."""
    from shared_utils.protocol.conformance import failures, run_checks

    missing = [t for t in block.opt_list("needs") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{block.where} needs {', '.join(missing)} (not installed)")
    dest = mesh.sandbox.base / f"edit-{block.where.replace('/', '_').replace(':', '-')}"
    problems = apply_edit(block, dest)
    if problems:
        return problems
    env = {**mesh.sandbox.env, "MESH_LOG_CONSOLE": "0"}
    if build := block.opts.get("build"):
        res = subprocess.run(
            ["bash", "-c", build], cwd=dest, env=env, capture_output=True, text=True, timeout=120
        )
        if res.returncode:
            return [f"{block.describe()}: `{build}` failed:\n{(res.stdout + res.stderr)[-2000:]}"]
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in shlex.split(block.opts.get("run", ""))]
    proc = subprocess.Popen(
        argv, cwd=dest, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        if why := _wait_answering(port, proc):
            return [f"{block.describe()}: {' '.join(argv)}: {why}"]
        results = run_checks("127.0.0.1", port, rules=EDIT_RULES)
        problems = [
            f"{block.describe()}: after the edit, rule {r.rule} fails: {r.detail}"
            for r in results
            if r.rule in failures(results)
        ]
        return problems + _answers(block, port)
    finally:
        stop_process_group(proc)
        proc.stdout.close()


def _wait_answering(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}:\n{proc.stdout.read()[-2000:]}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(b"UP\n")
                if json.loads(s.makefile("rb").readline() or b"{}").get("ok") is True:
                    return None
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return f"no reply to UP within {timeout:.0f} s"


def _answers(block: Block, port: int) -> list[str]:
    """send= gets an ok reply (whose result matches result= when given)."""
    request = block.opts.get("send")
    if not request:
        return []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode() + b"\n")
        reply = json.loads(s.makefile("rb").readline() or b"{}")
    if reply.get("ok") is not True:
        return [f"{block.describe()}: {request!r} after the edit: {reply}"]
    if "result" in block.opts:
        diff = match(parse_pattern(block.opts["result"]), reply.get("result"), "result")
        return [f"{block.describe()}: {request!r}: {e}" for e in diff]
    return []
