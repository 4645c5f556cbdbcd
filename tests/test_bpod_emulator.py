"""The emulated Bpod firmware: op-code replies, per-cycle rules and the pty front end."""

from __future__ import annotations

import time

import pytest
import serial
from helpers import start_bpod_emulator

from services.bpod.compiler import compile_state_machine
from services.bpod.emulator import Emulator, get_profile, parse_script
from services.bpod.hardware import HardwareInfo, parse_hardware_description
from services.bpod.state_machine import StateMachine

# Reference 3.3: WaitForPoke (Port1In -> Reward, PWM1=255), Reward (0.1 s, Tup -> exit, Valve1=1).
EXAMPLE_BODY = bytes.fromhex(
    "020000000002016d01000109ff010d01000000000000000000000000000000000000000000e803000000"
)


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Rig:
    """An Emulator on a settable clock, collecting what it writes per port."""

    def __init__(
        self, machine_type: int = 3, firmware: int = 23, script: str = "", discovery: bool = False
    ):
        self.profile = get_profile(machine_type, firmware)
        self.clock = Clock()
        self.out: dict[int, bytearray] = {0: bytearray(), 1: bytearray(), 2: bytearray()}
        self.emu = Emulator(
            self.profile,
            lambda port, data: self.out[port].extend(data),
            clock=self.clock,
            discovery=discovery,
            script=parse_script(script, self.profile),
        )

    def send(self, data: bytes, port: int = 0) -> None:
        self.emu.feed(data, port)
        self.emu.poll()

    def at(self, t: float) -> None:
        self.clock.t = t
        self.emu.poll()

    def take(self, port: int = 0) -> bytes:
        data = bytes(self.out[port])
        self.out[port].clear()
        return data

    def connect(self) -> None:
        self.send(b"6")
        assert self.take() == b"5"
        self.at(self.clock.t + 0.1)
        self.send(b"E" + bytes([1] * len(self.profile.inputs)))
        self.send(b"%" + bytes([15] * self.profile.n_serial_channels))
        assert self.take() == b"\x01\x01"

    def hardware(self) -> HardwareInfo:
        p = self.profile
        fields, _ = parse_hardware_description(p.hardware_description(), p.fw_major)
        hw = HardwareInfo(p.machine_type, p.fw_major, p.fw_minor, p.pcb_revision, **fields)
        hw.alloc = [15] * p.n_serial_channels
        return hw

    def load(self, sm: StateMachine, run_asap: bool = False) -> None:
        self.send(compile_state_machine(sm, self.hardware()).command(run_asap))


def packets(data: bytes) -> list[tuple[list[int], int]]:
    """Split an event stream (after the start stamp) into (codes, cycle) packets."""
    out, i = [], 0
    while i < len(data):
        assert data[i] == 1, data[i:].hex()
        n = data[i + 1]
        codes = list(data[i + 2 : i + 2 + n])
        cycle = int.from_bytes(data[i + 2 + n : i + 6 + n], "little")
        out.append((codes, cycle))
        i += 6 + n + (12 if codes == [255] else 0)
    return out


def test_handshake_makes_device_deaf_for_100_ms_and_stops_discovery():
    rig = Rig(discovery=True)
    for k in range(3):
        rig.at(100.0 + 0.1 * k + 0.001)
    assert rig.take() == b"\xde" * 3
    rig.send(b"6")
    rig.send(b"F")
    assert rig.take() == b"5"  # 'F' waits while the device is deaf
    rig.at(rig.clock.t + 0.1)
    assert rig.take() == bytes.fromhex("17000300")
    rig.at(rig.clock.t + 0.5)
    assert rig.take() == b""  # no discovery bytes once connected
    rig.send(b"Z")
    assert rig.take() == b"1"
    rig.at(rig.clock.t + 0.15)
    assert rig.take() == b"\xde"


@pytest.mark.parametrize(
    ("mt", "fw", "expected"),
    [
        (
            3,
            23,
            "0001640069051008100d" + b"UUUUUXZBBPPPP".hex() + "11" + b"UUUUUXZBBPPPPVVVV".hex(),
        ),
        (
            4,
            23,
            "000164004b051008101"
            + "0"
            + b"UUUXZFFFFBBPPPPP".hex()
            + "15"
            + b"UUUXZFFFFBBPPPPPVVVVV".hex(),
        ),
        (3, 22, "000164005a1008100c" + b"UUUUUXBBPPPP".hex() + "10" + b"UUUUUXBBPPPPVVVV".hex()),
    ],
)
def test_identification_replies_match_the_firmware_layout(mt, fw, expected):
    rig = Rig(mt, fw)
    rig.connect()
    rig.send(b"H")
    assert rig.take().hex() == expected
    rig.send(b"F")
    assert rig.take() == fw.to_bytes(2, "little") + mt.to_bytes(2, "little")
    rig.send(b"f")
    rig.send(b"v")
    assert rig.take() == (b"\x0a\x00\x05" if fw == 23 else b"")
    rig.send(b"G*:" + b"\x01" + b"K\xff\x00" + b">")
    assert rig.take() == (b"\x01" * 5 if fw == 23 else b"\x01\x01\x01\x01")
    rig.send(b"M")
    assert rig.take() == bytes(rig.profile.inputs.count("U"))
    rig.send(b"S\x07")
    assert rig.take() == b"\x02\x07"
    rig.send(b"{")
    assert rig.take(1) == (b"\xde" if fw == 23 else b"")
    rig.send(b"}")
    assert rig.take(2) == (b"\xdf" if mt == 4 else b"")


def test_reference_trace_poke_at_half_a_second():
    rig = Rig(script="Port1In@0.5")
    rig.connect()
    rig.send(b"C\x00\x00" + len(EXAMPLE_BODY).to_bytes(2, "little") + EXAMPLE_BODY)
    assert rig.take() == b""  # no reply until the trial starts
    rig.at(rig.clock.t + 1.0)
    rig.send(b"R")
    start_us = int(1.1e6)
    assert rig.take() == b"\x01" + start_us.to_bytes(8, "little")
    rig.at(rig.clock.t + 2.0)
    expected = bytes.fromhex("01016d881300000101ad701700000101ff7017000070170000") + (
        start_us + 600_000
    ).to_bytes(8, "little")
    assert rig.take() == expected
    rig.send(b"R")  # same machine again: no confirm byte this time
    assert rig.take()[:8] == (int(3.1e6)).to_bytes(8, "little")


def test_commands_split_across_reads_are_reassembled():
    rig = Rig()
    rig.connect()
    cmd = b"C\x00\x00" + len(EXAMPLE_BODY).to_bytes(2, "little") + EXAMPLE_BODY + b"R"
    for b in cmd:
        rig.send(bytes([b]))
    assert rig.take()[:1] == b"\x01"
    assert rig.emu.running


def test_virtual_input_only_while_running_and_bnc_is_inverted():
    rig = Rig()
    rig.connect()
    sm = StateMachine().add_state("A", 0, {"BNC1High": "B"}).add_state("B", 0.01, {"Tup": "exit"})
    rig.send(b"V\x07\x00")  # idle: ignored
    rig.load(sm)
    rig.send(b"R")
    rig.take()
    rig.at(rig.clock.t + 0.05)
    assert rig.take() == b""
    rig.send(b"V\x07\x00")  # raw 0 on an opto-isolated BNC input = logical high
    rig.at(rig.clock.t + 0.05)
    pk = packets(rig.take())
    bnc1_high = rig.profile.max_serial_events
    assert pk[0] == ([bnc1_high], 501)
    assert pk[1] == ([rig.profile.tup_code], 601)
    assert not rig.emu.running


def test_soft_codes_need_an_allocation_and_go_both_ways():
    rig = Rig()
    rig.send(b"6")
    rig.at(rig.clock.t + 0.2)
    rig.take()
    sm = (
        StateMachine()
        .add_state("Wait", 0, {"SoftCode3": "Say"})
        .add_state("Say", 0.001, {"Tup": "exit"}, {"SoftCode": 9})
    )
    rig.load(sm)
    rig.send(b"R")
    rig.take()
    rig.send(b"~\x02")  # no '%' yet: the firmware drops soft codes
    rig.at(rig.clock.t + 0.01)
    assert rig.take() == b""
    rig.send(b"X")
    rig.take()
    rig.send(b"%" + bytes([15] * 7) + b"R")
    rig.take()
    rig.send(b"~\x02")
    rig.at(rig.clock.t + 0.01)
    data = rig.take()
    x_base = 5 * 15
    assert data[:7] == bytes([1, 1, x_base + 2]) + (1).to_bytes(4, "little")
    assert data[7:9] == b"\x02\x09"  # output soft code right after the entering packet


def test_global_timer_with_onset_delay_loops_and_condition_on_timer():
    rig = Rig()
    rig.connect()
    sm = (
        StateMachine()
        .add_state("Start", 0, {"Tup": "Wait"}, {"GlobalTimerTrig": 1})
        .add_state("Wait", 0, {"Condition1": "TimerOn"})
        .add_state("TimerOn", 0, {"GlobalTimer1_End": "Counting"})
        .add_state("Counting", 0, {"GlobalCounter1_End": "exit"})
        .set_global_timer(
            1, duration=0.01, onset_delay=0.02, channel="BNC1", loop=3, loop_interval=0.005
        )
        .set_condition(1, "GlobalTimer1", 1)
        .set_global_counter(1, "GlobalTimer1_Start", 3)
    )
    rig.load(sm)
    rig.send(b"R")
    rig.take()
    rig.at(rig.clock.t + 0.021)
    assert rig.emu.outputs[7] == 1  # BNC1 follows the timer
    rig.at(rig.clock.t + 1.0)
    p = rig.profile
    pk = packets(rig.take())
    gt_start, gt_end, gc1, cond1 = p.gt_start_base, p.gt_end_base, p.gc_base, p.cond_base
    assert pk[0] == ([p.tup_code], 1)
    assert pk[1] == ([gt_start], 200)  # triggered on entry of state 0 (cycle 0) + 200 cycles
    assert pk[2] == ([cond1], 201)  # conditions are evaluated before timers within a cycle
    assert pk[3] == ([gt_end], 300)
    assert [c for c, _ in pk[4:]] == [[gt_start], [gt_end], [gt_start], [gc1], [255]]
    assert [t for _, t in pk[4:8]] == [350, 450, 500, 501]  # loop interval 50 cycles; GC +1
    assert rig.emu.outputs[7] == 0


def test_back_signal_and_unhandled_tup_never_fires():
    rig = Rig()
    rig.connect()
    sm = (
        StateMachine()
        .add_state("A", 0.001, {"Tup": "B"})
        .add_state("B", 0.05, {"Port1In": "C", "Port2In": "exit"})  # Tup unhandled: never sent
        .add_state("C", 0.001, {"Tup": ">back"})
    )
    rig.load(sm)
    rig.send(b"R")
    rig.take()
    rig.at(rig.clock.t + 0.1)
    rig.emu.set_input("Port1In")
    rig.at(rig.clock.t + 1.0)
    rig.emu.set_input("Port2In")
    rig.at(rig.clock.t + 0.001)
    p = rig.profile
    pk = packets(rig.take())
    port1in, port2in = p.max_serial_events + 4, p.max_serial_events + 6
    assert [c for c, _ in pk] == [[p.tup_code], [port1in], [p.tup_code], [port2in], [255]]


def test_x_when_idle_answers_with_stale_end_packet_and_queued_run_asap():
    rig = Rig()
    rig.connect()
    rig.send(b"X")
    assert rig.take() == b"\x01\x01\xff" + bytes(16)
    sm = StateMachine().add_state("Only", 0.01, {"Tup": "exit"})
    rig.load(sm)
    rig.send(b"R")
    rig.take()
    rig.load(StateMachine().add_state("Next", 0.02, {"Tup": "exit"}), run_asap=True)
    rig.at(rig.clock.t + 0.015)
    data = rig.take()
    end = data.index(b"\x01\x01\xff")
    t0_next = data[end + 19 : end + 19 + 9]
    assert t0_next[:1] == b"\x01"  # confirm of the queued machine, then its start stamp
    end_us = int.from_bytes(data[end + 11 : end + 19], "little")
    assert int.from_bytes(t0_next[1:], "little") == end_us  # no dead time
    assert rig.emu.running
    assert rig.emu.description.n_states == 1
    rig.at(rig.clock.t + 0.1)
    assert not rig.emu.running


def test_override_latches_and_trial_end_resets_outputs():
    rig = Rig()
    rig.connect()
    rig.load(StateMachine().add_state("S", 0.01, {"Tup": "exit"}, {"Valve1": 1, "PWM2": 100}))
    rig.send(b"O\x0e\x01")  # Valve2 on while idle
    assert rig.emu.outputs[14] == 1
    rig.send(b"R")
    rig.at(rig.clock.t + 0.001)
    assert [rig.emu.outputs[i] for i in (13, 10, 14)] == [1, 100, 1]
    rig.at(rig.clock.t + 0.1)
    assert rig.emu.outputs == [0] * len(rig.profile.outputs)


def test_bad_description_is_refused_with_confirm_zero():
    rig = Rig()
    rig.connect()
    body = bytearray(EXAMPLE_BODY)
    body[4] = 9  # Tup target beyond exit
    rig.send(b"C\x00\x00" + len(body).to_bytes(2, "little") + bytes(body) + b"R")
    assert rig.take() == b"\x00"
    assert not rig.emu.running


def test_script_parser_names_and_errors():
    p = get_profile(3, 23)
    items = parse_script("Port1In@0.5, BNC2High@0.25;SoftCode2@1", p)
    assert [(i.cycle, i.kind, i.value) for i in items] == [
        (2500, "hw", 0),
        (5000, "hw", 1),
        (10000, "soft", 1),
    ]
    with pytest.raises(ValueError, match="Port9"):
        parse_script("Port9In@1", p)
    with pytest.raises(ValueError, match="expected e.g."):
        parse_script("Port1In at 1", p)
    with pytest.raises(ValueError, match="unknown input event"):
        parse_script("Valve1@1", p)


def test_pty_subprocess_type4_answers_on_all_three_ports(tmp_path):
    link = tmp_path / "bpod"
    proc = start_bpod_emulator(link, "--machine-type", "4")
    try:
        with serial.Serial(str(link), 12_000_000, timeout=2) as main:
            assert main.read(1) == b"\xde"  # discovery byte while idle
            main.write(b"6")
            reply = main.read_until(b"5", 20)  # a discovery byte may still precede the '5'
            assert reply.endswith(b"5")
            assert set(reply[:-1]) <= {0xDE}
            time.sleep(0.15)  # the device is deaf for 100 ms after the handshake
            with (
                serial.Serial(f"{link}.app", timeout=2) as app,
                serial.Serial(f"{link}.flex", timeout=2) as flex,
            ):
                main.write(b"{}")
                assert app.read(1) == b"\xde"
                assert flex.read(1) == b"\xdf"
            main.write(b"F")
            assert main.read(4) == bytes.fromhex("17000400")
            main.write(b"Z")
            assert main.read(1) == b"1"
    finally:
        proc.terminate()
        proc.wait(10)
    assert not link.exists()  # links are removed on SIGTERM


def test_app_port_soft_codes_both_ways_and_pause_keeps_cycle_count():
    rig = Rig()
    rig.connect()
    sm = (
        StateMachine()
        .add_state("Wait", 0, {"APP_SoftCode3": "Say"})
        .add_state("Say", 0.1, {"Tup": "exit"}, {"APP_SoftCode": 42})
    )
    rig.load(sm)
    rig.send(b"R")
    rig.take()
    rig.at(rig.clock.t + 0.01)
    rig.send(b"\x03", port=1)  # a byte on the APP port is an APP soft code event
    rig.at(rig.clock.t + 0.0001)
    app_base = 6 * 15
    assert packets(rig.take()) == [([app_base + 3], 101)]
    assert rig.take(1) == bytes([42])  # the APP_SoftCode action writes the raw byte to port 2
    rig.at(rig.clock.t + 0.05)
    rig.send(b"$\x00")  # pause for 5 s: the cycle clock stops with it
    rig.at(rig.clock.t + 5.0)
    assert rig.emu.running
    rig.send(b"$\x01")
    rig.at(rig.clock.t + 0.06)
    data = rig.take()
    assert packets(data)[0] == ([rig.profile.tup_code], 1101)
    assert not rig.emu.running
