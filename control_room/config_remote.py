"""Validation of the keys that place a module on another host: ``launch``, ``ssh``,
``ssh_options``, ``remote_cwd``, ``compose``, and of what such a module needs from the control
room (a fixed port, a log receiver it can reach).

Kept apart from config.py so that file stays about the module table in general. Every rule here
exists because breaking it fails only later, on another machine: a port 0 cannot be chosen for a
host we cannot bind on, a log receiver on loopback never hears a remote module, an ssh destination
starting with ``-`` would be read by ssh as an option.
"""

from __future__ import annotations

import re
from typing import Any

from control_room.checker import Checker
from control_room.schema import LAUNCH_MODES, Compose, ControlSettings, Launch, ModuleSpec
from shared_utils.checks import choice_message
from shared_utils.protocol.server import is_loopback

REMOTE_KEYS = {"launch", "ssh", "ssh_options", "remote_cwd", "compose"}
_COMPOSE_KEYS = {"service", "file", "project", "context", "docker_host", "engine"}
_ENGINES = ("docker", "podman")
# user@host, host, user@[v6]; no spaces, no leading "-", nothing a shell or ssh could misread
_DESTINATION = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@:\[\]%+-]*$")
_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")


def parse_launch(ck: Checker, keys: tuple[Any, ...], t: dict[str, Any], host: str) -> Launch:
    """The ``launch`` settings of one module table (``local`` when it names none)."""
    mode = ck.get(t, keys, "launch", str, "local")
    if mode not in LAUNCH_MODES:
        ck.error((*keys, "launch"), choice_message(mode, LAUNCH_MODES))
        return Launch()
    for key, needs in (("ssh", "ssh"), ("ssh_options", "ssh"), ("remote_cwd", "ssh")):
        if key in t and mode != needs:
            ck.error((*keys, key), f'only used with launch = "{needs}" (this module: {mode!r})')
    if "compose" in t and mode != "compose":
        ck.error((*keys, "compose"), f'only used with launch = "compose" (this module: {mode!r})')
    if mode == "local":
        return Launch()
    if "attach" in t or t.get("kind") == "conn_only":
        ck.error(
            (*keys, "launch"),
            "an attached module is started by someone else; remove launch (or attach)",
        )
    if ck.get(t, keys, "port", int, 0) == 0:
        ck.error(
            (*keys, "port"),
            f"a module started on another host needs a fixed port (launch = {mode!r}): the "
            "control room cannot pick a free port there",
        )
    if "cwd" in t:
        ck.error(
            (*keys, "cwd"),
            "cwd is a folder of this PC; for a module on another host use remote_cwd (ssh) or "
            "the compose file's working_dir",
        )
    if mode == "ssh":
        return _ssh(ck, keys, t, host)
    return Launch(mode="compose", compose=_compose(ck, keys, t))


def _ssh(ck: Checker, keys: tuple[Any, ...], t: dict[str, Any], host: str) -> Launch:
    dest = ck.get(t, keys, "ssh", str, host)
    if not _DESTINATION.match(dest):
        ck.error(
            (*keys, "ssh"),
            f"must be an ssh destination like user@host (no spaces, not starting with '-'), "
            f"got {dest!r}",
        )
    if not any(k in t for k in ("module", "cmd", "kind")):
        ck.error(keys, 'launch = "ssh" runs module = "..." or cmd = [...] on the far host')
    return Launch(
        mode="ssh",
        ssh=dest,
        ssh_options=ck.str_list(t, keys, "ssh_options"),
        remote_cwd=ck.get(t, keys, "remote_cwd", str, None),
    )


def _compose(ck: Checker, keys: tuple[Any, ...], t: dict[str, Any]) -> Compose:
    ckeys = (*keys, "compose")
    c = ck.get(t, keys, "compose", dict, None)
    if c is None:
        ck.error(keys, 'launch = "compose" needs compose = { service = "name" }')
        return Compose(service="")
    ck.unknown(c, ckeys, _COMPOSE_KEYS)
    for starter in ("module", "cmd", "kind"):
        if starter in t:
            ck.error(
                (*keys, starter),
                "the compose file says what a compose service runs; remove it here",
            )
    service = ck.get(c, ckeys, "service", str, "")
    if not _NAME.match(service):
        ck.error((*ckeys, "service"), f"must name the compose service, got {service!r}")
    files = c.get("file", [])
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        ck.error((*ckeys, "file"), f"must be a path or a list of paths, got {files!r}")
        files = []
    engine = ck.get(c, ckeys, "engine", str, "docker")
    if engine not in _ENGINES:
        ck.error((*ckeys, "engine"), choice_message(engine, _ENGINES))
    out = Compose(
        service=service,
        files=list(files),
        project=ck.get(c, ckeys, "project", str, None),
        context=ck.get(c, ckeys, "context", str, None),
        docker_host=ck.get(c, ckeys, "docker_host", str, None),
        engine=engine,
    )
    for key, value in (("project", out.project), ("context", out.context)):
        if value is not None and not _NAME.match(value):
            ck.error((*ckeys, key), f"must be a plain name, got {value!r}")
    if out.context and out.docker_host:
        ck.error(ckeys, "give context or docker_host, not both")
    return out


def check_log_reach(ck: Checker, control: ControlSettings, modules: dict[str, ModuleSpec]) -> None:
    """A module started on another host sends its logs to the receiver: it must listen there."""
    remote = [m for m in modules.values() if m.launch.remote and not is_loopback(m.host)]
    if not remote or not is_loopback(control.log_bind):
        return
    names = ", ".join(f"{m.name} ({m.host})" for m in remote)
    ck.error(
        ("control_room", "log_host" if control.log_host else "host"),
        f"modules on other hosts ({names}) send their logs to the control room, but its log "
        f"receiver listens on {control.log_bind} only; set [control_room] log_host to this PC's "
        'address on their network (or "0.0.0.0": every interface, peers checked, '
        "docs/multi-host.md)",
    )
