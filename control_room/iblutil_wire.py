"""iblutil's remote-rig messages on the wire (UDP), spoken without iblutil itself.

The IBL rig set-up (iblrig's NetworkSession, ``iblutil.io.net``) sends each message as one UDP
datagram holding a JSON array ``[event, *fields]`` with ``event`` an ``ExpMessage`` number
(EXPINIT 1, EXPSTART 2, EXPEND 4, EXPCLEANUP 8, EXPINTERRUPT 16, EXPSTATUS 32, EXPINFO 64,
ALYX 128; 0 reports that the receiver's handler raised: ``[0, "Error: text", event]``). Every
datagram is echoed back byte for byte at once; the sender counts a message as delivered when the
echo arrives (within 1 s) and treats anything else from that address meanwhile as a broken
echo. The *answer* is a separate message of the same event, sent once the receiver has acted
(and echoed in turn).

Why our own implementation: the control room must run where iblutil is not installed (it pulls
numba, pandas and scipy), and the wire is this small. The tests run iblutil from PyPI as the
peer on both sides, so the two stay compatible. UDP only: iblutil's TCP mode has no framing.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

EVENTS = {
    "EXPINIT": 1, "EXPSTART": 2, "EXPEND": 4, "EXPCLEANUP": 8, "EXPINTERRUPT": 16,
    "EXPSTATUS": 32, "EXPINFO": 64, "ALYX": 128,
}  # fmt: skip
NAMES = {v: k for k, v in EVENTS.items()}
ECHO_TIMEOUT_S = 1.0  # iblutil's EchoProtocol.default_echo_timeout
MAX_DATAGRAM = 65535
Addr = tuple[str, int]
OnMessage = Callable[[int, list[Any], Addr], None]

log = logging.getLogger("control_room.iblutil")


class WireError(RuntimeError):
    """A message was not delivered (no echo, a wrong echo) or not answered in time."""


def encode(event: int, fields: list[Any]) -> bytes:
    """``[event, *fields]`` as iblutil writes it (``json.dumps`` defaults)."""
    return json.dumps([event, *fields]).encode()


def decode(data: bytes) -> tuple[int, list[Any]] | None:
    """``(event, fields)`` of a datagram, or None when it is not an iblutil message."""
    try:
        msg = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(msg, list) or len(msg) < 2 or not isinstance(msg[0], int):
        return None
    if msg[0] != 0 and msg[0] not in NAMES:
        return None
    return msg[0], msg[1:]


class _Echo:
    """The echo we wait for after sending ``data``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done = threading.Event()
        self.matched = False

    def arrived(self, data: bytes) -> None:
        self.matched = data == self.data or (
            len(data) == MAX_DATAGRAM and self.data.startswith(data)
        )
        self.done.set()


class UdpPeer:
    """One UDP socket speaking iblutil's echo protocol, with a reader thread.

    Incoming messages are echoed at once and handed to ``on_message(event, fields, addr)`` on the
    reader thread (keep it quick; hand long work to another thread). ``only_from``: ignore
    datagrams from any other host (iblutil's client role does the same).
    """

    def __init__(
        self,
        bind: Addr,
        on_message: OnMessage,
        name: str,
        only_from: str | None = None,
    ) -> None:
        self.name = name
        self.on_message = on_message
        self.only_from = only_from
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(bind)
        except OSError:
            self.sock.close()
            raise
        self.sock.settimeout(0.2)
        self._awaiting: dict[Addr, _Echo] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name=f"iblutil-{name}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def send(
        self, event: int, fields: list[Any], addr: Addr, echo_timeout: float = ECHO_TIMEOUT_S
    ) -> None:
        """Send one message and wait for its echo; :class:`WireError` if none (or a wrong one)."""
        data = encode(event, fields)
        if len(data) > MAX_DATAGRAM:
            raise WireError(f"{NAMES.get(event, event)} message too large ({len(data)} bytes)")
        echo = _Echo(data)
        with self._lock:
            self._awaiting[addr] = echo
        try:
            self.sock.sendto(data, addr)
            if not echo.done.wait(echo_timeout):
                raise WireError(
                    f"no echo of {NAMES.get(event, event)} from udp://{addr[0]}:{addr[1]} within "
                    f"{echo_timeout:g} s (nothing listening there?)"
                )
            if not echo.matched:
                raise WireError(f"udp://{addr[0]}:{addr[1]} echoed something else")
        except OSError as exc:
            raise WireError(f"cannot send to udp://{addr[0]}:{addr[1]}: {exc}") from None
        finally:
            with self._lock:
                if self._awaiting.get(addr) is echo:
                    del self._awaiting[addr]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(1.0)
        self.sock.close()

    def _read_loop(self) -> None:
        while not self._closed.is_set():
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM)
            except (TimeoutError, ConnectionRefusedError):
                continue  # ICMP "port unreachable" from an earlier send lands here
            except OSError:
                return  # closed
            with self._lock:
                echo = self._awaiting.get(addr)
            if echo is not None and not echo.done.is_set():
                echo.arrived(data)
                continue
            if self.only_from is not None and addr[0] != self.only_from:
                log.warning("%s: ignored a datagram from unexpected host %s", self.name, addr[0])
                continue
            msg = decode(data)
            if msg is None:
                log.warning("%s: ignored a datagram that is not an iblutil message", self.name)
                continue
            if msg[0] != 0:  # error reports are not echoed (iblutil does the same)
                try:
                    self.sock.sendto(data, addr)
                except OSError as exc:
                    log.warning("%s: cannot echo to %s: %s", self.name, addr, exc)
            try:
                self.on_message(msg[0], msg[1], addr)
            except Exception:  # a handler bug must not end the reader
                log.exception("%s: handling %s failed", self.name, NAMES.get(msg[0], msg[0]))
