"""Validation of everything token-related in a config: where tokens come from, who needs one.

Checked on load, with the rest of the file, so a mesh that could not authenticate never starts:
a token written into the file (``token = ...``, ``env.MESH_TOKEN``, ``--token`` in args) is an
error naming the safe alternative, and so is a module or control room beyond loopback with no
token to use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from control_room.checker import Checker
from control_room.schema import ControlSettings, ModuleSpec
from control_room.tokens import (
    TOKEN_ENV,
    TokenError,
    Tokens,
    env_token,
    mesh_token,
    needs_token,
)

_WHERE = f'${TOKEN_ENV} or [control_room] token_file = "path"'


def check_keys(ck: Checker, keys: tuple[Any, ...], t: dict[str, Any], allowed: set[str]) -> None:
    """Unknown keys of table ``t``; a token written into it is reported as what it is."""
    reported = _forbid_inline_token(ck, keys, t)
    ck.unknown({k: v for k, v in t.items() if k not in reported}, keys, allowed)


def _forbid_inline_token(ck: Checker, keys: tuple[Any, ...], t: dict[str, Any]) -> set[str]:
    """Report a token written into the config; returns the keys already reported."""
    reported = set()
    if "token" in t:
        ck.error(
            (*keys, "token"),
            "a token never goes in the config file (anyone who gets the file gets the token); "
            f"use {_WHERE}" + ("" if keys == ("control_room",) else ', or token_env = "VAR"'),
        )
        reported.add("token")
    env = t.get("env")
    if isinstance(env, dict) and TOKEN_ENV in env:
        ck.error(
            (*keys, "env", TOKEN_ENV),
            f'the token is not set through env: modules get it from {_WHERE} (or token_env = "VAR")',
        )
    for key in ("args", "cmd"):
        values = t.get(key)
        if isinstance(values, list) and any(
            isinstance(a, str) and (a == "--token" or a.startswith("--token=")) for a in values
        ):
            ck.error(
                (*keys, key),
                "--token on a command line shows in `ps` to every user; the control room passes "
                f"the token in the environment ({_WHERE}), or use --token-file PATH",
            )
    kwargs = t.get("kwargs")
    if isinstance(kwargs, dict) and "token" in kwargs:
        ck.error((*keys, "kwargs", "token"), f"would put the token on a command line; use {_WHERE}")
    return reported


def check_tokens(
    ck: Checker, control: ControlSettings, modules: dict[str, ModuleSpec], path: Path
) -> Tokens:
    """Read the token sources the config names; every address beyond loopback needs a token."""
    try:
        mesh, mesh_source = mesh_token(control.token_file, path.parent)
    except TokenError as exc:
        ck.error(("control_room", "token_file"), str(exc))
        return Tokens()  # who needs a token is moot until the file can be read
    per_module: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for m in modules.values():
        if m.token_env:
            try:
                per_module[m.name] = env_token(m.token_env)
                sources[m.name] = f"${m.token_env}"
            except TokenError as exc:
                ck.problems.append(f"{ck.path}:{m.line}: modules.{m.name}.token_env: {exc}")
    tokens = Tokens(mesh, mesh_source, per_module, sources)
    if needs_token(control.host) and not mesh:
        ck.error(
            ("control_room", "host"),
            f"the control room's port on {control.host} (beyond loopback) needs a token: set "
            f"{_WHERE}; the CLI then sends it too",
        )
    elif control.log_host and needs_token(control.log_host) and not mesh:
        ck.error(
            ("control_room", "log_host"),
            f"a log receiver on {control.log_host} (beyond loopback) needs a token (remote "
            f"modules authenticate with it): set {_WHERE}",
        )
    for m in modules.values():
        # a module with token_env has its own token (or its unset variable is reported above)
        if needs_token(m.host) and not m.token_env and not mesh:
            ck.problems.append(
                f"{ck.path}:{m.line}: modules.{m.name}.host: {m.host} is beyond loopback, so the "
                f'module needs a token and none is set: set {_WHERE} (or token_env = "VAR" '
                "naming the variable with this module's token)"
            )
    return tokens
