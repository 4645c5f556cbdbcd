"""Who may write into the central log when the receiver listens beyond loopback.

Two checks, both needed because a log receiver on a lab network is reachable by every PC on it:
the peer's address must be one of the mesh's hosts (``allow``), and its first frame must be
``{"mesh_auth": "<token>"}``. Peers on loopback pass without either (a Dareplane module on this PC
keeps logging), unless ``trust_loopback`` is off. Shared by the receiver (which checks) and the
shipper (which sends the frame), so both sides agree on the frame and on what loopback is.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Collection
from typing import Any

AUTH_KEY = "mesh_auth"


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


def auth_frame(token: str) -> bytes:
    """The frame a remote sender starts each connection with (never stored by the receiver)."""
    body = json.dumps({AUTH_KEY: token}).encode()
    return len(body).to_bytes(4, "big") + body


class PeerGate:
    """The receiver's checks; ``refused`` counts refusals, :meth:`first_refusal` says whether to
    write a record about one (once per address: a scanner cannot flood the log)."""

    def __init__(
        self, allow: Collection[str] | None, token: str | None, trust_loopback: bool = True
    ) -> None:
        self.allow = None if allow is None else set(allow)
        self.token = token
        self.trust_loopback = trust_loopback
        self.refused = 0
        self._noted: set[str] = set()

    def admit(self, ip: str) -> tuple[bool, bool]:
        """(accepted, already authenticated) for a new connection from ``ip``."""
        local = self.trust_loopback and is_loopback(ip)
        if not local and self.allow is not None and ip not in self.allow:
            return False, False
        return True, local or self.token is None

    def authenticate(self, raw: dict[str, Any], authed: bool) -> str | None:
        """None when ``raw`` (an auth frame, or a record on an authenticated connection) is fine;
        else why the connection must be closed."""
        if AUTH_KEY in raw:
            given = raw.get(AUTH_KEY)
            if self.token is None or (
                isinstance(given, str) and hmac.compare_digest(given.encode(), self.token.encode())
            ):
                return None
            return "wrong token in the auth frame"
        if authed:
            return None
        return 'no auth frame first (a remote peer sends {"mesh_auth": token} first)'

    def first_refusal(self, ip: str) -> bool:
        self.refused += 1
        if ip in self._noted or len(self._noted) >= 1000:
            return False
        self._noted.add(ip)
        return True
