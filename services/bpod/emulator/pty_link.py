"""Serve an :class:`Emulator` on pseudo-terminals so pyserial talks to it like to a USB device.

The main port is exposed as a symlink at the requested path; firmware 23's extra USB serial ports
appear next to it as ``<path>.app`` (soft codes, types 3-4) and ``<path>.flex`` (type 4). Each
slave is set raw before anyone opens it and kept open here, so a client closing its end never
makes the master side fail.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import tty
from pathlib import Path

from services.bpod.emulator.hardware import APP, FLEX, MAIN, Profile
from services.bpod.emulator.machine import Emulator
from services.bpod.emulator.script import ScriptItem


def extra_port_paths(link: Path, profile: Profile) -> dict[int, Path]:
    """Where the extra USB ports of ``profile`` are linked for a main port at ``link``."""
    out: dict[int, Path] = {}
    if profile.fw_major >= 23 and profile.machine_type >= 3:
        out[APP] = link.with_name(link.name + ".app")
    if profile.machine_type == 4:
        out[FLEX] = link.with_name(link.name + ".flex")
    return out


class PtyEmulator:
    """An emulator behind one pty per USB port; :meth:`serve` runs until ``stop`` is set."""

    def __init__(
        self,
        link: str | Path,
        profile: Profile,
        discovery: bool = True,
        script: list[ScriptItem] | None = None,
    ) -> None:
        self.link = Path(link)
        self.profile = profile
        self.masters: dict[int, int] = {}
        self.slaves: list[int] = []
        self.links: list[Path] = []
        self.dropped = 0
        for port, path in {MAIN: self.link, **extra_port_paths(self.link, profile)}.items():
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self.masters[port] = master
            self.slaves.append(slave)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            path.symlink_to(os.ttyname(slave))
            self.links.append(path)
        self.emulator = Emulator(profile, self._write, discovery=discovery, script=script)
        self.stop_event = threading.Event()
        self._inputs: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()

    def inject(self, name: str) -> None:
        """Thread-safe hardware input ("Port1In", "BNC1Low", "SoftCode2"), applied next cycle.

        This is the animal (or a test) acting on the box, as opposed to the host's ``V`` command.
        """
        from services.bpod.emulator.script import resolve_event

        resolve_event(self.profile, name)  # raise ValueError for unknown names in the caller
        self._inputs.put(name)
        os.write(self._wake_w, b"!")

    def _write(self, port: int, data: bytes) -> None:
        fd = self.masters.get(port)
        if fd is None:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except BlockingIOError:  # nobody reads the port: a real USB device drops too
                self.dropped += len(view)
                return
            view = view[n:]

    def serve(self, stop: threading.Event | None = None, parent_pid: int | None = None) -> None:
        """Run the emulator until ``stop`` (or :attr:`stop_event`) is set or the parent dies."""
        stop = stop or self.stop_event
        by_fd = {fd: port for port, fd in self.masters.items()}
        while not stop.is_set():
            if parent_pid is not None and os.getppid() != parent_pid:
                return
            timeout = min(self.emulator.poll(), 0.2)
            ready, _, _ = select.select([*by_fd, self._wake_r], [], [], timeout)
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
                while not self._inputs.empty():
                    self.emulator.poll()  # catch up first: the input lands in the next cycle
                    self.emulator.set_input(self._inputs.get())
                ready.remove(self._wake_r)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except (BlockingIOError, OSError):
                    continue
                if data:
                    self.emulator.feed(data, by_fd[fd])

    def start_thread(self) -> threading.Thread:
        """Serve in a daemon thread (for in-process tests); stop with :meth:`close`."""
        th = threading.Thread(target=self.serve, name="bpod-emulator", daemon=True)
        th.start()
        self._thread = th
        return th

    def close(self) -> None:
        """Stop serving, remove the links and close the ptys (clients then see the device vanish)."""
        self.stop_event.set()
        th = getattr(self, "_thread", None)
        if th is not None:
            th.join(2)
        for path in self.links:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for fd in [*self.masters.values(), *self.slaves, self._wake_r, self._wake_w]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.masters.clear()
        self.slaves.clear()
