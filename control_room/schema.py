"""The validated shape of a mesh config: plain dataclasses, no behaviour beyond ordering.

Kept apart from the loader so the supervisor, macros and tests depend on the shape only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control_room.tokens import Tokens

RESTART_POLICIES = ("no", "on-failure", "always")
PROTOCOLS = ("auto", "json", "dareplane")


class ConfigError(ValueError):
    """One or more problems in a config file; ``str()`` lists them as ``file:line: key: problem``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Ready:
    """How to know a module is ready: it answers UP, an LSL stream appears, or both."""

    up: bool = True
    stream: str | None = None
    timeout_s: float = 20.0


@dataclass
class ModuleSpec:
    """How to start (or attach to) one module and keep it alive."""

    name: str
    kind: str  # "python" | "exec" | "attach"
    argv: list[str] = field(default_factory=list)  # may contain {host} {port} {name}
    host: str = "127.0.0.1"
    port: int = 0
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    after: list[str] = field(default_factory=list)
    ready: Ready = field(default_factory=Ready)
    restart: str = "on-failure"
    max_restarts: int = 3
    restart_delay_s: float = 0.5
    stop_timeout_s: float = 3.0
    display: bool = False
    protocol: str = "auto"
    pcomms: dict[str, str] = field(default_factory=dict)
    token_env: str | None = None  # the variable holding this module's token (else $MESH_TOKEN)
    line: int = 0


@dataclass
class Step:
    """One macro step; ``kind`` is send | wait | wait_stream | until | macro | restart."""

    kind: str
    module: str | None = None
    cmd: str | None = None
    kwargs: Any = None  # template (dict) for send/until; None = no payload
    mapping: list[tuple[str, str]] | None = None  # Dareplane 'dst=src' pairs
    seconds: float | str = 0.0  # a "$template" is resolved when the macro runs
    stream: str | None = None
    timeout_s: float = 30.0
    every_s: float = 0.2
    expect: dict[str, Any] = field(default_factory=dict)
    save_as: str | None = None
    delay_s: float = 0.0
    continue_on_error: bool = False
    label: str = ""
    line: int = 0


@dataclass
class MacroSpec:
    """A named command sequence with defaults for its template variables."""

    name: str
    label: str = ""
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    delay_s: float = 0.0
    steps: list[Step] = field(default_factory=list)
    # run after the steps whatever happened (failure, Ctrl-C, DOWN): stop recording, streams...
    finally_steps: list[Step] = field(default_factory=list)
    line: int = 0


@dataclass
class ControlSettings:
    """The control room's own ports and behaviour."""

    host: str = "127.0.0.1"
    port: int = 9010
    pub_port: int = 9021
    log_port: int = 9020
    log_dir: str = "logs"
    marker_stream: str = "control_room_commands"
    watchdog_s: float = 0.5
    xvfb: str = "auto"  # auto | never
    run_macro: str | None = None
    token_file: str | None = None  # the mesh token's file (else $MESH_TOKEN); never the token
    web: bool = True  # serve the dashboard (control_room/web)
    web_port: int = 9030  # the dashboard's HTTP port on `host`; 8080 is where modules often listen


@dataclass
class MeshConfig:
    path: Path
    control: ControlSettings
    modules: dict[str, ModuleSpec]
    macros: dict[str, MacroSpec]
    step_sleep_s: float = 0.0  # Dareplane's [macros.globals] sleep_s
    warnings: list[str] = field(default_factory=list)
    tokens: Tokens = field(default_factory=Tokens)  # resolved on load; repr shows no value

    def start_order(self) -> list[list[str]]:
        """Modules grouped in waves: each wave depends only on earlier waves."""
        done: set[str] = set()
        waves: list[list[str]] = []
        left = list(self.modules)
        while left:
            wave = [m for m in left if set(self.modules[m].after) <= done]
            if not wave:  # validated away; guard anyway
                raise ConfigError([f"{self.path}: dependency cycle among {left}"])
            waves.append(wave)
            done.update(wave)
            left = [m for m in left if m not in done]
        return waves
