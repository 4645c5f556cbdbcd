"""How modules reach the control room: where the central log receiver listens, who may send to
it, which address each module is told to send to (``MESH_LOG_SERVER``), and the environment each
module gets.

Why it is worked out per module: a module on this PC reaches the receiver on loopback, but one on
another host needs an address of this PC on the network between them. With ``log_host =
"0.0.0.0"`` (every interface) that address is the one the kernel would use to reach the module's
host, so one config works on a PC with several networks (the rig network, the building's).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from control_room.schema import ControlSettings, MeshConfig, ModuleSpec
from shared_utils.protocol.server import is_loopback

WILDCARDS = ("0.0.0.0", "::", "")


def is_remote(spec: ModuleSpec) -> bool:
    """A module that runs (or listens) on another host."""
    return spec.launch.remote or (spec.kind == "attach" and not is_loopback(spec.host))


def local_address(control: ControlSettings) -> str:
    """The receiver's address as seen from this PC."""
    return "127.0.0.1" if control.log_bind in WILDCARDS else control.log_bind


def address_for(control: ControlSettings, spec: ModuleSpec) -> str:
    """The receiver's address a module should send to (the port is added by the caller)."""
    if not is_remote(spec) or is_loopback(spec.host):
        return local_address(control)
    if control.log_bind not in WILDCARDS:
        return control.log_bind
    return route_source(spec.host) or local_address(control)


def route_source(host: str) -> str | None:
    """This PC's address on the route to ``host`` (a UDP connect sends nothing), or None."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return None


def allowed_peers(control: ControlSettings, modules: dict[str, ModuleSpec]) -> set[str]:
    """Addresses the receiver accepts beyond loopback: the hosts of remote modules, the
    ``log_allow`` list, and our own bind address (a local module sending to it)."""
    names = [m.host for m in modules.values() if is_remote(m)] + list(control.log_allow)
    if control.log_bind not in WILDCARDS:
        names.append(control.log_bind)
    out: set[str] = set()
    for name in names:
        try:
            out.update(str(a[4][0]) for a in socket.getaddrinfo(name, None))
        except OSError:
            continue  # unresolvable: the module cannot be reached either, and says so
    return out


def module_env(cfg: MeshConfig, name: str, log_port: int, display: str | None) -> dict[str, str]:
    """What the control room sets for module ``name``, wherever it runs (its token aside)."""
    spec = cfg.modules[name]
    env = {
        "MESH_LOG_SERVER": f"{address_for(cfg.control, spec)}:{log_port}",
        # a module on another host gets the same path: deploy the lab LSL config there too
        # (or set env.LSLAPICFG in its table), docs/multi-host.md
        "LSLAPICFG": os.environ["LSLAPICFG"],
        # Our modules send every record to the receiver; echoing them on stderr too would
        # show each record twice once the supervisor captures stderr into the same log.
        "MESH_LOG_CONSOLE": "0",
    }
    if spec.display and display is not None and not spec.launch.remote:
        env["DISPLAY"] = display
    return env


def lsl_scope_warning(cfg: MeshConfig) -> str | None:
    """Modules on other hosts with the loopback-only LSL config: their streams stay there."""
    from shared_utils.streams.lsl import LOOPBACK_CONFIG

    remote = [n for n, m in cfg.modules.items() if is_remote(m)]
    if remote and Path(os.environ.get("LSLAPICFG", "")) == LOOPBACK_CONFIG:
        return (
            f"modules {', '.join(remote)} are on other hosts but LSL is loopback-only "
            "(config/lsl_loopback.cfg): no stream will cross machines. Start the control room "
            "with LSLAPICFG=<lab config with KnownPeers> (docs/multi-host.md)"
        )
    return None
