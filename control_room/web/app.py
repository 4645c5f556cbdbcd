"""The dashboard's routes: the page, its event stream, and commands through the control room.

Every command a page sends goes through :class:`control_room.server.RoomCommands`, the same
functions behind the control room's ``SEND``, ``MACRO``, ``CANCEL``, ``RESTART``,
``SESSION_START`` and ``SESSION_STOP``: it is marked on LSL, published on the bus and checked
against the module's state exactly like one from the CLI; there is no second path to a module.

| route | what |
|---|---|
| ``GET /`` | the page (``static/index.html``) |
| ``GET /events`` | server-sent events: ``snapshot`` first, then everything as it happens |
| ``GET /api/status`` | the snapshot as JSON (scripts, tests) |
| ``GET /api/help/{module}`` | the module's ``HELP`` (``null`` when it has none) |
| ``POST /api/send`` | ``{module, cmd, kwargs, timeout_s}`` -> ``{ok, result}`` / ``{ok: false, error}`` |
| ``POST /api/macro`` | ``{name, kwargs}``: starts it; its steps arrive as ``macro`` events |
| ``POST /api/cancel`` | cancel the running macro |
| ``POST /api/restart`` | ``{module}``: restart one module, reply once it is ready |
| ``POST /api/session_start`` | ``{subject, project, procedures, exp_ref}``: ``SESSION_START`` |
| ``POST /api/session_stop`` | ``{interrupt, reason}``: ``SESSION_STOP`` (both: ``session`` events) |
| ``POST /api/plot`` | ``{page, slot, stream, seconds, cols}``: what a plot of this page shows |
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from control_room.web.auth import GuardMiddleware
from control_room.web.hub import encode

STATIC = Path(__file__).resolve().parent / "static"
NO_STORE = {"Cache-Control": "no-store"}


def _json(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, default=str, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json", headers=NO_STORE)


class BadRequest(Exception):
    pass


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _command(fn: Any) -> Any:
    """A POST route running ``fn(body)`` off the event loop: ``{ok, result}`` or
    ``{ok: false, error}`` with the control room's (and so the module's) own text."""

    async def route(request: Request) -> Response:
        try:
            body = await _body(request)
            result = await run_in_threadpool(fn, body)
        except BadRequest as exc:
            return _json({"ok": False, "error": str(exc)}, 400)
        except Exception as exc:  # CommandError & co: the reply the CLI would print
            return _json({"ok": False, "error": str(exc)})
        return _json({"ok": True, "result": result})

    return route


def _checked(name: str, fn: Any) -> Any:
    """``fn(**body)`` with the body's keys checked first against ``fn``'s signature by the
    protocol's own command table, so a wrong or mistyped argument is refused in the words the
    control room's ``name`` command uses over TCP."""
    from shared_utils.protocol.commands import make_command

    command = make_command(name, fn)

    def call(b: dict[str, Any]) -> Any:
        command.validate(b)
        return fn(**b)

    return call


def _actions(dash: Any, commands: Any) -> dict[str, Any]:
    """What the page's POSTs do, each through the control room's own command functions."""

    def send(b: dict[str, Any]) -> Any:
        kwargs = b.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise BadRequest("kwargs must be a JSON object")
        timeout = float(b.get("timeout_s", 30.0))
        return commands.send(str(b.get("module", "")), cmd=str(b.get("cmd", "")) or None,
                             kwargs=kwargs, timeout_s=timeout)  # fmt: skip

    def macro(b: dict[str, Any]) -> Any:
        kwargs = b.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise BadRequest("kwargs must be a JSON object")
        return commands.macro(str(b.get("name", "")), kwargs, wait=False)

    def plot(b: dict[str, Any]) -> Any:
        page = str(b.get("page", ""))
        if page not in dash.hub.clients:
            raise BadRequest(f"no open page {page!r} (the event stream reconnects first)")
        stream = b.get("stream") or None
        key = dash.plots.subscribe(
            page, str(b.get("slot", "main")), stream, float(b.get("seconds", 5)),
            int(b.get("cols", 600)),
        )  # fmt: skip
        return {"key": key}

    return {
        "send": send,
        "macro": macro,
        "cancel": lambda b: commands.cancel(),
        "restart": lambda b: commands.restart(str(b.get("module", ""))),
        "plot": plot,
        "session_start": _checked("SESSION_START", commands.session_start),
        "session_stop": _checked("SESSION_STOP", commands.session_stop),
    }


def build_app(dash: Any) -> Starlette:
    """The Starlette app for ``dash`` (a :class:`control_room.web.service.Dashboard`)."""
    from control_room.server import RoomCommands

    commands = RoomCommands(dash.room, source="web")
    act = _actions(dash, commands)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def events(request: Request) -> Response:
        page = dash.hub.register()  # events from now on are queued for it ...
        try:
            snap = await run_in_threadpool(dash.monitor.snapshot)  # ... so none falls in between
        except BaseException:
            dash.hub.unregister(page)
            raise
        snap["page"] = page.id
        snap["token_required"] = dash.guard.required
        return StreamingResponse(
            dash.hub.stream(page, encode("snapshot", snap)),
            media_type="text/event-stream",
            headers={**NO_STORE, "X-Accel-Buffering": "no"},
        )

    async def status(request: Request) -> Response:
        return _json(await run_in_threadpool(dash.monitor.snapshot))

    async def help_(request: Request) -> Response:
        module = request.path_params["module"]
        try:
            return _json({"help": await run_in_threadpool(dash.help_of, module)})
        except Exception as exc:  # unknown module, or it is not ready: the page retries later
            return _json({"help": None, "error": str(exc)})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import asyncio

        dash.hub.bind(asyncio.get_running_loop())
        yield

    routes = [
        Route("/", index),
        Route("/events", events),
        Route("/api/status", status),
        Route("/api/help/{module}", help_),
        *(Route(f"/api/{name}", _command(fn), methods=["POST"]) for name, fn in act.items()),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(GuardMiddleware, guard=dash.guard)
    return app
