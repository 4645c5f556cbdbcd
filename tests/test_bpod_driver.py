"""The pyserial driver against the emulator over real pseudo-terminals."""

from __future__ import annotations

import threading
from functools import partial

import helpers
import pytest
from helpers import start_bpod_emulator
from hypothesis import given, settings
from hypothesis import strategies as st

from services.bpod.compiler import compile_state_machine
from services.bpod.driver import BpodDriver, BpodError, DeviceGone
from services.bpod.emulator import Emulator, PtyEmulator, ScriptItem, get_profile, parse_script
from services.bpod.hardware import HardwareInfo, compress_names, parse_hardware_description
from services.bpod.state_machine import StateMachine, StateMachineError
from services.bpod.trial import Events, EventStreamParser, TrialEnd, TrialReplay

EXAMPLE = (
    "4300002a00020000000002016d01000109ff010d01000000000000000000000000000000000000000000e803000000"
)


@pytest.fixture
def bpod(tmp_path):
    """Start an in-process emulator on a pty and return a factory for connected drivers."""
    emus, drivers = [], []

    def make(machine_type=3, firmware=23, script=""):
        profile = get_profile(machine_type, firmware)
        emu = PtyEmulator(
            tmp_path / f"bpod{len(emus)}", profile, script=parse_script(script, profile)
        )
        emu.start_thread()
        emus.append(emu)
        drv = BpodDriver(str(emu.link))
        drivers.append(drv)
        drv.connect()
        return drv, emu

    yield make
    for d in drivers:
        d.disconnect()
    for e in emus:
        e.close()


def poke_sm() -> StateMachine:
    return (
        StateMachine("poke")
        .add_state("WaitForPoke", 0, {"Port1In": "Reward"}, {"PWM1": 255})
        .add_state("Reward", 0.1, {"Tup": "exit"}, {"Valve1": 1})
    )


wait_for = partial(helpers.wait_for, timeout=10.0, every=0.005)


@pytest.mark.parametrize(("mt", "fw"), [(3, 23), (4, 23), (3, 22)])
def test_connect_reads_hardware_and_finds_extra_ports(bpod, mt, fw):
    drv, emu = bpod(mt, fw)
    hw = drv.hw
    assert (hw.machine_type, hw.fw_major) == (mt, fw)
    assert (drv.app_port is not None) == (fw == 23)
    assert (drv.flex_port is not None) == (mt == 4)
    names = hw.event_codes()
    assert names["Port1In"] == hw.max_serial_events + 2 * (
        hw.inputs.index("P") - hw.n_serial_channels
    )
    assert names["Tup"] == hw.tup_code
    assert "Valve1" in hw.output_channel_names()
    assert ("Flex1High" in names) == (mt == 4)
    assert ("APP_SoftCode0" in names) == (fw == 23)
    assert drv.read_input(hw.inputs.index("P")) == 0
    assert drv.read_input(hw.inputs.index("B")) == 0  # inverted BNC reads logical low when idle


def test_compiles_the_reference_example_byte_for_byte(bpod):
    drv, _ = bpod()
    assert compile_state_machine(poke_sm(), drv.hw).command().hex() == EXAMPLE


def test_json_round_trip_and_names_in_errors(bpod):
    drv, _ = bpod()
    sm = poke_sm().set_global_timer(1, 0.5, channel="BNC1").set_condition(1, "Port2", 1)
    sm.set_global_counter(1, "Port1In", 3)
    again = StateMachine.from_dict(sm.to_dict())
    assert compile_state_machine(again, drv.hw).body == compile_state_machine(sm, drv.hw).body
    bad = {"states": [{"name": "Wait", "transitions": {"Port1in": "exit"}}]}
    with pytest.raises(
        StateMachineError, match=r"unknown event 'Port1in'.*did you mean 'Port1In'.*Port4Out"
    ):
        compile_state_machine(StateMachine.from_dict(bad), drv.hw)
    bad = {"states": [{"name": "Wait", "transitions": {"Tup": "Rewrd"}}, {"name": "Reward"}]}
    with pytest.raises(
        StateMachineError, match=r"'Rewrd'.*did you mean 'Reward'.*valid: Wait, Reward, exit"
    ):
        compile_state_machine(StateMachine.from_dict(bad), drv.hw)
    bad = {"states": [{"name": "Wait", "actions": {"Valve9": 1}}]}
    with pytest.raises(StateMachineError, match=r"output channel 'Valve9'.*Valve1..Valve4"):
        compile_state_machine(StateMachine.from_dict(bad), drv.hw)
    with pytest.raises(StateMachineError, match=r"unknown key 'timeout' \(did you mean 'timer'"):
        StateMachine.from_dict({"states": [{"name": "A", "timeout": 1}]})
    assert compress_names(["SoftCode1", "SoftCode2", "SoftCode3", "Tup"]) == [
        "SoftCode1..SoftCode3",
        "Tup",
    ]
    assert compress_names(["BNC1", "BNC2", "PWM1"]) == ["BNC1", "BNC2", "PWM1"]


def test_trials_rebuild_states_and_event_times(bpod):
    drv, _ = bpod(script="Port1In@0.25,Port1Out@0.3")
    sm = compile_state_machine(poke_sm(), drv.hw)
    for n in (1, 2):
        rec = drv.run_trial(sm, n)
        d = rec.to_dict()
        assert d["visited"] == ["WaitForPoke", "Reward"]
        assert d["states"] == {"WaitForPoke": [[0.0, 0.25]], "Reward": [[0.25, 0.35]]}
        assert d["events"] == {"Port1In": [0.25], "Port1Out": [0.3], "Tup": [0.35]}
        assert rec.end_us - rec.start_us == rec.n_cycles * 100 == 3500 * 100
        assert not rec.stopped


def test_timers_counters_conditions_and_back_replayed_like_the_device(bpod):
    drv, _ = bpod(script="Port1In@0.01,Port1Out@0.012,Port1In@0.02,Port1Out@0.022")
    sm = (
        StateMachine("complex")
        .add_state("Arm", 0, {"Tup": "Count"}, {"GlobalTimerTrig": 1})
        .add_state("Count", 0, {"GlobalCounter1_End": "Hold", "Port1In": "Blip"})
        .add_state("Blip", 0.001, {"Tup": ">back", "GlobalCounter1_End": "Hold"})
        .add_state("Hold", 0, {"Condition1": "Done"})
        .add_state("Done", 0.001, {"Tup": "exit"}, {"GlobalTimerCancel": 1})
        .set_global_timer(1, duration=0.05, onset_delay=0.03, channel="BNC1")
        .set_global_counter(1, "Port1In", 2)
        .set_condition(1, "GlobalTimer1", 1)
    )
    rec = drv.run_trial(compile_state_machine(sm, drv.hw), 1).to_dict()
    assert rec["visited"] == ["Arm", "Count", "Blip", "Count", "Blip", "Hold", "Done"]
    assert rec["states"]["Hold"] == [[0.0201, 0.0301]]  # counter fires the cycle after Port1In
    assert rec["events"]["GlobalTimer1_Start"] == [0.03]
    assert rec["events"]["GlobalTimer1_End"] == [0.0302]  # cancelled on entry, reported next cycle
    assert rec["events"]["GlobalCounter1_End"] == [0.0201]


def test_255_state_chain_runs_one_cycle_per_state(bpod):
    drv, _ = bpod()
    sm = StateMachine("chain")
    for i in range(255):
        sm.add_state(f"S{i}", 0, {"Tup": f"S{i + 1}" if i < 254 else "exit"})
    rec = drv.run_trial(compile_state_machine(sm, drv.hw), 1).to_dict()
    assert len(rec["visited"]) == 255
    assert rec["duration_s"] == 0.0255
    sm.add_state("S255")
    with pytest.raises(StateMachineError, match="at most 255"):
        compile_state_machine(sm, drv.hw)


def test_soft_codes_override_virtual_input_and_stop(bpod):
    drv, emu = bpod()
    sm = (
        StateMachine("soft")
        .add_state("Wait", 0, {"SoftCode2": "Tell", "BNC2High": "Tell"}, {"BNC1": 1})
        .add_state("Tell", 0, {"Port3In": "Hang"}, {"SoftCode": 7})
        .add_state("Hang", 60, {"Tup": "exit"}, {"Valve2": 1})
    )
    compiled = compile_state_machine(sm, drv.hw)
    got, result = [], {}
    th = threading.Thread(
        target=lambda: result.update(rec=drv.run_trial(compiled, 1, on_soft_code=got.append))
    )
    th.start()
    out = emu.emulator.outputs
    wait_for(lambda: out[7] == 1, "BNC1 high in Wait")
    drv.override(13, 1)  # Valve1 by hand while the trial runs
    wait_for(lambda: out[13] == 1, "Valve1 override")
    drv.soft_code(2)
    wait_for(lambda: got == [7], "soft code 7 from the device")
    drv.virtual_input(drv.hw.inputs.index("P") + 2, 1)  # Port3In
    wait_for(lambda: out[14] == 1, "Valve2 open in Hang")
    drv.force_exit()
    th.join(10)
    rec = result["rec"].to_dict()
    assert rec["visited"] == ["Wait", "Tell", "Hang"]
    assert rec["stopped"] is True
    assert rec["soft_codes"][0][0] == 7
    assert "SoftCode2" in rec["events"]
    wait_for(lambda: not any(out), "outputs reset at trial end")


def test_garbage_is_skipped_or_fails_the_trial_clearly(bpod):
    drv, emu = bpod()
    sm = compile_state_machine(StateMachine("g").add_state("A", 0.3, {"Tup": "exit"}), drv.hw)

    def inject(data: bytes):
        return lambda _start_us: emu._write(0, data)  # straight into the pty, mid-trial

    rec = drv.run_trial(sm, 1, on_start=inject(b"\x07\x99\x00"))
    assert rec.garbage_bytes == 3
    assert rec.to_dict()["events"] == {"Tup": [0.3]}
    with pytest.raises(BpodError, match="not Bpod event packets"):
        drv.run_trial(sm, 2, on_start=inject(b"\x07" * 100))
    assert drv.run_trial(sm, 3).to_dict()["visited"] == ["A"]  # the driver recovered by itself


def test_lost_start_is_resent(bpod):
    drv, emu = bpod()
    emu.emulator.drop_next_run = 1  # the device swallows the first 'R' (firmware 23.10 quirk)
    sm = StateMachine().add_state("Only", 0.01, {"Tup": "exit"})
    rec = drv.run_trial(compile_state_machine(sm, drv.hw), 1)
    assert emu.emulator.drop_next_run == 0
    assert rec.to_dict()["events"] == {"Tup": [0.01]}


def test_device_gone_mid_trial_is_reported(tmp_path):
    link = tmp_path / "bpod"
    proc = start_bpod_emulator(link)
    try:
        drv = BpodDriver(str(link))
        drv.connect()
        sm = compile_state_machine(StateMachine().add_state("Long", 30, {"Tup": "exit"}), drv.hw)
        threading.Timer(0.3, proc.kill).start()
        with pytest.raises(DeviceGone, match="gone"):
            drv.run_trial(sm, 1)
        assert not drv.connected
        with pytest.raises(BpodError, match="CONNECT"):
            drv.run_trial(sm, 2)
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("fw", [22, 23])
def test_counter_reset_encoding_per_firmware(bpod, fw):
    drv, _ = bpod(
        3, fw, script="Port1In@0.01,Port1Out@0.011,Port1In@0.02,Port1Out@0.021,Port1In@0.03"
    )
    sm = (
        StateMachine("reset")
        .add_state("First", 0, {"Port1In": "Reset"})
        .add_state("Reset", 0.001, {"Tup": "Wait"}, {"GlobalCounterReset": 1})
        .add_state("Wait", 1, {"GlobalCounter1_End": "exit", "Tup": "exit"})
        .set_global_counter(1, "Port1In", 2)
    )
    rec = drv.run_trial(compile_state_machine(sm, drv.hw), 1).to_dict()
    # Without the reset the first poke would count and the counter would end at 0.0201.
    assert rec["events"]["GlobalCounter1_End"] == [0.0301]
    assert rec["visited"] == ["First", "Reset", "Wait"]


@given(
    packets=st.lists(
        st.tuples(st.lists(st.integers(0, 173), min_size=1, max_size=5), st.integers(0, 2**32 - 1)),
        max_size=20,
    ),
    cuts=st.lists(st.integers(1, 7), max_size=60),
)
def test_event_parser_is_independent_of_read_boundaries(packets, cuts):
    stream = b"".join(bytes([1, len(c), *c]) + t.to_bytes(4, "little") for c, t in packets)
    stream += b"\x02\x05" + bytes.fromhex("0101ff") + bytes(16)
    parser = EventStreamParser(174)
    items, pos = [], 0
    for n in [*cuts, len(stream)]:
        items += parser.feed(stream[pos : pos + n])
        pos += n
    assert [(i.codes, i.cycle) for i in items if isinstance(i, Events)] == packets
    assert isinstance(items[-1], TrialEnd)
    assert parser.garbage == 0


@settings(max_examples=60, deadline=None)
@given(
    spec=st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 12), st.integers(0, 12), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    pokes=st.lists(st.integers(1, 400), max_size=6),
)
def test_host_replay_matches_the_states_the_device_visited(spec, pokes):
    """Random Tup/Port1In/>back machines: the driver's rebuilt path equals the emulator's own."""
    profile = get_profile(3, 23)
    now = [0.0]
    out = bytearray()
    emu = Emulator(profile, lambda _p, d: out.extend(d), clock=lambda: now[0], discovery=False)
    hw = HardwareInfo(
        3, 23, 10, 5, **parse_hardware_description(profile.hardware_description(), 23)[0]
    )
    hw.alloc = hw.default_alloc()
    n = len(spec)
    sm = StateMachine("random")
    for i, (timer, tup, poke, back) in enumerate(spec):
        target = lambda k: "exit" if k >= n else f"S{k}"  # noqa: E731
        sm.add_state(
            f"S{i}",
            timer * 1e-4,
            {"Tup": target(tup), "Port1In": ">back" if back else target(poke)},
        )
    compiled = compile_state_machine(sm, hw)
    cycles = sorted({c for c in pokes})
    items = [
        ScriptItem(c, "hw", profile.inputs.index("P"), 1 - k % 2) for k, c in enumerate(cycles)
    ]
    emu.script = items
    emu.feed(b"6")
    emu.poll()
    now[0] = 0.2
    emu.feed(b"E" + bytes([1] * 13) + compiled.command() + b"R")
    emu.poll()
    now[0] = 1.0  # 10000 cycles: a machine still running then loops forever; stop it
    emu.poll()
    if emu.running:
        emu.feed(b"X")
        emu.poll()
    parser = EventStreamParser(hw.tup_code + 1)
    replay = TrialReplay(compiled, 1)
    assert out[:3] == b"5\x01\x01"  # handshake, 'E' acknowledged, machine confirmed
    for item in parser.feed(bytes(out)[3 + 8 :]):  # after the u64 start stamp
        if isinstance(item, Events):
            replay.on_events(item)
    assert parser.garbage == 0
    device_path = [f"S{s}" for _, s in emu.visited]
    assert replay.record.to_dict()["visited"] == device_path
    assert [round(c * 1e-4, 6) for c, _ in emu.visited] == [s[1] for s in replay.record.states]


def test_connect_to_a_device_left_running_by_a_crashed_host(bpod):
    pokes = ",".join(
        f"Port2{'In' if k % 2 == 0 else 'Out'}@{0.001 * (k + 1):.3f}" for k in range(400)
    )
    old, emu = bpod(script=pokes)
    busy = StateMachine().add_state("Busy", 30, {"Tup": "exit"})
    old._write(compile_state_machine(busy, old.hw).command() + b"R")  # then the host "crashes"
    old.close_port()
    wait_for(lambda: emu.emulator.running, "device running")
    drv = BpodDriver(str(emu.link))
    drv.connect()
    assert not emu.emulator.running  # the new host ended the stale trial before handshaking
    sm = StateMachine().add_state("Short", 0.01, {"Tup": "exit"})
    rec = drv.run_trial(compile_state_machine(sm, drv.hw), 1)
    assert rec.to_dict()["visited"] == ["Short"]
    assert rec.garbage_bytes == 0
    drv.disconnect()


def test_inputs_injected_into_the_emulator_from_python(bpod):
    drv, emu = bpod()
    sm = compile_state_machine(poke_sm(), drv.hw)
    result = {}
    th = threading.Thread(target=lambda: result.update(rec=drv.run_trial(sm, 1)))
    th.start()
    wait_for(lambda: emu.emulator.running, "trial running")
    emu.inject("Port1In")  # the animal pokes; no host command involved
    th.join(10)
    rec = result["rec"].to_dict()
    assert rec["visited"] == ["WaitForPoke", "Reward"]
    t_poke = rec["events"]["Port1In"][0]
    assert rec["events"]["Tup"] == [round(t_poke + 0.1, 6)]
    with pytest.raises(ValueError, match="unknown input event"):
        emu.inject("Nose1In")
