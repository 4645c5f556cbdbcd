"""pyserial driver for a Bpod state machine (real hardware or the pty emulator).

The protocol on top of :class:`~services.bpod.serial_link.SerialLink` (timed reads, locked
writes): the handshake and the device's self-description, runtime writes, and trials. One thread
runs trials and owns reads while a trial runs; other threads may only *write* (override, virtual
input, soft code, force-exit). Request/reply commands are refused during a trial because their
replies would interleave with the event stream.
"""

from __future__ import annotations

import glob
import threading
import time
from collections.abc import Callable

import serial
from serial.tools import list_ports

from services.bpod.compiler import CompiledStateMachine
from services.bpod.hardware import PHYSICAL_OUTPUTS, HardwareInfo, parse_hardware_description
from services.bpod.serial_link import BpodBusy, BpodError, DeviceGone, SerialLink
from services.bpod.trial import (
    Events,
    EventStreamParser,
    ProtocolError,
    SoftCode,
    TrialRecord,
    TrialReplay,
)

APP_ID_BYTE, FLEX_ID_BYTE = 0xDE, 0xDF

__all__ = ["BpodBusy", "BpodDriver", "BpodError", "DeviceGone"]


class BpodDriver(SerialLink):
    """Connect, describe, load, run trials; every read has a timeout."""

    def __init__(self, port: str, timeout: float = 1.0, baudrate: int = 1312500) -> None:
        super().__init__(port, timeout, baudrate)
        self.hw: HardwareInfo | None = None
        self.app_port: str | None = None
        self.flex_port: str | None = None
        self.modules: list[str | None] = []
        self.sm: CompiledStateMachine | None = None
        self._sm_on_device: CompiledStateMachine | None = None
        self._stop_requested = False

    def close_port(self) -> None:
        """Close the port; the state machine is sent again after the next connect."""
        super().close_port()
        self._sm_on_device = None

    # ---------------------------------------------------------------- connection
    def connect(self) -> HardwareInfo:
        """Open the port, handshake, read the hardware, configure inputs/sync/serial events."""
        self.close_port()
        try:
            self.ser = serial.Serial(self.port, self.baudrate, timeout=0.1, write_timeout=2)
        except (serial.SerialException, OSError) as exc:
            self.ser = None
            raise DeviceGone(f"cannot open {self.port}: {exc}") from exc
        self._handshake()
        major, mtype = (
            int.from_bytes(b, "little") for b in _pairs(self.query(b"F", 4, "firmware version"))
        )
        minor = (
            int.from_bytes(self.query(b"f", 2, "firmware minor"), "little") if major >= 23 else 0
        )
        pcb = self.query(b"v", 1, "PCB revision")[0] if major >= 23 else None
        fields = self._read_hardware(major)
        hw = HardwareInfo(mtype, major, minor, pcb, **fields)
        self._ack(b"*", "clock reset")
        self._ack(b"E" + bytes([1] * len(hw.inputs)), "input enable")
        self._ack(b"K\xff\x00", "sync channel")
        self.modules = self._read_modules(hw)
        hw.alloc = hw.default_alloc()
        self._ack(b"%" + bytes(hw.alloc), "serial event allocation")
        self.hw = hw
        if major >= 23 and mtype >= 3:
            self.app_port = self._find_extra_port(b"{", APP_ID_BYTE)
            if self.app_port is None:
                raise BpodError(
                    "firmware 23 but no APP serial port answered the '{' identification"
                )
        if mtype == 4:
            self.flex_port = self._find_extra_port(b"}", FLEX_ID_BYTE)
        return hw

    def _handshake(self) -> None:
        ser = self._ser()
        # A device left running by a crashed host is still streaming: end that trial first ('X')
        # and wait for silence, so no stale byte can pass for the handshake reply.
        self._write(b"X")
        self._drain()
        for attempt in range(3):
            ser.reset_input_buffer()
            self._write(b"6")
            reply = self._read_until(b"5", 1.0)
            if reply:
                time.sleep(0.12)  # the device ignores the port for 100 ms after '5'
                ser.reset_input_buffer()
                return
            if attempt < 2:  # a confused device answers 'Z' with '1' and starts over
                self._write(b"Z")
                time.sleep(0.05)
        raise BpodError(f"no handshake reply from {self.port}: is it a Bpod state machine?")

    def _read_hardware(self, major: int) -> dict:
        self._write(b"H")
        data = bytearray(self._read(9 if major >= 23 else 8, "hardware description"))
        while True:
            try:
                fields, _ = parse_hardware_description(bytes(data), major)
                return fields
            except ValueError:
                data += self._read(1, "hardware description")

    def _read_modules(self, hw: HardwareInfo) -> list[str | None]:
        self._write(b"M")
        time.sleep(0.02)
        names: list[str | None] = []
        for _ in range(hw.inputs.count("U")):
            if self._read(1, "module info")[0] != 1:
                names.append(None)
                continue
            self._read(4, "module firmware")
            name = self._read(self._read(1, "module name")[0], "module name").decode(
                errors="replace"
            )
            while self._read(1, "module info")[0] == 1:
                kind = self._read(1, "module info")
                if kind == b"#":
                    self._read(1, "module info")
                elif kind == b"E":
                    for _ in range(self._read(1, "module info")[0]):
                        self._read(self._read(1, "module info")[0], "module event name")
                else:
                    self._read(1, "module info")
            names.append(name)
        return names

    def _find_extra_port(self, ident: bytes, expect: int) -> str | None:
        """Open each candidate port, send the identification op and see which one answers."""
        cands = sorted(glob.glob(glob.escape(self.port) + ".*"))
        try:
            me = next((p for p in list_ports.comports() if p.device == self.port), None)
            if me is not None and me.serial_number:
                cands += [
                    p.device
                    for p in list_ports.comports()
                    if p.serial_number == me.serial_number and p.device != self.port
                ]
        except OSError:
            pass
        for cand in cands:
            try:
                with serial.Serial(cand, self.baudrate, timeout=0.2) as s:
                    s.reset_input_buffer()
                    self._write(ident)
                    if s.read(1) == bytes([expect]):
                        return cand
            except (serial.SerialException, OSError):
                continue
        return None

    def disconnect(self) -> None:
        """Stop any trial, drive outputs off, say goodbye ('Z') and close the port."""
        if not self.connected:
            return
        try:
            if self.running:
                self.force_exit()
            else:
                self.safe_state()
                self._write(b"Z")
                self._read(1, "disconnect reply", timeout=0.5)
        except BpodError:
            pass
        self.close_port()

    # ---------------------------------------------------------------- runtime writes
    def override(self, channel: int, value: int) -> None:
        """Drive an output channel ('O'); nonzero latches it against state outputs until 0."""
        self._write(bytes([ord("O"), channel, value]))

    def virtual_input(self, channel: int, raw_level: int) -> None:
        """Simulate an input level ('V'); only acts during a trial."""
        self._write(bytes([ord("V"), channel, raw_level]))

    def soft_code(self, code: int) -> None:
        """Host soft code 1..N: the running trial sees event SoftCode<code>."""
        self._write(bytes([ord("~"), code - 1]))

    def force_exit(self) -> None:
        """Ask the running trial to end: the trial loop sends 'X' (and re-sends it if ignored)."""
        self._stop_requested = True

    def safe_state(self) -> None:
        """All physical outputs off (clears manual overrides)."""
        if self.hw is None:
            return
        for ch, kind in enumerate(self.hw.outputs):
            if kind in PHYSICAL_OUTPUTS:
                self.override(ch, 0)

    def recover(self) -> None:
        """After a failed trial: end whatever runs, drop unread bytes, resend the machine next time."""
        self._sm_on_device = None
        try:
            self._write(b"X")
            self._drain(0.2, 3.0)
        except BpodError:
            pass

    def read_input(self, channel: int) -> int:
        return self.query(bytes([ord("I"), channel]), 1, "input level")[0]

    # ---------------------------------------------------------------- trials
    def run_trial(
        self,
        sm: CompiledStateMachine,
        trial: int,
        on_start: Callable[[int], None] | None = None,
        on_events: Callable[[TrialReplay, Events, list[str], str | None], None] | None = None,
        on_soft_code: Callable[[int], None] | None = None,
        stop_event: threading.Event | None = None,
    ) -> TrialRecord:
        """Send the machine if it changed, start it, and read events until the trial ends.

        Setting ``stop_event`` (or calling :meth:`force_exit`) ends the trial early; the check
        happens in the reading loop, so a stop that arrives before the trial started still ends it.
        """
        if self.hw is None:
            raise BpodError("not connected to a Bpod; send CONNECT first")
        if self.running:
            raise BpodBusy("a trial is already running")
        self.running = True
        self._stop_requested = False
        try:
            new_sm = sm is not self._sm_on_device
            self._ser().reset_input_buffer()  # nothing is queued on the device: drop stale bytes
            if new_sm:
                self._write(sm.command(run_asap=False))
            start_us = self._start(new_sm)
            self._sm_on_device = sm
            if on_start:
                on_start(start_us)
            replay = TrialReplay(sm, trial, self.hw.timer_period_us * 1e-6)
            replay.record.start_us = start_us
            parser = EventStreamParser(self.hw.tup_code + 1)
            end = None
            x_sent_at = None
            while end is None:
                data = self._read_some(0.05)
                try:
                    items = parser.feed(data)
                except ProtocolError as exc:
                    self.recover()
                    raise BpodError(f"trial {trial} failed: {exc}") from exc
                for item in items:
                    if isinstance(item, Events):
                        names, new_state = replay.on_events(item)
                        if on_events:
                            on_events(replay, item, names, new_state)
                    elif isinstance(item, SoftCode):
                        replay.on_soft_code(item.code)
                        if on_soft_code:
                            on_soft_code(item.code)
                    else:
                        end = item
                        break
                stop = self._stop_requested or (stop_event is not None and stop_event.is_set())
                if end is None and stop:
                    now = time.monotonic()
                    if x_sent_at is None or now - x_sent_at > self.timeout:  # re-send if ignored
                        self._write(b"X")
                        x_sent_at = now
            rec = replay.finish(end, stopped=x_sent_at is not None and not replay.done)
            rec.garbage_bytes = parser.garbage
            return rec
        finally:
            self.running = False

    def _start(self, new_sm: bool) -> int:
        """Send 'R' and read [confirm] + start time; re-send 'R' once if the device stalls."""
        for attempt in range(2):
            self._write(b"R")
            try:
                if new_sm:
                    confirm = self._read(1, "state machine confirmation")
                    if confirm != b"\x01":
                        self._sm_on_device = None
                        raise BpodError("the device rejected the state machine (confirm byte 00)")
                    new_sm = False
                return int.from_bytes(self._read(8, "trial start time"), "little")
            except DeviceGone:
                raise
            except BpodError:
                if attempt == 1:
                    raise
        raise BpodError("unreachable")


def _pairs(data: bytes) -> tuple[bytes, bytes]:
    return data[:2], data[2:4]
