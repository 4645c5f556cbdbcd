"""The Bpod service end to end: subprocess service + emulator child, protocol commands, LSL markers."""

from __future__ import annotations

import json
import os
import signal
import time

import pylsl
import pytest
from helpers import wait_for

from shared_utils.client import ModuleClient
from shared_utils.errors import CommandFailed

POKE = {
    "name": "poke",
    "states": [
        {
            "name": "WaitForPoke",
            "timer": 0,
            "transitions": {"Port1In": "Reward"},
            "actions": {"PWM1": 255},
        },
        {"name": "Reward", "timer": 0.1, "transitions": {"Tup": "exit"}, "actions": {"Valve1": 1}},
    ],
}


def open_inlet(name: str) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("name", name, 1, 20.0)
    assert found, f"marker stream {name} not found"
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(10.0)
    return inlet


def pull_until(inlet: pylsl.StreamInlet, last: str) -> list[tuple[str, float]]:
    got: list[tuple[str, float]] = []
    deadline = time.monotonic() + 20
    while not got or got[-1][0] != last:
        assert time.monotonic() < deadline, f"no {last!r} marker; got {got}"
        sample, ts = inlet.pull_sample(timeout=0.5)
        if sample is not None:
            got.append((sample[0], ts))
    return got


def test_trials_markers_and_trials_file(module_process, lsl_name, tmp_path):
    trials_file = tmp_path / "trials.jsonl"
    _, port = module_process(
        "services.bpod",
        "--emulator",
        "--script",
        "Port1In@0.2,Port1Out@0.25",
        "--stream-name",
        lsl_name,
        "--trials-file",
        str(trials_file),
    )
    inlet = open_inlet(lsl_name)
    with ModuleClient("127.0.0.1", port, timeout=30) as c:
        info = c.send("INFO")
        assert info["model"] == "Bpod 2.x"
        assert info["firmware"] == "23.10"
        assert "Port1" in info["inputs"]
        assert "Valve1" in info["outputs"]
        assert info["app_port"].endswith(".app")
        loaded = c.send("LOAD", state_machine=POKE)
        assert loaded["states"] == ["WaitForPoke", "Reward"]
        res = c.send("RUN", trials=2, wait=True)
    assert res["completed"] == 2
    for trial in res["trials"]:
        assert trial["visited"] == ["WaitForPoke", "Reward"]
        assert trial["states"] == {"WaitForPoke": [[0.0, 0.2]], "Reward": [[0.2, 0.3]]}
        assert trial["events"] == {"Port1In": [0.2], "Port1Out": [0.25], "Tup": [0.3]}
    markers = pull_until(inlet, "trial_end:2")
    names = [m for m, _ in markers]
    first = names[: names.index("trial_end:1") + 1]
    assert first == [
        "trial_start:1",
        "state:WaitForPoke",
        "event:Port1In",
        "state:Reward",
        "event:Port1Out",
        "event:Tup",
        "state:exit",
        "trial_end:1",
    ]
    ts = dict(markers[: len(first)])
    assert ts["event:Tup"] - ts["event:Port1In"] == pytest.approx(0.1, abs=1e-6)
    assert ts["event:Port1In"] - ts["trial_start:1"] == pytest.approx(0.2, abs=1e-6)
    assert ts["trial_start:1"] == pytest.approx(res["trials"][0]["lsl_start"], abs=1e-6)
    lines = [json.loads(line) for line in trials_file.read_text().splitlines()]
    assert [t["trial"] for t in lines] == [1, 2]
    assert lines[1]["events"] == res["trials"][1]["events"]


def start(module_process, lsl_name: str, tmp_path, *args: str):
    """Start the service; trials go to tmp_path so tests never write into the checkout."""
    return module_process(
        "services.bpod",
        *args,
        "--stream-name",
        lsl_name,
        "--trials-file",
        str(tmp_path / "trials.jsonl"),
    )


def test_run_returns_at_once_and_the_control_room_can_poke(module_process, lsl_name, tmp_path):
    _, port = start(module_process, lsl_name, tmp_path, "--emulator")
    sm = {
        "name": "hang",
        "states": [
            {"name": "Wait", "transitions": {"Port1In": "Reward", "SoftCode1": "Reward"}},
            {"name": "Reward", "timer": 0.01, "transitions": {"Tup": "Hang"}},
            {"name": "Hang", "timer": 60, "transitions": {"Tup": "exit"}, "actions": {"Valve1": 1}},
        ],
    }
    with ModuleClient("127.0.0.1", port, timeout=30) as c:
        c.send("LOAD", state_machine=sm)
        with pytest.raises(CommandFailed, match="RUN first"):
            c.send("EMULATE_INPUT", event="Port1In")
        started = c.send("RUN", trials=3)
        assert isinstance(started["task"], int)
        assert started["trials"] == 3
        wait_for(lambda: c.send("STATUS")["state"] == "Wait", "trial running in Wait")
        with pytest.raises(CommandFailed, match="a run is in progress"):
            c.send("RUN", trials=1)
        with pytest.raises(CommandFailed, match=r"did you mean 'Port1In'"):
            c.send("EMULATE_INPUT", event="Port1in")
        assert c.send("EMULATE_INPUT", event="Port1In")["raw_level"] == 1
        wait_for(lambda: c.send("STATUS")["state"] == "Hang", "poke leads to Hang")
        assert c.send("OVERRIDE", channel="Valve2", value=1) == {"channel": "Valve2", "value": 1}
        with pytest.raises(CommandFailed, match=r"Valve9.*Valve1, Valve2, Valve3, Valve4"):
            c.send("OVERRIDE", channel="Valve9", value=1)
        with pytest.raises(CommandFailed, match="soft code must be 1..15"):
            c.send("SOFT_CODE", code=0)
        stopped = c.send("STOP")
        assert stopped["stopped"] is True
        result = c.send("RESULT")
        assert result["completed"] == 1
        assert result["trials"][0]["visited"] == ["Wait", "Reward", "Hang"]
        assert result["trials"][0]["stopped"] is True
        assert c.send("STATUS")["running"] is False
        with pytest.raises(CommandFailed, match="soft codes only reach a running trial"):
            c.send("SOFT_CODE", code=1)
        run2 = c.send("RUN", trials=1)
        wait_for(lambda: c.send("STATUS")["state"] == "Wait", "second run waiting")
        assert c.send("SOFT_CODE", code=1)["event"] == "SoftCode1"
        wait_for(lambda: c.send("STATUS")["state"] == "Hang", "soft code leads to Hang")
        c.send("STOP", task=run2["task"])  # stopping the task alone also ends the trial
        wait_for(lambda: c.send("STATUS")["running"] is False, "run ended")
        assert c.send("RESULT")["trials"][0]["stopped"] is True
        with pytest.raises(CommandFailed, match=r"unknown event 'Port1in'.*did you mean 'Port1In'"):
            c.send(
                "LOAD",
                state_machine={"states": [{"name": "A", "transitions": {"Port1in": "exit"}}]},
            )
        with pytest.raises(CommandFailed, match=r"'Rewad'.*valid: A, exit"):
            c.send(
                "LOAD", state_machine={"states": [{"name": "A", "transitions": {"Tup": "Rewad"}}]}
            )


def test_device_gone_mid_trial_then_connect_recovers(module_process, lsl_name, tmp_path):
    _, port = start(module_process, lsl_name, tmp_path, "--emulator")
    long_sm = {"states": [{"name": "Long", "timer": 60, "transitions": {"Tup": "exit"}}]}
    short_sm = {
        "name": "short",
        "states": [{"name": "S", "timer": 0.01, "transitions": {"Tup": "exit"}}],
    }
    with ModuleClient("127.0.0.1", port, timeout=30) as c:
        c.send("LOAD", state_machine=long_sm)
        c.send("RUN", trials=1)
        status = wait_for(lambda: (s := c.send("STATUS"))["state"] == "Long" and s, "trial running")
        os.kill(status["emulator_pid"], signal.SIGKILL)  # the "USB cable" is pulled
        status = wait_for(lambda: (s := c.send("STATUS"))["last_error"] and s, "error reported")
        assert "gone" in status["last_error"]
        assert status["running"] is False
        assert status["connected"] is False
        assert c.send("UP") is True
        with pytest.raises(CommandFailed, match="CONNECT"):
            c.send("RUN", trials=1)
        info = c.send("CONNECT")
        assert info["model"] == "Bpod 2.x"
        assert c.send("STATUS")["emulator_pid"] != status["emulator_pid"]
        res = c.send("RUN", trials=2, wait=True, state_machine=short_sm)
        assert [t["visited"] for t in res["trials"]] == [["S"], ["S"]]


@pytest.mark.parametrize(
    ("args", "model", "flex", "app"),
    [
        (("--machine-type", "4"), "Bpod 2+", True, True),
        (("--firmware", "22"), "Bpod 2.x", False, False),
    ],
)
def test_emulator_profiles_through_the_service(
    module_process, lsl_name, tmp_path, args, model, flex, app
):
    proc, port = start(module_process, lsl_name, tmp_path, "--emulator", *args)
    with ModuleClient("127.0.0.1", port, timeout=30) as c:
        info = c.send("INFO")
        assert info["model"] == model
        assert (info["flex_port"] is not None) == flex
        assert (info["app_port"] is not None) == app
        assert ("Flex1" in info["inputs"]) == flex
        res = c.send(
            "RUN", trials=1, wait=True, state_machine=POKE | {"states": POKE["states"][1:]}
        )
        assert res["trials"][0]["events"] == {"Tup": [0.1]}
        emulator_pid = c.send("STATUS")["emulator_pid"]
        c.send("CLOSE")
    proc.wait(20)
    with pytest.raises(ProcessLookupError):  # the emulator child went with the service
        os.kill(emulator_pid, 0)


def test_missing_serial_device_keeps_serving(module_process, lsl_name, tmp_path):
    missing = str(tmp_path / "no-such-tty")
    _, port = start(module_process, lsl_name, tmp_path, "--serial", missing)
    with ModuleClient("127.0.0.1", port, timeout=30) as c:
        assert c.send("STATUS")["connected"] is False
        with pytest.raises(CommandFailed, match="no-such-tty"):
            c.send("CONNECT")
        with pytest.raises(CommandFailed, match="CONNECT first"):
            c.send("LOAD", state_machine=POKE)
