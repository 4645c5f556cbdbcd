"""Load and validate a mesh configuration (TOML) into plain dataclasses.

Why strict: Dareplane's control room ignores unknown keys and lost whole module tables to a
migration bug, so typos surfaced as "LSL stream not found" minutes later. Here every key is
checked on load and each error names the key and the line it is on; all errors are reported at once.

Accepted formats (see docs/configuration.md):
- ours: ``[modules.<name>]`` with ``module`` (python -m), ``cmd`` (any executable) or ``attach``;
- Dareplane current: ``[modules.<name>] kind = "python"|"exe"|"conn_only"`` plus ``modules_root``;
- Dareplane legacy: ``[python.modules.<name>]`` and ``[exe.modules.<name>]`` (connection only);
- macros: ``[macros.<name>]`` with Dareplane's ``cmds``/``default_json``/``delay_s`` and
  ``[macros.globals] sleep_s``, or our ``[[macros.<name>.steps]]`` with waits.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from control_room.checker import Checker
from control_room.config_macros import check_macros
from control_room.config_remote import REMOTE_KEYS, check_log_reach, parse_launch
from control_room.config_session import check_session
from control_room.config_start import how_to_start, ready_check, resolve_dir, scheduling_keys
from control_room.config_tokens import check_keys, check_tokens
from control_room.schema import (
    PROTOCOLS,
    RESTART_POLICIES,
    ConfigError,
    ControlSettings,
    MacroSpec,
    MeshConfig,
    ModuleSpec,
    Ready,
    Step,
)
from shared_utils.checks import choice_message, unknown_message

__all__ = [
    "ConfigError",
    "ControlSettings",
    "MacroSpec",
    "MeshConfig",
    "ModuleSpec",
    "Ready",
    "Step",
    "load_config",
    "parse_config",
]

_CONTROL_KEYS = {
    "host", "port", "pub_port", "log_port", "log_dir", "marker_stream", "watchdog_s", "xvfb",
    "run_macro", "token_file", "data_dir", "log_host", "log_allow", "web", "web_port",
}  # fmt: skip
_OUR_MODULE_KEYS = {
    "module", "cmd", "attach", "host", "ip", "port", "args", "cwd", "env", "after", "ready",
    "ready_timeout_s", "restart", "max_restarts", "restart_delay_s", "stop_timeout_s", "display",
    "protocol", "pcomms", "kwargs", "python_executable", "token_env", "cpu_affinity", "nice",
    "sched", *REMOTE_KEYS,
}  # fmt: skip
_DAREPLANE_MODULE_KEYS = {
    "kind", "path", "retry_after_s", "max_connect_retries", "custom_entry_point",
}  # fmt: skip
_LEGACY_IGNORED = {"type", "loglevel"}


def load_config(path: str | Path) -> MeshConfig:
    """Read, validate and normalise a config file; raises :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror}"]) from None
    return parse_config(text, path)


def parse_config(text: str, path: Path | str = "<config>") -> MeshConfig:
    """Validate TOML ``text`` (``path`` is used in messages and to resolve relative dirs)."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    ck = Checker(path, text)
    allowed_top = {"control_room", "modules", "macros", "python", "exe", "session"}
    ck.unknown(data, (), allowed_top)
    control = _control(ck, data.get("control_room", {}))
    modules = _all_modules(ck, data, path)
    macros, step_sleep = check_macros(ck, data.get("macros", {}), modules)
    _check_graph(ck, modules)
    check_log_reach(ck, control, modules)
    tokens = check_tokens(ck, control, modules, path)
    session = check_session(ck, data.get("session", {}), modules)
    if control.run_macro and control.run_macro not in macros:
        ck.error(
            ("control_room", "run_macro"),
            unknown_message("macro", control.run_macro, macros),
        )
    if ck.problems:
        raise ConfigError(ck.problems)
    return MeshConfig(path, control, modules, macros, step_sleep, ck.warnings, tokens, session)


def _control(ck: Checker, t: Any) -> ControlSettings:
    keys = ("control_room",)
    if not isinstance(t, dict):
        ck.error(keys, "must be a table")
        return ControlSettings()
    check_keys(ck, keys, t, _CONTROL_KEYS)
    d = ControlSettings()
    xvfb = ck.get(t, keys, "xvfb", str, d.xvfb)
    if xvfb not in ("auto", "never"):
        ck.error((*keys, "xvfb"), f"must be 'auto' or 'never', got {xvfb!r}")
    return ControlSettings(
        host=ck.get(t, keys, "host", str, d.host),
        port=ck.port(t, keys, "port", d.port),
        pub_port=ck.port(t, keys, "pub_port", d.pub_port),
        log_port=ck.port(t, keys, "log_port", d.log_port),
        log_dir=ck.get(t, keys, "log_dir", str, d.log_dir),
        marker_stream=ck.get(t, keys, "marker_stream", str, d.marker_stream),
        watchdog_s=min(1.0, ck.number(t, keys, "watchdog_s", d.watchdog_s, lo=0.05)),
        xvfb=xvfb,
        run_macro=ck.get(t, keys, "run_macro", str, None),
        token_file=ck.get(t, keys, "token_file", str, None),
        data_dir=ck.get(t, keys, "data_dir", str, None),
        log_host=ck.get(t, keys, "log_host", str, None),
        log_allow=ck.str_list(t, keys, "log_allow"),
        web=ck.get(t, keys, "web", bool, d.web),
        web_port=ck.port(t, keys, "web_port", d.web_port),
    )


def _all_modules(ck: Checker, data: dict[str, Any], path: Path) -> dict[str, ModuleSpec]:
    base = path.parent
    modules: dict[str, ModuleSpec] = {}
    top = data.get("modules", {})
    if not isinstance(top, dict):
        ck.error(("modules",), "must be a table of [modules.<name>] tables")
        top = {}
    root = ck.get(top, ("modules",), "modules_root", str, None)
    for name, t in top.items():
        if name == "modules_root":
            continue
        if not isinstance(t, dict):
            ck.error(("modules", name), "must be a table [modules.<name>] (or modules_root)")
            continue
        spec = _module(ck, ("modules", name), name, t, base, root, legacy=None)
        if spec:
            modules[name] = spec
    for section, legacy in (("python", "python"), ("exe", "exe")):
        sec = data.get(section)
        if sec is None:
            continue
        if not isinstance(sec, dict):
            ck.error((section,), "must be a table")
            continue
        ck.unknown(sec, (section,), {"modules", "modules_root"})
        lroot = ck.get(sec, (section,), "modules_root", str, root)
        mods = sec.get("modules", {})
        if not isinstance(mods, dict):
            ck.error((section, "modules"), "must be a table of module tables")
            continue
        for name, t in mods.items():
            keys = (section, "modules", name)
            if name in modules:
                ck.error(keys, f"module {name!r} is defined twice")
                continue
            if not isinstance(t, dict):
                ck.error(keys, "must be a table")
                continue
            spec = _module(ck, keys, name, t, base, lroot, legacy=legacy)
            if spec:
                modules[name] = spec
        ck.warn((section,), "legacy Dareplane format; accepted, consider [modules.<name>]")
    return modules


def _module(
    ck: Checker,
    keys: tuple[Any, ...],
    name: str,
    t: dict[str, Any],
    base: Path,
    root: str | None,
    legacy: str | None,
) -> ModuleSpec | None:
    allowed = _OUR_MODULE_KEYS | _DAREPLANE_MODULE_KEYS | (_LEGACY_IGNORED if legacy else set())
    check_keys(ck, keys, t, allowed)
    line = ck.index.line(keys)
    host = ck.get(t, keys, "host", str, None) or ck.get(t, keys, "ip", str, "127.0.0.1")
    port = ck.port(t, keys, "port", 0)
    launch = parse_launch(ck, keys, t, host)
    if launch.mode == "compose":  # the compose file says what runs
        started: tuple[str, list[str], str | None] | None = ("compose", [], None)
    else:
        started = how_to_start(ck, keys, name, t, base, root, legacy, launch.remote)
    if started is None:
        return None
    mkind, argv, cwd = started
    if mkind == "attach" and port == 0:
        ck.error(
            (*keys, "port"),
            "an attached module needs its real port (port 0 only works for modules we start)",
        )
    restart = ck.get(t, keys, "restart", str, "no" if mkind == "attach" else "on-failure")
    if restart not in RESTART_POLICIES:
        ck.error((*keys, "restart"), choice_message(restart, RESTART_POLICIES))
    # our python modules never greet, so skip the auto-detect wait for them
    protocol = ck.get(t, keys, "protocol", str, "json" if "module" in t else "auto")
    if protocol not in PROTOCOLS:
        ck.error((*keys, "protocol"), choice_message(protocol, PROTOCOLS))
    env = ck.get(t, keys, "env", dict, {})
    bad_env = [k for k, v in env.items() if not isinstance(v, str | int | float)]
    if bad_env:
        ck.error((*keys, "env"), f"values must be strings or numbers: {', '.join(bad_env)}")
    pcomms = ck.get(t, keys, "pcomms", dict, {})
    cpus, nice, sched = scheduling_keys(ck, t, keys, mkind)
    return ModuleSpec(
        name=name,
        kind=mkind,
        argv=argv,
        host=host,
        port=port,
        cwd=resolve_dir(cwd, base) if cwd else None,
        env={k: str(v) for k, v in env.items()},
        after=ck.str_list(t, keys, "after"),
        ready=ready_check(ck, t, keys),
        restart=restart,
        max_restarts=int(ck.number(t, keys, "max_restarts", 3)),
        restart_delay_s=ck.number(t, keys, "restart_delay_s", 0.5),
        stop_timeout_s=ck.number(t, keys, "stop_timeout_s", 3.0),
        display=ck.get(t, keys, "display", bool, False),
        protocol=protocol,
        pcomms={k: str(v) for k, v in pcomms.items()},
        token_env=ck.get(t, keys, "token_env", str, None) or None,
        cpu_affinity=cpus,
        nice=nice,
        sched=sched,
        launch=launch,
        line=line,
    )


def _check_graph(ck: Checker, modules: dict[str, ModuleSpec]) -> None:
    for m in modules.values():
        for dep in m.after:
            if dep not in modules:
                ck.problems.append(
                    f"{ck.path}:{m.line}: modules.{m.name}.after: "
                    + unknown_message("module", dep, modules)
                )
    # cycle detection (DFS)
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        state[n] = 1
        for dep in modules[n].after:
            if dep not in modules:
                continue
            if state.get(dep) == 1:
                cyc = [*trail[trail.index(dep) :], dep] if dep in trail else [n, dep]
                ck.problems.append(
                    f"{ck.path}:{modules[n].line}: modules.{n}.after: dependency cycle "
                    + " -> ".join(cyc)
                )
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[n] = 2

    for n in modules:
        if n not in state:
            visit(n, [n])
    ports: dict[int, str] = {}
    for m in modules.values():
        if m.port and (m.host, m.port) in {(modules[o].host, p) for p, o in ports.items()}:
            ck.problems.append(
                f"{ck.path}:{m.line}: modules.{m.name}.port: port {m.port} is also used by "
                f"{ports[m.port]}"
            )
        elif m.port:
            ports[m.port] = m.name
