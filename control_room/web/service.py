"""The dashboard as a part of the control room: bound on start-up, served from one thread.

Why uvicorn + Starlette: both are small, widely used and well kept (encode's projects, used by
FastAPI); Starlette gives routing, static files and streaming responses without a framework
around them, and plain uvicorn (no extras) serves HTTP/1.1 with h11, which is all server-sent
events need. uvicorn runs in its own thread with its own event loop: the control room's threads
never wait for a browser.

The port is bound here, synchronously, before any module starts, so a taken port fails
start-up with a clear message like the control room's other ports; uvicorn is then handed the
socket. On shutdown every event stream is ended first (so uvicorn has no open connection to
wait for), then the server is told to exit.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from control_room.web.auth import Guard
from control_room.web.hub import Hub
from control_room.web.monitor import Monitor
from control_room.web.plot import Plots

HELP_CACHE_S = 60.0


class Dashboard:
    """``Dashboard(room, host, port, token).start()``; ``url``; ``stop()``."""

    def __init__(self, room: Any, host: str, port: int, token: str | None) -> None:
        self.room = room
        self.guard = Guard(token)
        self.hub = Hub()
        self.plots = Plots(self.hub.send_plot, self.hub.send_to)
        self.monitor = Monitor(room, self.hub)
        self.hub.on_count = self.monitor.set_active
        self.hub.on_leave = self.plots.drop_page
        self._help: dict[str, tuple[Any, float, Any]] = {}  # module -> (pid, when, HELP)
        self._sock = _bind(host, port)
        self.host = host
        self.port = self._sock.getsockname()[1]
        shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{shown}:{self.port}/"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> Dashboard:
        import uvicorn

        from control_room.web.app import build_app

        config = uvicorn.Config(
            build_app(self),
            log_config=None,  # leave the control room's logging alone
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="dashboard", daemon=True
        )
        self._thread.start()
        self.monitor.start()
        return self

    def wait_started(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._server is not None and self._server.started:
                return True
            if self._thread is not None and not self._thread.is_alive():
                return False
            time.sleep(0.01)
        return False

    def release_streams(self) -> None:
        """Let go of every LSL stream (live plots, the trial feed, the stream table) before the
        modules stop, so their clean exits are not reported by liblsl as broken streams."""
        self.plots.close()
        if not self.monitor.release_streams():  # busy past its wait: say why an error may follow
            self.room.log.warning(
                "dashboard: stream readers still open as modules stop; liblsl may report "
                "their streams as broken off"
            )

    def stop(self) -> None:
        """End every event stream, stop the plots and the monitor, then the server."""
        self.hub.stop()
        self.plots.close()
        self.monitor.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(3.0)
        self._sock.close()

    def drop_pages(self) -> None:
        """Cut every page's event stream (pages reconnect by themselves and say so)."""
        self.hub.drop_all()

    def help_of(self, module: str) -> Any:
        """The module's HELP, asked once per process (``None`` if it has no HELP)."""
        h = self.room.handle(module)
        cached = self._help.get(module)
        if (
            cached is not None
            and cached[0] == h.pid
            and time.monotonic() - cached[1] < HELP_CACHE_S
        ):
            return cached[2]
        offered = {c.upper() for c in h.commands}
        if "HELP" not in offered or h.protocol == "dareplane":
            res = None
        else:
            res = self.room.send(module, "HELP", {}, quiet=True, timeout=5.0)
        self._help[module] = (h.pid, time.monotonic(), res)
        return res


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def start_dashboard(room: Any) -> Dashboard:
    """Bind ``[control_room] web_port`` on the control room's host and serve from a thread.

    Raises ``OSError`` when the port is taken; the caller says which setting to change."""
    c = room.cfg.control
    return Dashboard(room, c.host, c.web_port, room.cfg.tokens.mesh).start()
