"""Start modules in dependency order, watch them, restart them, stop them.

Why one thread per module: a module starts the moment the modules it depends on are ready (not
when a whole "wave" is), and a module that hangs on ``UP`` cannot delay the health check of the
others. Exits are noticed at once (the watch loop sleeps in ``Popen.wait``), hangs within
``watchdog_s`` (at most 1 s) plus the UP timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from control_room.config import MeshConfig
from control_room.handle import ModuleHandle, StartError
from control_room.output import LineSink
from shared_utils.errors import ModuleError

Publish = Callable[..., None]
UNRESPONSIVE_AFTER = 3  # missed UPs in a row before a live process is reported unresponsive


class Supervisor:
    """Owns every :class:`ModuleHandle` of a config."""

    def __init__(
        self,
        cfg: MeshConfig,
        line_sink: LineSink,
        publish: Publish,
        stream_check: Callable[[str, float], bool],
        extra_env: Callable[[str], dict[str, str]],
        on_ready: Callable[[ModuleHandle], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.handles = {
            n: ModuleHandle(
                spec, line_sink, extra_env(n), cfg.tokens.for_module(n), cfg.tokens.source_of(n)
            )
            for n, spec in cfg.modules.items()
        }
        self._publish = publish
        self._stream_check = stream_check
        self._on_ready = on_ready
        self._stopping = threading.Event()
        self._watchers: dict[str, threading.Thread] = {}
        self._restart_lock = threading.Lock()
        self.startup_s: float | None = None

    # -- state changes ---------------------------------------------------------------------------
    def _set(self, h: ModuleHandle, state: str, **info: Any) -> None:
        old, h.state = h.state, state
        if old != state or info:
            self._publish("status", module=h.name, state=state, previous=old, **info)

    # -- start -----------------------------------------------------------------------------------
    def start_all(self) -> float:
        """Start every module, each as soon as its dependencies are ready; returns seconds taken.

        On any failure the modules already started are stopped and :class:`StartError` lists
        every problem (nothing is left running).
        """
        t0 = time.monotonic()
        ready = {n: threading.Event() for n in self.handles}
        failed = threading.Event()
        problems: list[str] = []
        lock = threading.Lock()

        def run(name: str) -> None:
            h = self.handles[name]
            for dep in h.spec.after:
                while not ready[dep].wait(0.05):
                    if failed.is_set():
                        return
            if failed.is_set():
                return
            try:
                self._start_one(h)
                ready[name].set()
            except StartError as exc:
                with lock:
                    problems.append(str(exc))
                failed.set()
                self._set(h, "failed", error=str(exc))

        threads = [threading.Thread(target=run, args=(n,), name=f"start-{n}") for n in self.handles]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if problems:
            self.stop_all()
            raise StartError("\n".join(problems))
        self.startup_s = round(time.monotonic() - t0, 3)
        for h in self.handles.values():
            self._watch(h)
        return self.startup_s

    def _start_one(self, h: ModuleHandle) -> None:
        self._set(h, "starting")
        h.launch()
        on = {"on": f"{h.host} via {h.launcher.mode}"} if h.launcher.program else {}
        self._publish("status", module=h.name, state="starting", pid=h.pid, port=h.port, **on)
        h.wait_ready(self._stopping, self._stream_check)
        self._set(h, "ready", ready_s=h.ready_s, pid=h.pid, port=h.port)
        if self._on_ready is not None:
            self._on_ready(h)

    # -- watch -----------------------------------------------------------------------------------
    def _watch(self, h: ModuleHandle) -> None:
        t = threading.Thread(
            target=self._watch_loop, args=(h,), name=f"watch-{h.name}", daemon=True
        )
        self._watchers[h.name] = t
        t.start()

    def _watch_loop(self, h: ModuleHandle) -> None:
        period = self.cfg.control.watchdog_s
        client = h.client(1.0)
        missed = 0
        gen = h.generation

        def mine() -> bool:  # False once shutdown or a restart by hand took the module over
            return not self._stopping.is_set() and h.generation == gen

        while mine() and h.state in ("ready", "unresponsive"):
            if h.owned and h.proc is not None:
                try:
                    h.proc.wait(period)
                except Exception:  # TimeoutExpired: still running
                    pass
                if not mine():
                    break
                if h.proc.poll() is not None:
                    client.close()
                    self._crashed(h)
                    return
            else:
                self._stopping.wait(period)
            t_up = time.perf_counter()
            try:
                if h.link is not None:  # Dareplane dialect: the single shared connection
                    ok = h.link.up(1.0)
                else:
                    ok = client.send("UP")
            except (ModuleError, OSError, ValueError):
                ok = False
                client.close()
            h.health_ms = round((time.perf_counter() - t_up) * 1000, 2) if ok else None
            if not mine():
                break
            if ok:
                missed = 0
                if h.state == "unresponsive":
                    self._set(h, "ready")
            else:
                missed += 1
                if missed == UNRESPONSIVE_AFTER:
                    self._set(h, "unresponsive", error=f"no UP for {missed} checks")
                    h.abort_commands(f"stopped answering ({missed} health checks missed)")
        client.close()

    def _crashed(self, h: ModuleHandle) -> None:
        """Report the exit, then restart per policy until it is ready or restarts run out."""
        assert h.proc is not None
        h.exit_code = h.proc.returncode
        h.flush_output(2.0)
        h.drop_client()
        h.link = None
        note = h.launcher.exit_note(h.exit_code)
        self._set(
            h, "crashed", exit_code=h.exit_code, last_output=h.output.last(10),
            **({"note": note} if note else {}),
        )  # fmt: skip
        policy = h.spec.restart
        while True:
            wants = policy == "always" or (policy == "on-failure" and h.exit_code != 0)
            if not wants or h.restarts >= h.spec.max_restarts or self._stopping.is_set():
                if not wants:
                    reason = f"restart policy {policy!r}"
                elif self._stopping.is_set():
                    reason = "shutting down"
                else:
                    reason = f"gave up after {h.restarts} restarts"
                h.error = f"exited with code {h.exit_code}{h.exit_note()} ({reason})"
                self._set(h, "failed", error=h.error)
                return
            h.restarts += 1
            self._set(h, "restarting", attempt=h.restarts)
            if self._stopping.wait(h.spec.restart_delay_s):
                return
            try:
                self._start_one(h)
            except StartError as exc:
                h.error = str(exc)
                self._publish(
                    "status", module=h.name, state="restart_failed", error=str(exc),
                    last_output=h.output.last(10),
                )  # fmt: skip
                if h.alive():
                    h.stop(1.0)
                h.exit_code = h.exit_code if h.exit_code is not None else -1
                continue
            self._watch(h)
            return

    # -- restart by hand ---------------------------------------------------------------------------
    def restart(self, name: str) -> dict[str, Any]:
        """Stop ``name`` if it runs, start it again with a fresh restart budget, wait until ready.

        For a module that gave up (``failed``) or hangs (``unresponsive``) without restarting
        the whole mesh. Raises :class:`StartError` if it cannot be restarted or does not get ready.
        """
        h = self.handles[name]
        with self._restart_lock:
            if self._stopping.is_set():
                raise StartError(f"{name}: not restarted, the mesh is shutting down")
            if h.state in ("starting", "restarting", "crashed", "stopping"):
                raise StartError(
                    f"{name} is {h.state} already; restart it once it is ready or failed"
                )
            h.generation += 1  # its watcher lets go: the exit below is not a crash
            old = self._watchers.pop(name, None)
            if h.owned and h.alive():
                self._set(h, "stopping")
                steps = h.stop()
                self._set(h, "stopped", exit_code=h.exit_code, steps=steps)
            if old is not None:
                old.join(2.0)
            h.drop_client()
            h.link = None
            h.restarts, h.error = 0, None
            try:
                self._start_one(h)
            except StartError as exc:
                h.error = str(exc)
                if h.alive():
                    h.stop(1.0)
                self._set(h, "failed", error=h.error)
                raise
            self._watch(h)
            return h.info()

    # -- stop ------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Cancel starts in progress and end the watchers (from any thread; returns at once)."""
        self._stopping.set()

    def stop_all(self) -> dict[str, list[str]]:
        """Stop modules in reverse dependency order (each wave in parallel).

        Idempotent: a module already stopped (a start-up roll-back, then shutdown) is skipped,
        so nothing is reported twice.
        """
        self._stopping.set()
        out: dict[str, list[str]] = {}
        for wave in reversed(self.cfg.start_order()):
            threads = []
            for name in wave:
                h = self.handles[name]
                if h.state in ("pending", "stopped") or (h.owned and h.proc is None):
                    continue

                def stop(h: ModuleHandle = h) -> None:
                    self._set(h, "stopping")
                    out[h.name] = h.stop()
                    self._set(h, "stopped", exit_code=h.exit_code, steps=out[h.name])

                t = threading.Thread(target=stop, name=f"stop-{name}")
                t.start()
                threads.append(t)
            for t in threads:
                t.join()
        for t in list(self._watchers.values()):
            t.join(2.0)
        return out
