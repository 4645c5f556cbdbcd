"""Who may use the dashboard: the mesh token, a session cookie, and same-origin checks.

A dashboard next to the modules must not become the hole their token closed, so:

- with a mesh token (required off loopback, docs/protocol.md section 9) every request needs it;
  without it the answer is 401 and nothing else: no data, no script, no style (``/`` gets a bare
  log-in form so a person can type the token). The browser sends the token once, by that form or
  as ``/?token=...``, and gets an HttpOnly, ``SameSite=Strict`` cookie holding a value *derived*
  from the token (a leaked cookie does not give the module token away). Scripts may send
  ``Authorization: Bearer <token>`` instead. A wrong token is answered 0.25 s late, one at a time,
  as the modules do.
- commands (POST) need the ``X-Mesh-Dashboard`` header and a JSON body: a page on another site
  cannot send either without a CORS preflight, which this server never grants.
- without a token the dashboard only serves requests whose ``Host`` is a loopback name, so a web
  page cannot reach it by DNS rebinding either.

Pure ASGI (no BaseHTTPMiddleware) so server-sent event streams pass through untouched.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
from typing import Any
from urllib.parse import parse_qs

from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "mesh_dashboard"
CSRF_HEADER = "x-mesh-dashboard"
WRONG_TOKEN_DELAY_S = 0.25
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
_SESSION_SALT = b"closedloop-mesh dashboard session v1"

_LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>mesh dashboard</title>
</head><body style="font:18px sans-serif;margin:3em auto;max-width:28em">
<h1>Mesh dashboard</h1><p>This dashboard needs the mesh token (the first line of the token file
the control room uses).</p>{error}
<form method="post" action="/login"><input type="password" name="token" autofocus
autocomplete="current-password" aria-label="mesh token" style="font-size:18px;width:100%">
<p><button type="submit" style="font-size:18px">Open</button></p></form></body></html>"""


class Guard:
    """The checks, without the HTTP plumbing (so they can be tested on their own)."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.session = (
            hmac.new(token.encode(), _SESSION_SALT, hashlib.sha256).hexdigest() if token else None
        )
        self._wrong = asyncio.Lock()

    @property
    def required(self) -> bool:
        return self.token is not None

    def token_ok(self, value: str | None) -> bool:
        if self.token is None or not value:
            return False
        return hmac.compare_digest(value.encode(), self.token.encode())

    def host_ok(self, host_header: str | None) -> bool:
        """Without a token, only loopback names (DNS rebinding); with one, any host."""
        if self.required:
            return True
        if not host_header:
            return False
        name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
        return name.lower() in LOOPBACK_NAMES

    def authenticated(self, headers: dict[str, str], cookies: dict[str, str]) -> bool:
        if not self.required:
            return True
        assert self.session is not None
        if hmac.compare_digest(cookies.get(COOKIE, "").encode(), self.session.encode()):
            return True
        auth = headers.get("authorization", "")
        return auth.startswith("Bearer ") and self.token_ok(auth[7:].strip())

    async def wrong_token(self) -> None:
        """Answer a wrong token late, one at a time (4 guesses a second, however many clients)."""
        async with self._wrong:
            await asyncio.sleep(WRONG_TOKEN_DELAY_S)

    def login_response(self, to: str = "/") -> Response:
        resp = RedirectResponse(to, status_code=303)
        assert self.session is not None
        resp.set_cookie(COOKIE, self.session, httponly=True, samesite="strict", path="/")
        return resp


def unauthorized(page: bool, error: str = "") -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="closedloop-mesh"', "Cache-Control": "no-store"}
    if page:
        err = f'<p style="color:#b00">{html.escape(error)}</p>' if error else ""
        return HTMLResponse(_LOGIN_PAGE.format(error=err), status_code=401, headers=headers)
    return PlainTextResponse("authentication required", status_code=401, headers=headers)


class GuardMiddleware:
    """Apply :class:`Guard` to every HTTP request before the app sees it."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        resp = await self._check(scope, receive, headers)
        if resp is not None:
            await resp(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _check(self, scope: Scope, receive: Receive, headers: dict[str, str]) -> Any:
        g = self.guard
        if not g.host_ok(headers.get("host")):
            return PlainTextResponse("unknown host", status_code=421)
        method, path = scope["method"], scope["path"]
        if method == "POST" and not _same_origin(headers):
            return PlainTextResponse("cross-origin request refused", status_code=403)
        if g.required and path == "/login" and method == "POST":
            body = await _read_body(receive, 4096)
            token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0].strip()
            if g.token_ok(token):
                return g.login_response()
            await g.wrong_token()
            return unauthorized(True, "wrong token")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if g.required and path == "/" and "token" in query:
            if g.token_ok(query["token"][0]):
                return g.login_response()  # the token leaves the address bar at once
            await g.wrong_token()
            return unauthorized(True, "wrong token")
        if not g.authenticated(headers, _cookies(headers)):
            return unauthorized(page=path == "/" and method == "GET")
        if method == "POST" and path.startswith("/api/"):
            if headers.get(CSRF_HEADER) != "1" or not headers.get("content-type", "").startswith(
                "application/json"
            ):
                return PlainTextResponse(
                    f"commands need the {CSRF_HEADER} header and a JSON body", status_code=403
                )
        return None


def _same_origin(headers: dict[str, str]) -> bool:
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser cross-site request (curl, scripts); the header rule still holds
    host = headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in headers.get("cookie", "").split(";"):
        k, sep, v = part.strip().partition("=")
        if sep:
            out[k] = v
    return out


async def _read_body(receive: Receive, limit: int) -> bytes:
    body = b""
    more = True
    while more and len(body) <= limit:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    return body[:limit]
