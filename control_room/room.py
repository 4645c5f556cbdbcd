"""The control room: log receiver, event bus, command markers, supervisor, router, own server.

Start-up order matters and is fixed here: the log receiver first (so nothing a module logs while
starting is lost), then the PUB socket and the LSL marker stream (so a recorder started later
sees it), a virtual display if a module needs one, the control room's own command port, and
finally the modules. Any failure tears down what was started, in reverse, and raises.
"""

from __future__ import annotations

import collections
import logging as std_logging
import os
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from control_room import reach
from control_room.clocks import ClockMonitor
from control_room.config import MeshConfig
from control_room.console import Console
from control_room.events import CommandMarkers, EventBus
from control_room.handle import StartError
from control_room.macros import Cancel, MacroRunner
from control_room.ports import port_holder
from control_room.room_api import RoomApi
from control_room.router import CallbackRouter
from control_room.spawn import spawn
from control_room.supervisor import Supervisor
from control_room.tokens import needs_token
from shared_utils.paths import data_dir
from shared_utils.platform.xvfb import Xvfb
from shared_utils.streams.lsl import use_loopback

FINALLY_WAIT_S = 30.0  # shutdown waits this long for a cancelled macro's finally steps


class ControlRoom(RoomApi):
    """Everything ``control-room up`` runs; usable from Python and tests too."""

    def __init__(self, cfg: MeshConfig, console: TextIO | None = None) -> None:
        self.cfg = cfg
        self.console = Console(console)
        self.stop_event = threading.Event()  # cancels macros and waits
        self.down_requested = threading.Event()
        self.receiver: Any = None
        self.bus: EventBus | None = None
        self.markers: CommandMarkers | None = None
        self.xvfb: Xvfb | None = None
        self.server: Any = None
        self.web: Any = None  # the dashboard (control_room/web), when [control_room] web
        self.supervisor: Supervisor | None = None
        self.router = CallbackRouter(self._route_callback)
        self.logs: collections.deque[tuple[int, dict[str, Any]]] = collections.deque(maxlen=20_000)
        self._log_seq = 0
        self._log_lock = threading.Lock()
        self._shipper: Any = None
        self._down_lock = threading.Lock()
        self._is_down = False
        self.startup_s: float | None = None
        self.clocks: ClockMonitor | None = None  # offsets to each module's host, once up
        self.running_macro: str | None = None
        self._cancels: set[Cancel] = set()  # one per running macro
        self._macro_idle = threading.Event()
        self._macro_idle.set()
        self.last_reports: dict[str, dict[str, Any]] = {}
        # the mesh data folder ([control_room] data_dir, else $MESH_DATA_DIR, else ./data)
        self.data_dir = Path(cfg.control.data_dir or data_dir()).expanduser().resolve()
        self.sessions: Any = None  # control_room/session.py, once the modules are up
        self.bridge: Any = None  # control_room/iblutil_bridge.py, with [session] iblutil_listen
        self.reply_ms: collections.deque[float] = collections.deque(maxlen=10_000)
        self.log = std_logging.getLogger("control_room")
        self.runner = MacroRunner(
            cfg.macros,
            send=self.send,
            wait_stream=self.wait_stream,
            module_info=self.module_info,
            stop_event=self.stop_event,
            step_sleep_s=cfg.step_sleep_s,
            on_step=self._on_step,
            restart=self.restart_module,
        )

    # -- start-up --------------------------------------------------------------------------------
    def up(self) -> float:
        """Start everything; returns seconds from the first module launch to all modules ready."""
        use_loopback()  # before the first pylsl call; children inherit LSLAPICFG
        try:
            self._start_services()
            self.supervisor = Supervisor(
                self.cfg,
                line_sink=self._module_line,
                publish=self.publish,
                stream_check=self.wait_stream,
                extra_env=self._module_env,
                on_ready=self.router.attach,
            )
            if self.stop_event.is_set():  # a stop signal while the services started
                self.supervisor.request_stop()
            self.startup_s = self.supervisor.start_all()
            self._start_sessions()
        except BaseException:
            self.down()
            raise
        self.clocks = ClockMonitor(self.supervisor.handles, self.publish, self.log.warning).start()
        self.publish("control_room", state="ready", startup_s=self.startup_s)
        return self.startup_s

    def _start_services(self) -> None:
        from shared_utils.logging import LogShipper, configure_logging
        from shared_utils.logging.receiver import LogReceiver

        c = self.cfg.control
        remote = needs_token(c.log_bind)  # bound beyond loopback
        self.receiver = LogReceiver(
            c.log_bind,
            c.log_port,
            c.log_dir,
            on_record=self._on_log,
            # beyond loopback: only the configured hosts, each authenticated with the token
            allow=reach.allowed_peers(c, self.cfg.modules) if remote else None,
            token=self.cfg.tokens.mesh if remote else None,
        )
        try:
            self.receiver.start()
        except OSError as exc:
            hint = "Is another control room or log receiver running? "
            raise _taken(
                "log receiver", c.log_bind, c.log_port, "log_port", exc.strerror, hint
            ) from None
        warning = reach.lsl_scope_warning(self.cfg)
        if warning:
            self.console.note(f"warning: {warning}")
        addr = (reach.local_address(c), self.receiver.port)
        token = self.cfg.tokens.mesh  # the receiver wants it from any address beyond loopback
        configure_logging(
            "control_room", log_server=f"{addr[0]}:{addr[1]}", console=False, token=token
        )
        self._shipper = LogShipper(addr, module="control_room", token=token)
        try:
            self.bus = EventBus(c.host, c.pub_port)
        except OSError as exc:
            raise _taken("event bus", c.host, c.pub_port, "pub_port", exc) from None
        self.markers = CommandMarkers(c.marker_stream)
        if (
            c.xvfb == "auto"
            and not os.environ.get("DISPLAY")
            and any(m.display and not m.launch.remote for m in self.cfg.modules.values())
        ):
            try:
                self.xvfb = Xvfb(spawn=spawn)  # dies with the control room, even on SIGKILL
            except RuntimeError as exc:
                raise StartError(str(exc)) from None
            self.console.note(f"no DISPLAY: started Xvfb on {self.xvfb.display}")
        self._start_server()
        self._start_web()

    def _start_web(self) -> None:
        c = self.cfg.control
        if not c.web:
            return
        from control_room.web import start_dashboard

        try:
            self.web = start_dashboard(self)
        except OSError as exc:
            raise _taken("dashboard", c.host, c.web_port, "web_port", exc.strerror) from None
        assert self.bus is not None
        self.bus.add_listener(self.web.monitor.on_event)
        self.console.note(f"dashboard on {self.web.url}")

    def _start_sessions(self) -> None:
        from control_room.iblutil_bridge import open_bridge
        from control_room.session import SessionManager

        self.sessions = SessionManager(self, self.data_dir)
        if self.bus is not None:
            self.bus.add_listener(self.sessions.on_event)
        self.bridge = open_bridge(self.sessions, self.cfg.session, self.console)

    def _start_server(self) -> None:
        from control_room.server import start_command_server

        self.server = start_command_server(self)
        c = self.cfg.control
        self.console.note(
            f"control room on {c.host}:{self.server.port}, events on {self.bus.address if self.bus else '-'}, "
            f"logs in {self.receiver.path}"
        )

    def _module_env(self, name: str) -> dict[str, str]:
        env = reach.module_env(
            self.cfg, name, self.receiver.port, self.xvfb.display if self.xvfb else None
        )
        if not self.cfg.modules[name].launch.remote:
            # one data folder for the mesh on this machine: session folders and relative file
            # names land there (a module on another host uses its own --data-dir)
            env["MESH_DATA_DIR"] = str(self.data_dir)
        return env

    # -- shutdown --------------------------------------------------------------------------------
    def down(self) -> dict[str, list[str]]:
        """Stop modules (STOP, CLOSE, signals), then the control room's own services. Idempotent."""
        with self._down_lock:
            if self._is_down:
                return {}
            self._is_down = True
        self.stop_event.set()
        self.cancel_macro("the control room is shutting down")
        self.down_requested.set()
        if not self._macro_idle.wait(FINALLY_WAIT_S):  # its finally steps need the modules
            self.log.warning("macro %s still running after %s s; stopping the modules anyway",
                             self.running_macro, FINALLY_WAIT_S)  # fmt: skip
        if self.bridge is not None:
            self.bridge.close()
        if self.sessions is not None:  # a session still running is interrupted, never left
            self.sessions.shutdown("the control room is shutting down")
        steps: dict[str, list[str]] = {}
        if self.clocks is not None:
            self.clocks.close()
        if self.web is not None:  # its inlets first: the modules' outlets are about to end
            self.web.release_streams()
        if self.supervisor is not None:
            steps = self.supervisor.stop_all()
        self._sweep_rings()
        self.router.close()
        if self.xvfb is not None:
            self.xvfb.stop()
        if self.web is not None:
            self.web.stop()
        if self.server is not None:
            self.server.request_stop()
            self.server.wait_closed(3.0)
        self.publish("control_room", state="stopped")
        if self.markers is not None:
            self.markers.close()
        if self.bus is not None:
            self.bus.close()
        from shared_utils.logging import shutdown_logging

        shutdown_logging(1.0)
        if self._shipper is not None:
            self._shipper.close(1.0)
        if self.receiver is not None:
            deadline = time.monotonic() + 1.0
            while (
                self._shipper is not None
                and self._shipper.pending()
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
            time.sleep(0.15)  # one receiver select round to write what just arrived
            self.receiver.close()
        return steps

    def _sweep_rings(self) -> None:
        """Remove the shared-memory rings of this mesh's session whose writer is gone (a module
        that was killed cannot remove its own), so none outlives the mesh."""
        try:
            from shared_utils.streams.shm import sweep_stale

            removed = sweep_stale()
        except (ImportError, OSError) as exc:  # not Linux: no rings to sweep
            self.log.warning("could not sweep shared-memory rings: %s", exc)
            return
        if removed:
            names = ", ".join(str(r.get("name") or r.get("segment")) for r in removed)
            self.console.note(
                f"removed {len(removed)} shared-memory ring(s) of dead writers: {names}"
            )


def _taken(what: str, host: str, port: int, key: str, why: Any, hint: str = "") -> StartError:
    """A port of the control room's own is taken: who holds it and which setting moves it."""
    who = port_holder(port) or why
    return StartError(
        f"{what}: cannot listen on {host}:{port}: {who}. {hint}Set [control_room] {key} "
        "(0 = any free port)."
    )
