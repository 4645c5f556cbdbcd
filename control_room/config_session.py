"""Validation of the ``[session]`` table (docs/sessions.md), with the rest of the config.

Checked on load so a session never fails minutes in for a typo: the main sync and the
participants must be modules or remote rigs of this config, a remote rig's name must not be a
module's, its address must be one iblutil can reach, and every timeout must be a known message.
"""

from __future__ import annotations

import re
from typing import Any

from control_room.checker import Checker
from control_room.schema import LOST_POLICIES, SESSION_TIMEOUTS, ModuleSpec, SessionSettings
from shared_utils.checks import choice_message, unknown_message

_KEYS = {
    "main_sync", "participants", "project", "timeouts", "on_module_lost", "status_every_s",
    "options", "remote_rigs", "iblutil_listen", "iblutil_main_sync",
}  # fmt: skip
IBLUTIL_PORT = 11001  # iblutil.io.net.base.LISTEN_PORT
_URI = re.compile(r"^(?:(?P<scheme>[A-Za-z]+)://)?(?P<host>[^:/\s]+)(?::(?P<port>\d+))?/?$")


def parse_udp_uri(text: str) -> tuple[str, int]:
    """``udp://host:port``, ``host:port`` or ``host`` (iblutil's forms) -> (host, port).

    Only UDP: iblutil's TCP mode (``tcp://``, ``ws://``) sends messages without framing, so an
    echo and a reply that arrive together cannot be told apart.
    """
    m = _URI.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not an address like 'udp://192.168.1.20:11001'")
    scheme = (m["scheme"] or "udp").lower()
    if scheme != "udp":
        raise ValueError(
            f"{text!r}: only udp:// is supported (iblutil's {scheme}:// mode has no message "
            "framing and loses messages)"
        )
    port = int(m["port"] or IBLUTIL_PORT)
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port must be 1-65535")
    return m["host"], port


def check_session(ck: Checker, t: Any, modules: dict[str, ModuleSpec]) -> SessionSettings:
    keys = ("session",)
    if not isinstance(t, dict):
        ck.error(keys, "must be a table")
        return SessionSettings()
    ck.unknown(t, keys, _KEYS)
    d = SessionSettings()
    rigs = _rigs(ck, ck.get(t, keys, "remote_rigs", dict, {}), modules)
    known = [*modules, *rigs]
    main = ck.get(t, keys, "main_sync", str, None)
    if main is not None and main not in known and main != "control_room":
        ck.error(
            (*keys, "main_sync"), unknown_message("participant", main, [*known, "control_room"])
        )
    parts = ck.str_list(t, keys, "participants") if "participants" in t else None
    for p in parts or []:
        if p not in known:
            ck.error((*keys, "participants"), unknown_message("participant", p, known))
    if parts is not None and main not in (None, "control_room") and main not in parts:
        ck.error((*keys, "main_sync"), f"{main!r} is not one of the participants")
    timeouts = dict(d.timeouts)
    tt = ck.get(t, keys, "timeouts", dict, {})
    ck.unknown(tt, (*keys, "timeouts"), set(SESSION_TIMEOUTS))
    for k in SESSION_TIMEOUTS:
        timeouts[k] = ck.number(tt, (*keys, "timeouts"), k, timeouts[k], lo=0.1)
    lost = ck.get(t, keys, "on_module_lost", str, d.on_module_lost)
    if lost not in LOST_POLICIES:
        ck.error((*keys, "on_module_lost"), choice_message(lost, LOST_POLICIES))
    options = ck.get(t, keys, "options", dict, {})
    for name, opts in options.items():
        if name not in known:
            ck.error((*keys, "options", name), unknown_message("participant", name, known))
        elif not isinstance(opts, dict):
            ck.error((*keys, "options", name), "must be a table of arguments for EXPINIT/EXPSTART")
    listen = ck.get(t, keys, "iblutil_listen", str, None)
    if listen is not None:
        try:
            parse_udp_uri(listen)
        except ValueError as exc:
            ck.error((*keys, "iblutil_listen"), str(exc))
    return SessionSettings(
        main_sync=main,
        participants=parts,
        project=ck.get(t, keys, "project", str, None),
        timeouts=timeouts,
        on_module_lost=lost,
        status_every_s=ck.number(t, keys, "status_every_s", d.status_every_s, lo=0.1),
        options={k: v for k, v in options.items() if isinstance(v, dict)},
        remote_rigs=rigs,
        iblutil_listen=listen,
        iblutil_main_sync=ck.get(t, keys, "iblutil_main_sync", bool, False),
    )


def _rigs(ck: Checker, rigs: dict[str, Any], modules: dict[str, ModuleSpec]) -> dict[str, str]:
    """``remote_rigs``: the name -> URI map of iblrig's ``remote_devices.yaml``."""
    out = {}
    for name, uri in rigs.items():
        k = ("session", "remote_rigs", name)
        if name in modules or name == "control_room":
            ck.error(k, f"{name!r} is already a module; give the rig another name")
        elif not isinstance(uri, str):
            ck.error(k, f"must be an address like 'udp://192.168.1.20:11001', got {uri!r}")
        else:
            try:
                parse_udp_uri(uri)
                out[name] = uri
            except ValueError as exc:
                ck.error(k, str(exc))
    return out
