"""LabRecorder-compatible remote control (RCS), so tools that drive LabRecorder drive us.

Wire behaviour copied from LabRecorder on purpose: newline-terminated lines, each answered with
the two bytes ``OK`` (no newline), even unknown or failing ones, because existing clients wait for
exactly that. Unlike LabRecorder we bind loopback by default, and what went wrong is logged and
visible in the recorder's STATUS (``rcs_last_error``), since the protocol cannot carry it.

The protocol has no token, so it is guarded by where it listens: beyond loopback only the peers
named with ``--rcs-allow`` get in; a line that looks like HTTP (a web page in a browser on the lab
PC posting ``start``) closes the connection before anything runs; a line longer than 64 KiB too.

Commands: ``select all`` / ``select none`` (LabRecorder's ``start`` selects all anyway),
``update``, ``filename {root:DIR} {template:NAME}`` plus ``{participant:..} {session:..} {task:..}
{run:..} {acquisition:..} {modality:..}``, ``start``, ``stop``.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.recorder.paths import expand_labrecorder
from shared_utils.errors import CommandError
from shared_utils.logging import get_logger
from shared_utils.protocol.framing import looks_like_http
from shared_utils.protocol.server import is_loopback

if TYPE_CHECKING:  # the recorder owns its listener: core imports this module
    from services.recorder.core import Recorder

log = get_logger("recorder.rcs")

FILENAME_OPTION = re.compile(r"\{(\w+?):([^}]*)\}")
#: LabRecorder's BIDS-style default when only a root is given
DEFAULT_TEMPLATE = "sub-%p/ses-%s/%m/sub-%p_ses-%s_task-%b_run-%n_%m.xdf"
MAX_LINE_BYTES = 64 * 1024


@dataclass
class RcsState:
    """What ``filename`` lines have set so far (LabRecorder's defaults until then)."""

    root: str = ""
    template: str = DEFAULT_TEMPLATE
    values: dict[str, str] = field(
        default_factory=lambda: {
            "participant": "P001",
            "session": "S001",
            "task": "Default",
            "run": "001",
            "acquisition": "",
            "modality": "eeg",
        }
    )
    last_error: str | None = None

    def path(self) -> str:
        name = expand_labrecorder(self.template, self.values)
        return str(Path(self.root) / name) if self.root else name


def handle_line(line: str, state: RcsState, recorder: Recorder) -> str | None:
    """Apply one RCS line; returns what happened (for the log) or None when ignored."""
    s = line.strip()
    low = s.lower()
    try:
        if "filename" in low:
            for key, val in FILENAME_OPTION.findall(s):
                if key == "root":
                    state.root = val
                elif key == "template":
                    state.template = val
                else:
                    state.values[key] = val
            return f"filename -> {state.path()}"
        if "select" in low:
            return "select (all streams are recorded on start, as in LabRecorder)"
        if low == "update":
            return "update (streams are discovered continuously)"
        if low == "start":
            res = _start(state, recorder)
            return f"start -> {res['file']}"
        if low == "stop":
            res = recorder.stop()
            return f"stop -> {res.get('counts', res.get('note'))}"
    except CommandError as e:
        state.last_error = f"{s}: {e}"
        log.warning("RCS command failed", line=s, error=str(e))
        return f"error: {e}"
    return None


def _start(state: RcsState, recorder: Recorder) -> dict[str, Any]:
    """``start``: record every stream to the current file; an existing file is kept by moving it
    aside to ``<name>_oldN.xdf`` (LabRecorder's rule; RCS has no way to ask)."""
    if recorder.recording_file is not None:  # never move aside the file being written
        raise CommandError(f"already recording to {recorder.recording_file}")
    # Inside the data folder like any START (a root or wildcard value cannot lead out of it)
    path = recorder.resolve(state.path(), {}, overwrite=True)
    if path.exists():
        n = 1
        while (backup := path.with_name(f"{path.stem}_old{n}{path.suffix}")).exists():
            n += 1
        path.rename(backup)
        log.info("moved existing file aside", file=str(path), to=str(backup))
    return recorder.start(str(path), streams=None)


def bind_problem(host: str, allow: tuple[str, ...]) -> str | None:
    """Why listening on ``host`` is refused (beyond loopback with nobody allowed), or None."""
    if is_loopback(host) or allow:
        return None
    return (
        f"LabRecorder remote control on {host} would let any PC on the network start and stop "
        "recordings (its protocol has no token): name the PCs allowed with --rcs-allow ADDRESS, "
        "or keep --rcs-host 127.0.0.1"
    )


class RcsServer:
    """TCP listener for RCS lines; one thread per client (clients are few and long-lived)."""

    def __init__(
        self,
        recorder: Recorder,
        port: int = 22345,
        host: str = "127.0.0.1",
        allow: tuple[str, ...] = (),
    ) -> None:
        """``allow``: peer addresses let in besides loopback; required to listen beyond it."""
        problem = bind_problem(host, allow)
        if problem:
            raise ValueError(problem)
        self.recorder = recorder
        self.state = RcsState()
        self.allow = frozenset(allow)
        self._sock = socket.create_server((host, port), reuse_port=False)
        self.port = self._sock.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="rcs-accept", daemon=True)

    def start(self) -> RcsServer:
        self._thread.start()
        log.info("LabRecorder remote control listening", port=self.port, allow=sorted(self.allow))
        return self

    def close(self) -> None:
        self._closed.set()
        try:
            self._sock.close()
        except OSError:
            pass

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self._sock.accept()
            except OSError:
                return
            if not (is_loopback(peer[0]) or peer[0] in self.allow):
                log.warning("RCS connection refused: peer not in --rcs-allow", peer=peer[0])
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="rcs-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while not self._closed.is_set():
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    if looks_like_http(raw):
                        log.warning("RCS connection closed: an HTTP request ran nothing")
                        return
                    line = raw.decode("utf-8", "replace")
                    done = handle_line(line, self.state, self.recorder)
                    log.info("RCS", line=line.strip(), result=done)
                    try:
                        conn.sendall(b"OK")
                    except OSError:
                        return
                if len(buf) > MAX_LINE_BYTES:
                    log.warning("RCS connection closed: a line over 64 KiB", bytes=len(buf))
                    return
