"""Bpod service hardening (issues 12 and 18): documented ranges shared by LOAD and OVERRIDE,
fuzzing every command, one device user at a time, no temporary folders left behind by a killed
service, the machine type / firmware combinations, trials in the data folder.

Real services with the emulator on real ptys.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from fuzz_helpers import check_replies, fuzz_lines, send_all
from helpers import wait_for

from services.bpod.core import BpodService
from services.bpod.emulator import PtyEmulator, get_profile
from shared_utils.client import ModuleClient
from shared_utils.errors import CommandError, CommandFailed

QUICK = {"name": "quick", "states": [{"name": "S", "timer": 0.001, "transitions": {"Tup": "exit"}}]}


def machine(actions: dict | None = None, **extra: Any) -> dict:
    """A one-state machine with ``actions`` and extra sections (timers, counters...)."""
    state = {"name": "S", "timer": 0.01, "transitions": {"Tup": "exit"}, "actions": actions or {}}
    return {"name": "m", "states": [state], **extra}


@pytest.fixture
def service(module_process, lsl_name, tmp_path) -> int:
    _, port = module_process(
        "services.bpod",
        "--emulator",
        "--stream-name",
        lsl_name,
        "--data-dir",
        str(tmp_path),
        env={"TMPDIR": str(tmp_path)},
    )
    return port


# ---- issue 12.5: ranges -------------------------------------------------------------------------
LOAD_CASES = [
    (machine({"Valve1": 7}), r"Valve1: value must be an integer 0\.\.1, got 7"),
    (machine({"BNC1": 2}), r"BNC1: value must be an integer 0\.\.1"),
    (machine({"PWM1": 256}), r"PWM1: value must be an integer 0\.\.255"),
    (machine({"Valve1": True}), "integer"),
    (machine({"GlobalTimerTrig": 99}), r"timer numbers must be 1\.\.16"),
    ({"states": [{"name": "S", "timer": -1}]}, "timer must be a number >= 0"),
    ({"states": [{"name": "S", "timer": 1e300}]}, "longer than the device can count"),
    ({"states": [{"name": "S", "timer": 1e308}]}, "longer than the device can count"),
    (machine(global_timers=[{"duration": 1e308}]), "longer than the device can count"),
    ({"states": [{"name": "S", "timer": True}]}, "timer must be a number"),
    ({"states": [{"name": "S", "transitions": {"Tup": ["exit"]}}]}, "must lead to a state name"),
    ({"states": [{"name": "x" * 201}]}, "longer than 200"),
    ({"states": [{"name": f"S{i}"} for i in range(300)]}, "at most 256"),
    ({"name": ["m"], "states": [{"name": "S"}]}, "'name' must be a string"),
    (
        machine(global_timers=[{"duration": 1, "channel": "Valve1", "on_value": 5}]),
        r"global timer 1 on_value: value must be an integer 0\.\.1",
    ),
    (machine(global_timers=[{"duration": 1, "send_events": "yes"}]), "send_events"),
    (machine(global_timers=[{"duration": 1, "channel": ["BNC1"]}]), "channel must be a name"),
    (machine(global_timers=[{"index": 10**9, "duration": 1}]), r"index must be an integer 1\.\.32"),
    (
        machine(global_counters=[{"event": "Port1In", "threshold": 2**40}]),
        r"threshold must be an integer 0\.\.4294967295",
    ),
    (machine(global_counters=[{"event": ["Port1In"], "threshold": 1}]), "event must be a name"),
    (machine(conditions=[{"channel": "Port1", "value": 2}]), r"value must be an integer 0\.\.1"),
]


def test_load_run_and_override_enforce_the_documented_ranges(service: int) -> None:
    with ModuleClient("127.0.0.1", service, timeout=30) as c:
        for sm, match in LOAD_CASES:
            with pytest.raises(CommandFailed, match=match):
                c.send("LOAD", state_machine=sm)
        for value, match in [(7, r"0\.\.1, got 7"), (-1, r"0\.\.1"), (1.5, "must be int")]:
            with pytest.raises(CommandFailed, match=match):
                c.send("OVERRIDE", channel="Valve1", value=value)
        with pytest.raises(CommandFailed, match=r"PWM1 must be an integer in 0\.\.255"):
            c.send("OVERRIDE", channel="PWM1", value=256)
        assert c.send("OVERRIDE", channel="PWM1", value=255)["value"] == 255
        c.send("LOAD", state_machine=machine({"Valve1": 1, "PWM1": 255, "BNC1": 1}))
        for trials in (0, 10_001, 10**12):
            with pytest.raises(CommandFailed, match=r"trials must be an integer in 1\.\.10000"):
                c.send("RUN", trials=trials)
        assert c.send("RUN", trials=1, wait=True)["completed"] == 1
        assert c.send("UP") is True


def test_fuzzing_every_bpod_command_gets_one_clean_error_per_line(service: int) -> None:
    bad_machines = [sm for sm, _ in LOAD_CASES] + [
        {"states": [{"name": "S", "transitions": {"Port1In": {"x": 1}}}]},
        {"states": [{"name": "S", "actions": {"SoftCode": 2**40}}]},
        {"states": [{"name": "S", "timer": "1"}]},
        {"states": [{}]},
        {"states": [None]},
        machine(global_timers=[{"duration": 1, "loop": -1}]),
        machine(global_timers=[{"duration": 1, "onset_triggers": [0, 99]}]),
        machine(global_timers=[{"duration": "1"}]),
        machine(global_counters=[{"event": "Port1In", "threshold": -1}]),
        machine(global_counters=[{"threshold": 1}]),
        machine(conditions=[{"channel": {"a": 1}, "value": 1}]),
        machine(global_timers="x"),
    ]
    base = {
        "LOAD": {"state_machine": QUICK},
        "RUN": {"trials": 1, "state_machine": QUICK},
        "OVERRIDE": {"channel": "Valve1", "value": 0},
        "SOFT_CODE": {"code": 1},
        "EMULATE_INPUT": {"event": "Port1In"},
    }
    with ModuleClient("127.0.0.1", service, timeout=30) as c:
        n = 0
        problems: list[str] = []
        for _, lines in fuzz_lines(c.send("HELP"), base):
            problems += check_replies(lines, send_all(service, lines))
            n += len(lines)
        sm_lines = [f"LOAD|{json.dumps({'state_machine': sm})}" for sm in bad_machines]
        replies = send_all(service, sm_lines)
        problems += check_replies(sm_lines, replies)
        assert all(r["ok"] is False for r in replies), [r for r in replies if r["ok"]]
        assert not problems, "\n".join(problems[:20])
        assert n > 200
        c.send("STOP")
        assert c.send("STATUS")["connected"] is True
        assert c.send("RUN", trials=1, wait=True, state_machine=QUICK)["completed"] == 1


# ---- issue 12.8: one user of the device at a time; no folders left behind ----------------------
def test_connect_while_stop_and_override_run_on_other_threads(
    tmp_path: Path, lsl_name: str
) -> None:
    """Before: CONNECT closed the port under a STOP's writes, which raised TypeError from
    pyserial. Now every device command holds the service's lock."""
    emu = PtyEmulator(tmp_path / "bpod", get_profile(3, 23))
    emu.start_thread()
    core = BpodService(str(emu.link), None, lsl_name, tmp_path / "trials.jsonl")
    failures: list[str] = []
    done = threading.Event()

    def hammer(call: Any) -> None:
        while not done.is_set():
            try:
                call()
            except CommandError:
                pass  # a clear refusal ("not connected; send CONNECT first") is fine
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [
        threading.Thread(target=hammer, args=(core.stop,)),
        threading.Thread(target=hammer, args=(lambda: core.override("Valve2", 0),)),
    ]
    try:
        core.connect()
        for t in threads:
            t.start()
        for _ in range(12):
            core.connect()
    finally:
        done.set()
        for t in threads:
            t.join(10)
        core.close()
        emu.close()
    assert not failures, failures[:5]


def test_a_killed_service_leaves_no_emulator_folder(module_process, lsl_name, tmp_path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    proc, port = module_process("services.bpod", "--emulator", "--stream-name", lsl_name, env=env)
    with ModuleClient("127.0.0.1", port, timeout=30) as c:
        st = c.send("STATUS")
    folder = Path(st["serial"]).parent
    assert folder.parent == tmp_path
    assert folder.name.startswith(f"bpod-emu-{proc.pid}-")
    proc.send_signal(signal.SIGKILL)  # no clean-up runs in the service
    wait_for(lambda: not folder.exists(), "the emulator removed its folder")

    # Both killed at once (the whole process group): the next service sweeps the folder.
    proc, port = module_process("services.bpod", "--emulator", "--stream-name", lsl_name, env=env)
    with ModuleClient("127.0.0.1", port, timeout=30) as c:
        folder = Path(c.send("STATUS")["serial"]).parent
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert folder.exists()
    proc, port = module_process("services.bpod", "--emulator", "--stream-name", lsl_name, env=env)
    assert not folder.exists()
    with ModuleClient("127.0.0.1", port, timeout=30) as c:
        mine = Path(c.send("STATUS")["serial"]).parent
    assert [p for p in tmp_path.iterdir() if p.name.startswith("bpod-emu-")] == [mine]


# ---- issue 18: machine types and firmware; trials in the data folder ----------------------------
@pytest.mark.parametrize("module", ["services.bpod", "services.bpod.emulator"])
def test_type_4_with_firmware_22_is_refused_with_the_combinations_that_exist(
    module: str, tmp_path: Path
) -> None:
    args = ["--emulator"] if module == "services.bpod" else ["--link", str(tmp_path / "b")]
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "--machine-type", "4", "--firmware", "22"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "the Bpod 2+ (machine type 4) came out with firmware 23" in proc.stderr
    assert "type 3: firmware 22 or 23; type 4: firmware 23" in proc.stderr


def test_trials_go_to_the_data_folder_by_default(service: int, tmp_path: Path) -> None:
    with ModuleClient("127.0.0.1", service, timeout=30) as c:
        trials_file = Path(c.send("STATUS")["trials_file"])
        assert c.send("RUN", trials=1, wait=True, state_machine=QUICK)["completed"] == 1
    assert trials_file.parent == tmp_path / "bpod"
    assert trials_file.read_text().count("\n") == 1
