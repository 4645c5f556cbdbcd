"""Byte I/O with a Bpod over pyserial: every read has a deadline, writes share one lock.

Kept apart from the protocol (:mod:`services.bpod.driver`) so that the rules for talking to a
serial device sit in one place: a vanished device becomes :class:`DeviceGone` with the port
closed, a slow one a :class:`BpodError` naming what was awaited, and request/reply is refused
(:class:`BpodBusy`) while a trial owns the reads.
"""

from __future__ import annotations

import threading
import time

import serial

DISCOVERY_BYTE = 0xDE  # sent by an unconnected device every 100 ms


class BpodError(RuntimeError):
    """The device did not behave as the protocol says (timeouts, bad replies)."""


class DeviceGone(BpodError):
    """The serial device disappeared (unplugged, emulator died)."""


class BpodBusy(BpodError):
    """A trial owns the port; request/reply commands must wait."""


class SerialLink:
    """One serial port to a Bpod; ``running`` marks that a trial owns the reads."""

    def __init__(self, port: str, timeout: float = 1.0, baudrate: int = 1312500) -> None:
        self.port = port
        self.timeout = timeout
        self.baudrate = baudrate
        self.ser: serial.Serial | None = None
        self.write_lock = threading.Lock()
        self.running = False

    @property
    def connected(self) -> bool:
        return self.ser is not None and self.ser.is_open

    def _ser(self) -> serial.Serial:
        if self.ser is None or not self.ser.is_open:
            raise BpodError("not connected to a Bpod; send CONNECT first")
        return self.ser

    def _write(self, data: bytes) -> None:
        try:
            with self.write_lock:
                self._ser().write(data)
        except (serial.SerialException, OSError) as exc:
            self._lost(exc)
        except (TypeError, AttributeError) as exc:  # pyserial, when the port closes under it
            self._closed_under_us(exc)

    def _read(self, n: int, what: str, timeout: float | None = None) -> bytes:
        ser = self._ser()
        deadline = time.monotonic() + (timeout or self.timeout)
        out = bytearray()
        try:
            while len(out) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BpodError(f"timeout waiting for {what}: got {len(out)} of {n} bytes")
                self._set_timeout(ser, 0.05)
                out += ser.read(n - len(out))
        except (serial.SerialException, OSError) as exc:
            self._lost(exc)
        except (TypeError, AttributeError) as exc:
            self._closed_under_us(exc)
        return bytes(out)

    @staticmethod
    def _set_timeout(ser: serial.Serial, timeout: float) -> None:
        """pyserial reconfigures the tty on every timeout change: only change it when needed."""
        if ser.timeout != timeout:
            ser.timeout = timeout

    def _closed_under_us(self, exc: BaseException) -> None:
        """Another thread closed the port during this call (the service serialises commands,
        so this is a last line of defence): an error that says so, never a TypeError."""
        raise BpodError(f"the port {self.port} was closed while in use; try again") from exc

    def _lost(self, exc: BaseException) -> None:
        self.close_port()
        raise DeviceGone(
            f"serial device {self.port} is gone ({exc}); reconnect with CONNECT"
        ) from exc

    def query(self, cmd: bytes, n: int, what: str) -> bytes:
        if self.running:
            raise BpodBusy(f"a trial is running; {what} must wait until it ends (or STOP)")
        self._write(cmd)
        return self._read(n, what)

    def _ack(self, cmd: bytes, what: str) -> None:
        reply = self.query(cmd, 1, what)
        if reply != b"\x01":
            raise BpodError(f"{what}: expected acknowledgement 01, got {reply.hex()}")

    def close_port(self) -> None:
        with self.write_lock:  # never in the middle of another thread's write
            if self.ser is not None:
                try:
                    self.ser.close()
                except (serial.SerialException, OSError):
                    pass
            self.ser = None

    def _drain(self, quiet_s: float = 0.1, limit_s: float = 1.0) -> None:
        """Read until nothing but discovery bytes arrived for ``quiet_s`` (or ``limit_s`` passed)."""
        start = quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s and time.monotonic() - start < limit_s:
            if self._read_some(0.02).strip(bytes([DISCOVERY_BYTE])):
                quiet_since = time.monotonic()

    def _read_until(self, want: bytes, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            b = self._read_some(0.05)
            if want in b:
                return True
        return False

    def _read_some(self, timeout: float) -> bytes:
        ser = self._ser()
        try:
            self._set_timeout(ser, timeout)
            return ser.read(max(1, ser.in_waiting))
        except (serial.SerialException, OSError) as exc:
            self._lost(exc)
            raise  # unreachable
        except (TypeError, AttributeError) as exc:
            self._closed_under_us(exc)
            raise  # unreachable
