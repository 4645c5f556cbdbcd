"""The field's own validators, run on an export: nwbinspector for NWB, the BIDS validator for BIDS.

Both are optional tools: when one is not installed the result says so instead of failing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SERIOUS_NWB = ("ERROR", "PYNWB_VALIDATION", "CRITICAL")


def _report(tool: str, errors: int | None, warnings: int | None, messages: list[str]) -> dict:
    """The one shape of a validation result (errors None: the tool did not run)."""
    return {"tool": tool, "errors": errors, "warnings": warnings, "messages": messages}


def inspect_nwb(path: Path) -> dict[str, Any]:
    """nwbinspector's findings: errors = ERROR, PYNWB_VALIDATION and CRITICAL messages."""
    try:
        from nwbinspector import inspect_nwbfile
    except ImportError:
        return _report("nwbinspector", None, None, ["not installed (pip install nwbinspector)"])
    msgs = [m for m in inspect_nwbfile(nwbfile_path=path) if m is not None]
    bad = [m for m in msgs if m.importance.name in SERIOUS_NWB]
    return _report(
        "nwbinspector",
        len(bad),
        len(msgs) - len(bad),
        [
            f"{m.importance.name} {m.check_function_name} {m.location or ''}: {m.message}"
            for m in msgs
        ],
    )


def bids_validator_command() -> list[str] | None:
    """The schema BIDS validator as shipped on PyPI (``bids-validator-deno``), if installed."""
    exe = Path(sys.executable).with_name("bids-validator-deno")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("bids-validator-deno")
    return [found] if found else None


def validate_bids(root: Path, timeout_s: float = 300.0) -> dict[str, Any]:
    """Run the BIDS validator on ``root`` (offline: the schema is bundled)."""
    cmd = bids_validator_command()
    if cmd is None:
        return _report("bids-validator-deno", None, None, ["not installed"])
    proc = subprocess.run(  # noqa: S603 - argv list, no shell
        [*cmd, "--json", str(root)], capture_output=True, text=True, timeout=timeout_s
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        why = f"validator failed (exit {proc.returncode}): {proc.stderr[-500:]}"
        return _report("bids-validator-deno", 1, 0, [why])
    issues = report.get("issues", {}).get("issues", [])
    errors = [i for i in issues if i.get("severity") == "error"]
    return _report(
        "bids-validator-deno",
        len(errors),
        len(issues) - len(errors),
        [
            f"{i.get('severity')} {i.get('code')} {i.get('location', '')}: "
            f"{(i.get('issueMessage') or '').strip()[:200]}"
            for i in errors
        ],
    )
