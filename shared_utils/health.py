"""Health probe for any module on the mesh protocol: ``python -m shared_utils.health PORT [HOST]``.

Container healthchecks (compose.yaml) and shell scripts need a yes/no answer to "is this module
serving commands?" without extra tools in the image (no ``nc``, no ``curl``). The probe connects,
authenticates if ``$MESH_TOKEN`` is set (``AUTH|{"token": ...}``, as modules bound beyond loopback
require), sends ``UP`` and waits for a reply line with ``"ok": true``. It exits 0 when healthy and
1 otherwise, printing one line that says why. The token is never printed.

Standard library only, so it imports fast (a healthcheck runs every few seconds) and works for a
module written in any language.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

DEFAULT_HOST = "127.0.0.1"
DEFAULT_TIMEOUT_S = 3.0
TOKEN_ENV = "MESH_TOKEN"


class Unhealthy(Exception):
    """The module did not prove it is serving; the message is the one-line reason."""


def _read_reply(sock: socket.socket, buf: bytearray, deadline: float, what: str) -> dict:
    """The next reply line that is a JSON object; other lines (a Dareplane banner) are skipped."""
    while True:
        nl = buf.find(b"\n")
        if nl >= 0:
            line = bytes(buf[:nl]).strip()
            del buf[: nl + 1]
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            if isinstance(reply, dict):
                return reply
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise Unhealthy(f"no reply to {what}")
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            raise Unhealthy(f"no reply to {what}") from None
        if not data:
            raise Unhealthy(f"connection closed before the reply to {what}")
        buf += data
        if len(buf) > 1 << 20:
            raise Unhealthy(f"reply to {what} is not a protocol line")


def probe(
    port: int,
    host: str = DEFAULT_HOST,
    timeout: float = DEFAULT_TIMEOUT_S,
    token: str | None = None,
) -> float:
    """Send ``UP`` (after ``AUTH`` if a token is given); return the round trip in seconds.

    Raises :class:`Unhealthy` with the reason when the module cannot be reached, refuses the token,
    or does not answer ``{"ok": true}`` within ``timeout`` seconds.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise Unhealthy(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    buf = bytearray()
    try:
        with sock:
            if token:
                sock.sendall(b"AUTH|" + json.dumps({"token": token}).encode() + b"\n")
                reply = _read_reply(sock, buf, deadline, "AUTH")
                if reply.get("ok") is not True:
                    raise Unhealthy(f"AUTH refused: {reply.get('error', 'no reason given')}")
            sent = time.monotonic()
            sock.sendall(b"UP\n")
            reply = _read_reply(sock, buf, deadline, "UP")
            if reply.get("ok") is not True:
                raise Unhealthy(f"UP answered with an error: {reply.get('error', reply)}")
            return time.monotonic() - sent
    except OSError as exc:
        raise Unhealthy(f"connection to {host}:{port} failed: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared_utils.health",
        description="Exit 0 if the module on HOST:PORT answers UP, else 1 (one line says why). "
        f"Sends AUTH first when ${TOKEN_ENV} is set.",
    )
    parser.add_argument("port", type=int, help="the module's command port")
    parser.add_argument("host", nargs="?", default=DEFAULT_HOST, help="default %(default)s")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds (default %(default)s)"
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"port must be 1..65535, got {args.port}")
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    try:
        rtt = probe(args.port, args.host, args.timeout, os.environ.get(TOKEN_ENV) or None)
    except Unhealthy as exc:
        print(f"unhealthy: {args.host}:{args.port}: {exc}")
        return 1
    print(f"healthy: {args.host}:{args.port} answered UP in {rtt * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
