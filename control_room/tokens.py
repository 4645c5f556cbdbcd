"""Where the mesh token comes from and which token each module gets.

Rules (docs/protocol.md, "Security"):
- the control room's token comes from ``[control_room] token_file`` (first line of that file) or
  else ``$MESH_TOKEN``; never from the config file itself, so a config can be shared or committed;
- a module uses the mesh token unless its table names another variable (``token_env = "VAR"``),
  for a module on another host that has a token of its own;
- a token travels to a child only in its environment (``MESH_TOKEN``), never on its argv, where
  every user of the machine can read it in ``ps``; it is never logged or shown in STATUS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared_utils.protocol.server import TOKEN_ENV, is_loopback

#: Variables the control room sets itself for each child (a stale value must not leak through).
CHILD_TOKEN_VARS = (TOKEN_ENV, "MESH_TOKEN_FILE")


class TokenError(ValueError):
    """A token source named in the config cannot be used; the text says which and why."""


def read_token_file(path: str | Path) -> str:
    """The first line of ``path``, stripped; :class:`TokenError` if unreadable or empty."""
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TokenError(f"cannot read token file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TokenError(f"token file {path} is not UTF-8 text") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise TokenError(f"token file {path} is empty (the token is its first line)")
    return token


@dataclass(frozen=True)
class Tokens:
    """The mesh token and per-module tokens; ``repr`` never shows a value."""

    mesh: str | None = field(default=None, repr=False)
    mesh_source: str = "none"
    per_module: Mapping[str, str | None] = field(default_factory=dict, repr=False)
    sources: Mapping[str, str] = field(default_factory=dict)

    def for_module(self, name: str) -> str | None:
        return self.per_module.get(name, self.mesh)

    def source_of(self, name: str) -> str:
        """Where the token used for ``name`` comes from, for messages ("$MESH_TOKEN", ...)."""
        return self.sources.get(name, self.mesh_source)


def mesh_token(
    token_file: str | None, base: Path, environ: Mapping[str, str] = os.environ
) -> tuple[str | None, str]:
    """(token, where it came from): ``token_file`` (relative to ``base``), else ``$MESH_TOKEN``."""
    if token_file:
        path = Path(token_file).expanduser()
        path = path if path.is_absolute() else base / path
        return read_token_file(path), f"token_file {path}"
    token = environ.get(TOKEN_ENV) or None
    return token, (f"${TOKEN_ENV}" if token else "none")


def env_token(var: str, environ: Mapping[str, str] = os.environ) -> str:
    """The value of ``$var`` (a module's ``token_env``); :class:`TokenError` if unset or empty."""
    value = environ.get(var)
    if not value:
        raise TokenError(f"${var} is not set (or empty)")
    return value


def needs_token(host: str) -> bool:
    """Whether talking to ``host`` (a module's or our own address) requires a token."""
    return not is_loopback(host)


def child_env(base: Mapping[str, str], token: str | None) -> dict[str, str]:
    """``base`` without inherited token variables, plus ``MESH_TOKEN`` when the module has one."""
    env = {k: v for k, v in base.items() if k not in CHILD_TOKEN_VARS}
    if token:
        env[TOKEN_ENV] = token
    return env


def auth_hint(source: str) -> str:
    """What to set so the control room has the right token (for error messages)."""
    where = f" (now from {source})" if source != "none" else ""
    return (
        f"give the control room the module's token{where}: set ${TOKEN_ENV} or "
        '[control_room] token_file = "path", or token_env = "VAR" in the module\'s table'
    )


def auth_refusal(where: str, error: str, source: str) -> str | None:
    """The message for a module (``where``: "name: host:port") that refused our token or wanted
    one we do not have, from its error reply; None for any other error."""
    text = error.lower()
    if "authentication required" in text:
        return (
            f"{where} requires a token (it answered 'authentication required') and the "
            f"control room has none for it; {auth_hint(source)}"
        )
    if "wrong token" in text:
        return (
            f"{where} refused the control room's token from {source} ('wrong token'); "
            f"{auth_hint(source)}"
        )
    return None
