"""What a running control room offers: commands to modules (with markers, PUB events and reply
times), macros, restarts, callbacks between modules, status queries and the log buffer.

A base class of :class:`~control_room.room.ControlRoom` (room.py keeps start-up and shutdown),
so the two halves of one object stay in files of a readable size; the state used here is
created in ``ControlRoom.__init__`` and ``up``.
"""

from __future__ import annotations

import logging as std_logging
import os
import threading
import time
from typing import Any

from control_room.handle import ModuleHandle
from control_room.macros import Cancel, MacroError, MacroReport, StepReport
from shared_utils.checks import unknown_message
from shared_utils.errors import CommandFailed, ModuleError

QUIET_CMDS = {"UP", "STATUS", "HELP", "GET_PCOMMS"}  # read-only: not worth an LSL marker


class RoomApi:
    """Commands, macros, queries and logs of a running control room (see the module notes)."""

    # -- commands --------------------------------------------------------------------------------
    def handle(self, module: str) -> ModuleHandle:
        if self.supervisor is None or module not in self.supervisor.handles:
            raise KeyError(unknown_message("module", module, self.cfg.modules))
        return self.supervisor.handles[module]

    def send(
        self,
        module: str,
        cmd: str,
        kwargs: dict[str, Any] | None = None,
        source: str = "api",
        timeout: float = 30.0,
        quiet: bool = False,
    ) -> Any:
        """Send one command: LSL marker, PUB ``command``, the command itself, PUB ``reply``.

        Returns the result; raises ``CommandFailed`` / ``ModuleUnreachable`` / ``KeyError``.
        """
        kwargs = kwargs or {}
        if module == "control_room":  # a macro step addressed to the control room itself
            from control_room.server import call_own

            self.publish("command", module=module, cmd=cmd, kwargs=kwargs, source=source)
            return call_own(self, cmd, kwargs)
        h = self.handle(module)
        h.check_usable()
        h.check_command(cmd)
        entry = {"module": module, "cmd": cmd, "kwargs": kwargs, "source": source}
        lsl_t = None
        if self.markers is not None and not quiet and cmd.upper() not in QUIET_CMDS:
            lsl_t = self.markers.push(entry)
        if not quiet:
            self.publish("command", lsl_time=lsl_t, **entry)
        t0 = time.perf_counter()
        try:
            result = h.command(cmd, kwargs, timeout=timeout)
        except ModuleError as exc:
            ms = round((time.perf_counter() - t0) * 1000, 3)
            err = exc.error if isinstance(exc, CommandFailed) else str(exc)
            if not quiet:
                self.publish(
                    "reply", module=module, cmd=cmd, ok=False, error=err, ms=ms, source=source
                )
            raise
        ms = round((time.perf_counter() - t0) * 1000, 3)
        if not quiet:
            self.reply_ms.append(ms)
            self.publish(
                "reply", module=module, cmd=cmd, ok=True, result=result, ms=ms, source=source
            )
        return result

    def run_macro(self, name: str, kwargs: dict[str, Any] | None = None) -> MacroReport:
        """Run a macro to its end, then its finally steps; raises :class:`MacroError` naming the
        failing step. :meth:`cancel_macro` (Ctrl-C, ``CANCEL``, shutdown) ends it early."""
        cancel = Cancel()
        if self.stop_event.is_set():
            cancel.cancel("the control room is shutting down")
        self._cancels.add(cancel)
        self._macro_idle.clear()
        self.running_macro = name
        self.publish("macro", macro=name, state="started", kwargs=kwargs or {})
        session_before = self.sessions.run if self.sessions is not None else None
        try:
            report = self.runner.run(name, kwargs, cancel=cancel)
        except MacroError as exc:
            rep = getattr(exc, "report", None)
            if rep is not None:
                self.last_reports[name] = rep.as_dict()
            self.publish("macro", macro=name, state="failed", error=str(exc))
            if self.sessions is not None:  # a session this macro started is interrupted
                self.sessions.macro_failed(session_before, name, str(exc))
            raise
        finally:
            self._cancels.discard(cancel)
            self.running_macro = None
            if not self._cancels:
                self._macro_idle.set()
        self.last_reports[name] = report.as_dict()
        self.publish("macro", macro=name, state="done", duration_s=report.duration_s)
        return report

    def cancel_macro(self, reason: str) -> bool:
        """Cancel running macros (their finally steps still run).

        True if a macro was running."""
        running = list(self._cancels)
        for c in running:
            c.cancel(reason)
        return bool(running)

    def restart_module(self, name: str) -> dict[str, Any]:
        """Restart one module by hand (also one that ``failed``); returns its info once ready."""
        h = self.handle(name)
        assert self.supervisor is not None
        self.publish("status", module=name, state="restart_requested", previous=h.state)
        return self.supervisor.restart(name)

    def _on_step(self, macro: str, rep: StepReport) -> None:
        self.publish("macro", macro=macro, state="step", step=vars(rep))
        if self.server is not None:  # `control-room macro` prints each step as it finishes
            self.server.send_event("macro_step", macro=macro, step=vars(rep))
        self.console.step(macro, rep)

    def _route_callback(self, source: str, target: str, cmd: str, kwargs: dict[str, Any]) -> None:
        def run() -> None:
            try:
                result = self.send(target, cmd, kwargs, source=f"callback:{source}")
                self.publish(
                    "callback", source=source, target=target, cmd=cmd, ok=True, result=result
                )
            except (ModuleError, KeyError) as exc:
                self.publish(
                    "callback", source=source, target=target, cmd=cmd, ok=False, error=str(exc)
                )
                self.log.warning("callback from %s to %s %s failed: %s", source, target, cmd, exc)

        threading.Thread(target=run, name=f"callback-{source}-{target}", daemon=True).start()

    # -- queries ---------------------------------------------------------------------------------
    def wait_stream(self, name: str, timeout: float) -> bool:
        """True once an LSL stream called ``name`` is visible (waits up to ``timeout``)."""
        from shared_utils.streams.lsl import find_named

        return bool(find_named(name, timeout))

    def module_info(self) -> dict[str, dict[str, Any]]:
        if self.supervisor is None:
            return {}
        return {n: h.info() for n, h in self.supervisor.handles.items()}

    def status(self) -> dict[str, Any]:
        return {
            "config": str(self.cfg.path),
            "startup_s": self.startup_s,
            "modules": self.module_info(),
            "macros": list(self.cfg.macros),
            "running_macro": self.running_macro,
            "log_file": str(self.receiver.path) if self.receiver else None,
            "pub": self.bus.address if self.bus else None,
            "web": self.web.url if self.web else None,
            "marker_stream": self.cfg.control.marker_stream,
            "markers_pushed": self.markers.pushed if self.markers else 0,
            "display": self.xvfb.display if self.xvfb else os.environ.get("DISPLAY"),
            "data_dir": str(self.data_dir),
            "session": self.sessions.summary() if self.sessions else None,
            "clocks": self.clock_offsets(),
        }

    def clock_offsets(self) -> dict[str, dict[str, Any]]:
        """Each module host's LSL clock offset to ours (control_room/clocks.py): what STATUS shows
        under ``clocks`` and ``session.json`` records; ``self.clocks.mark()`` at a session start
        makes drift count from there."""
        return self.clocks.snapshot() if self.clocks is not None else {}

    # -- logs ------------------------------------------------------------------------------------
    def publish(self, topic: str, **data: Any) -> None:
        if self.bus is not None:
            self.bus.publish(topic, **data)
        self.console.event(topic, data)

    def _module_line(self, module: str, stream: str, line: str) -> None:
        """A line a module printed: into the central log under the module's name."""
        from shared_utils.logging import encode_frame, wire_record

        if self._shipper is None:
            return
        rec = wire_record(
            module=module,
            logger=f"{module}.{stream}",
            levelno=std_logging.INFO,
            event=line,
            kv={"stream": stream},
            created=time.time(),
        )
        self._shipper.submit(encode_frame(rec))

    def _on_log(self, rec: dict[str, Any]) -> None:
        with self._log_lock:
            self._log_seq += 1
            self.logs.append((self._log_seq, rec))
        self.console.log_record(rec)
        if self.sessions is not None:  # the session's own copy of the central log
            self.sessions.on_log(rec)

    def get_logs(self, module: str | None = None, since: int = 0, n: int = 200) -> dict[str, Any]:
        with self._log_lock:
            items = [(s, r) for s, r in self.logs if s > since]
            last = self._log_seq
        if module:
            items = [(s, r) for s, r in items if r.get("module") == module]
        items = items[-n:] if n else items
        return {"records": [dict(r, seq=s) for s, r in items], "next": last}
