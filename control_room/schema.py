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


LAUNCH_MODES = ("local", "ssh", "compose")


@dataclass
class Compose:
    """A module that docker compose runs (on this host or, with a context, on another)."""

    service: str
    files: list[str] = field(default_factory=list)  # -f; none: compose's own search
    project: str | None = None  # -p
    context: str | None = None  # docker --context (a docker context naming the far host)
    docker_host: str | None = None  # DOCKER_HOST, e.g. "ssh://user@rig2"
    engine: str = "docker"  # docker | podman


@dataclass
class Launch:
    """Where and how a module's process is started (docs/multi-host.md).

    ``local``: a child of the control room. ``ssh``: the OpenSSH client runs the module's argv on
    ``ssh`` (user@host); its pipes carry the module's output back. ``compose``: ``docker compose
    up`` of one service in the foreground, locally or through a docker context / DOCKER_HOST.
    """

    mode: str = "local"
    ssh: str | None = None  # destination; default: the module's host
    ssh_options: list[str] = field(default_factory=list)  # extra ssh client arguments
    remote_cwd: str | None = None  # working directory on the far host
    compose: Compose | None = None

    @property
    def remote(self) -> bool:
        return self.mode != "local"


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
    # CPU affinity and priority applied when the control room starts it (None: inherited)
    cpu_affinity: list[int] | None = None
    nice: int | None = None
    sched: str | None = None  # "other" | "batch" | "idle" | "fifo:<1-99>" | "rr:<1-99>"
    launch: Launch = field(default_factory=Launch)
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
    data_dir: str | None = None  # the mesh data folder (else $MESH_DATA_DIR, else "data")

    log_host: str | None = None  # the log receiver's address (default: host)
    log_allow: list[str] = field(default_factory=list)  # more peers the receiver accepts

    @property
    def log_bind(self) -> str:
        return self.log_host or self.host

    web: bool = True  # serve the dashboard (control_room/web)
    web_port: int = 9030  # the dashboard's HTTP port on `host`; 8080 is where modules often listen


#: seconds each session message may take per participant (docs/sessions.md)
SESSION_TIMEOUTS = {"info": 5.0, "init": 30.0, "start": 10.0, "status": 3.0, "end": 15.0,
                    "interrupt": 10.0, "cleanup": 10.0}  # fmt: skip
LOST_POLICIES = ("interrupt", "continue")


@dataclass
class SessionSettings:
    """The ``[session]`` table: who takes part in a session, who numbers it, how long each step
    may take, and the iblutil rigs on either side (docs/sessions.md)."""

    main_sync: str | None = None  # a module, a remote rig or "control_room"; None: who claims it
    participants: list[str] | None = None  # default: every module, then every remote rig
    project: str | None = None
    timeouts: dict[str, float] = field(default_factory=lambda: dict(SESSION_TIMEOUTS))
    on_module_lost: str = "interrupt"  # or "continue"
    status_every_s: float = 2.0  # EXPSTATUS to every participant while a session runs
    options: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # per participant, to INIT/START
    remote_rigs: dict[str, str] = field(default_factory=dict)  # iblutil rigs we drive: name -> uri
    iblutil_listen: str | None = None  # answer an iblrig PC here, e.g. "udp://0.0.0.0:11001"
    iblutil_main_sync: bool = False  # claim main sync when an iblrig PC asks (EXPINFO)


@dataclass
class MeshConfig:
    path: Path
    control: ControlSettings
    modules: dict[str, ModuleSpec]
    macros: dict[str, MacroSpec]
    step_sleep_s: float = 0.0  # Dareplane's [macros.globals] sleep_s
    warnings: list[str] = field(default_factory=list)
    tokens: Tokens = field(default_factory=Tokens)  # resolved on load; repr shows no value
    session: SessionSettings = field(default_factory=SessionSettings)

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
