"""The shared-memory transport through the whole mesh, with real module processes.

The mockup streams a Neuropixels-sized signal (384 ch x 30 kHz int16) into a ring; the
StreamWatcher, the stream watcher service, the decoder and the recorder read it through the same
API as an LSL stream; the recording holds the ring's samples, the LSL markers and the decoder's LSL
output on one time base, loads with pyxdf and has no gap. Then the bad input of issue 17, and the
control room's per-module CPU affinity and priority and its sweep of dead writers' rings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import pyxdf
from conftest import ROOT
from helpers import wait_for
from shm_helpers import children_fixture, leftovers, shm_session_fixture  # noqa: F401

from control_room.config import ConfigError, parse_config
from control_room.handle import StartError
from shared_utils.client import ModuleClient
from shared_utils.errors import CommandFailed
from shared_utils.platform.processes import current_scheduling
from shared_utils.streams.shm import ShmWriter, list_rings, sweep_stale
from shared_utils.streams.watcher import StreamWatcher

SR = 30000
PROBE = {"transport": "shm", "channels": 384, "srate": SR, "dtype": "int16", "chunk": 30}


def client(port: int) -> ModuleClient:
    return ModuleClient("127.0.0.1", port, timeout=30)


def recorded(rc: ModuleClient, name: str, n: int) -> bool:
    return rc.send("STATUS").get("counts", {}).get(name, 0) >= n


def test_mockup_ring_through_watcher_decoder_and_recorder_into_one_xdf(
    shm_session: str, module_process, tmp_path: Path
) -> None:
    """``shm_session`` first: its check for leftover rings runs after the modules stopped."""
    tag = uuid.uuid4().hex[:6]
    probe, train, out = f"probe_{tag}", f"train_{tag}", f"dec_{tag}"
    data = ["--data-dir", str(tmp_path)]
    _, mport = module_process("services.mockup_streamer")
    _, rport = module_process("services.recorder", *data)
    _, dport = module_process("services.decoder", *data)
    _, wport = module_process("services.stream_watcher")
    with client(mport) as mc, client(rport) as rc, client(dport) as dc, client(wport) as wc:
        # Calibration: an 8-channel stream of the same signal, recorded from its ring.
        mc.send("START", stream=train, **{**PROBE, "channels": 8}, period_s=2.0, seed=1)
        rc.send("START", file="calib.xdf", streams=[train, f"{train}_markers"])
        started = mc.send("START", stream=probe, **PROBE, period_s=2.0, seed=1)
        assert started["transport"] == "shm"
        assert started["lsl"]["mode"] == "full"

        # The same consumer code reads the ring (auto) and the LSL copy (lsl): same samples.
        with (
            StreamWatcher(probe, 2.0, background=True) as ring,
            StreamWatcher(probe, 2.0, background=True, transport="lsl") as lsl,
        ):
            ring.connect_to_stream()
            lsl.connect_to_stream()
            assert ring.wait_for_samples(ring.total + SR, 10)
            assert lsl.wait_for_samples(lsl.total + SR // 2, 10)
            x, t = ring.window(seconds=0.5, copy=True)
            y, u = lsl.window(seconds=0.5, copy=True)
            assert x.shape == (SR // 2, 384)
            assert x.dtype == np.int16
            j = np.minimum(np.searchsorted(u, t - 0.5 / SR), len(u) - 1)
            same = np.abs(u[j] - t) < 0.5 / SR  # rows with the same timestamp in both
            assert same.sum() > 1000
            assert np.array_equal(x[same], y[j[same]])
            st = ring.stats()
            assert (st["transport"], st["gaps"], st["lost_samples"]) == ("shm", 0, 0)
            assert abs(st["effective_srate"] - SR) < 30
            assert lsl.stats()["transport"] == "lsl"
            assert ring.pop_new()[0].shape[1] == 384

        watched = wc.send("WATCH", stream=probe)
        assert watched["transport"] == "shm"
        assert watched["nominal_srate"] == SR
        wait_for(lambda: wc.send("STATS", stream=probe)["samples"] >= 300, "the service's data")
        win = wc.send("GET_WINDOW", stream=probe, seconds=0.01)
        assert win["n"] == 300
        assert len(win["data"][0]) == 384

        wait_for(lambda: recorded(rc, train, 12 * SR), "12 s of calibration data", timeout=40)
        calib = rc.send("STOP")
        tr = next(s for s in calib["streams"] if s["name"] == train)
        assert (tr["transport"], tr["gaps"], tr["lost_samples"]) == ("shm", 0, 0)
        mc.send("STOP", stream=train)
        fit = dc.send(
            "FIT", xdf=calib["file"], signal=train, window_s=0.5, channels=["ch1", "ch2", "ch3"]
        )
        assert fit["cv_accuracy"] > 0.8

        # Live: decode the 384-channel ring; record it with its markers and the decoder's output.
        rc.send("START", file="live.xdf", streams=[probe, f"{probe}_markers", out])
        run = dc.send("START", input=probe, output=out)
        assert run["transport"] == "shm"
        wait_for(lambda: recorded(rc, out, 100) and recorded(rc, probe, 6 * SR), "6 s live", 40)
        status = dc.send("STATUS")
        assert status["error"] is None
        assert status["predictions"] >= 100
        dc.send("STOP")
        live = rc.send("STOP")
        mc.send("STOP")
    by_name = {s["name"]: s for s in live["streams"]}
    p = by_name[probe]
    assert (p["transport"], p["gaps"], p["lost_samples"], live["error"]) == ("shm", 0, 0, None)
    assert not leftovers(shm_session)  # every ring was closed and unlinked by its writer

    streams, _ = pyxdf.load_xdf(live["file"], dejitter_timestamps=False)
    xs = {s["info"]["name"][0]: s for s in streams}
    sig = xs[probe]
    assert float(sig["info"]["nominal_srate"][0]) == SR
    assert sig["time_series"].shape == (p["samples"], 384)
    assert sig["time_series"].dtype == np.int16
    assert np.diff(sig["time_stamps"]).max() < 1.5 / SR  # zero gaps in the file itself
    # One time base: markers fall inside the ring's span and predictions line up with the states.
    mk, dec = xs[f"{probe}_markers"], xs[out]
    assert sig["time_stamps"][0] <= mk["time_stamps"][-1] <= sig["time_stamps"][-1]
    switches = mk["time_stamps"]
    states = [m[0] for m in mk["time_series"]]
    good = total = 0
    for ts, row in zip(dec["time_stamps"], dec["time_series"], strict=True):
        i = np.searchsorted(switches, ts) - 1
        if i < 0 or ts - switches[i] < 0.6:  # the window still holds the previous state
            continue
        total += 1
        good += (row[0] > 0.5) == (states[i] == "high")
    assert total > 50
    assert good / total > 0.8, (good, total)


def test_a_decimated_stream_is_read_from_its_ring_at_full_rate_on_the_lsl_clock(
    shm_session: str, lsl_name: str
) -> None:
    import pylsl

    with ShmWriter(lsl_name, 160, SR, "float64") as w:  # 38 MB/s: LSL carries it halved
        assert w.announcer.plan["factor"] == 2
        with StreamWatcher(lsl_name, 1.0, background=True) as sw:
            sw.connect_to_stream()
            assert sw.srate == SR
            assert sw.stats()["transport"] == "shm"
            assert "<nominal_srate>30000.0</nominal_srate>" in sw.stream.as_xml()
            before = pylsl.local_clock()
            w.push_chunk(np.ones((30, 160)))
            after = pylsl.local_clock()
            assert sw.wait_for_samples(30, 5)
            _, ts = sw.window(samples=30)
            assert before <= ts[-1] <= after  # stamped on liblsl's clock, with no pylsl involved
            assert np.allclose(np.diff(ts), 1 / SR)


def test_bad_input_is_reported_and_the_others_carry_on(
    shm_session: str, module_process, children, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    probe, torn = f"probe_{tag}", f"torn_{tag}"
    mproc, mport = module_process("services.mockup_streamer")
    _, mport2 = module_process("services.mockup_streamer")
    _, wport = module_process("services.stream_watcher")
    _, rport = module_process("services.recorder", "--data-dir", str(tmp_path))
    with client(mport) as mc, client(mport2) as mc2, client(wport) as wc, client(rport) as rc:
        mc.send("START", stream=probe, **{**PROBE, "channels": 64})
        wc.send("WATCH", stream=probe)
        rc.send("START", file="bad.xdf", streams=[probe])
        # A second source claiming the same name is refused, naming the owner.
        with pytest.raises(CommandFailed, match=r"already has a live shared-memory writer.*pid"):
            mc2.send("START", stream=probe, **{**PROBE, "channels": 64})
        # A ring too small for the rate asked.
        with pytest.raises(CommandFailed, match="too small for 30000 Hz"):
            mc2.send("START", stream=f"small_{tag}", **PROBE, capacity_s=0.01)
        # A consumer that dies holding a read position: the writer frees its slot and says so.
        reader = children("reader", "--name", probe, "--samples", "1000", "--hang")
        assert reader.line() == "ready"

        def holding() -> bool:
            readers = mc.send("STATUS")["streams"][probe]["readers"]
            return any(r["pid"] == reader.pid and r["position"] > 0 for r in readers)

        wait_for(holding, "the reader's position in the ring's reader table")
        reader.kill()
        events = wait_for(
            lambda: mc.send("STATUS")["streams"][probe]["reader_events"], "the dead reader's event"
        )
        assert events[0]["event"] == "reader_died"
        assert events[0]["pid"] == reader.pid
        # A source that dies in the middle of a chunk (a ring without LSL, watched by name).
        writer = children("writer", "--name", torn, "--chunks", "50", "--torn", "--hold")
        assert writer.line().startswith("ready")
        wc.send("WATCH", stream=torn, transport="shm")
        writer.send()
        assert writer.line() == "torn"
        problem = wait_for(
            lambda: wc.send("STATS", stream=torn).get("writer_problem"), "the torn writer noticed"
        )
        assert "in the middle of a write" in problem
        assert "500 samples before them" in problem
        vanished = wait_for(
            lambda: [e for e in wc.send("STATUS")["events"] if e["event"] == "vanished"],
            "the vanished event",
        )
        assert "middle of a write" in vanished[-1]["detail"]
        # Through all of it the first stream kept flowing, without a gap.
        st = wc.send("STATS", stream=probe)
        n0 = st["samples"]
        wait_for(lambda: wc.send("STATS", stream=probe)["samples"] > n0 + SR, "more samples")
        st = wc.send("STATS", stream=probe)
        assert (st["health"], st["gaps"], st["lost_samples"]) == ("ok", 0, 0)
        # The source itself is killed: the recorder keeps what it had and says what happened.
        os.killpg(mproc.pid, signal.SIGKILL)
        wait_for(lambda: rc.send("STATUS")["lost"] == [probe], "the recorder noticing", 10)
        rec = rc.send("STOP")["streams"][0]
        assert rec["transport"] == "shm"
        assert rec["samples"] > SR
        assert "vanished during the recording" in rec["note"]
        assert "died" in rec["writer_problem"]
    sweep_stale()  # the dead writers' rings (the watcher may have removed the torn one already)


def _pid_threads_affinity(pid: int) -> set[tuple[int, ...]]:
    return {tuple(sorted(os.sched_getaffinity(int(t)))) for t in os.listdir(f"/proc/{pid}/task")}


def test_control_room_applies_affinity_and_priority_and_sweeps_dead_rings(
    room_factory,
    shm_session: str,
) -> None:
    cpu = max(os.sched_getaffinity(0))
    room = room_factory(
        f"""
[modules.mock]
module = "services.mockup_streamer"
restart = "no"
cpu_affinity = [{cpu}]
nice = 5
sched = "batch"
"""
    )
    h = room.handle("mock")
    assert current_scheduling(h.pid) == {"cpu_affinity": [cpu], "nice": 5, "sched": "batch"}
    assert _pid_threads_affinity(h.pid) == {(cpu,)}  # every thread, not only the first
    assert h.info()["scheduling"] == f"cpu_affinity=[{cpu}], nice=5, sched=batch"
    name = f"ring_{uuid.uuid4().hex[:6]}"
    room.send("mock", "START", {"stream": name, **PROBE, "channels": 16, "srate": 1000})
    assert [r["name"] for r in list_rings()] == [name]
    os.killpg(h.pid, signal.SIGKILL)  # dies without closing its ring
    wait_for(lambda: not list_rings()[0]["writer_alive"], "the writer's death")
    assert leftovers(shm_session)
    room.down()
    assert not leftovers(shm_session)


def test_affinity_and_priority_the_os_refuses_are_refused_with_a_reason(
    room_factory,
) -> None:
    with pytest.raises(StartError, match=r"CPU 4096 does not exist; this machine has CPUs 0-"):
        room_factory('[modules.mock]\nmodule = "services.mockup_streamer"\ncpu_affinity = [4096]\n')
    # Real-time priority without the right to it: the control room says what the OS wants.
    script = textwrap.dedent(
        """
        from control_room.config import parse_config
        from control_room.handle import ModuleHandle, StartError
        cfg = parse_config('[modules.m]\\nmodule = "x"\\nsched = "fifo:50"\\n')
        try:
            ModuleHandle(cfg.modules["m"], lambda *a: None, {}).launch()
        except StartError as exc:
            print(exc)
        """
    )
    if os.geteuid() != 0 and _rt_allowed():
        pytest.skip("this user may use real-time priority: nothing to refuse")
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_without_sys_nice,
    )  # fmt: skip
    assert "cannot start with sched = 'fifo:50': the OS does not allow real-time" in out.stdout
    assert "RLIMIT_RTPRIO" in out.stdout, out.stderr[-2000:]


def _without_sys_nice() -> None:
    """In the child: as root, give up CAP_SYS_NICE for good (what an ordinary user, or a container
    without SYS_NICE, has); as anyone else there is nothing to give up."""
    if os.geteuid() == 0:
        import ctypes

        pr_capbset_drop, cap_sys_nice = 24, 23
        if ctypes.CDLL(None, use_errno=True).prctl(pr_capbset_drop, cap_sys_nice, 0, 0, 0):
            os._exit(3)


def _rt_allowed() -> bool:
    import resource

    return resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 50


def test_config_checks_affinity_and_priority_keys() -> None:
    bad = """
[modules.a]
module = "services.mockup_streamer"
cpu_affinity = ["x"]
nice = 30
sched = "fifo:500"

[modules.b]
attach = true
port = 8101
nice = 1
"""
    with pytest.raises(ConfigError) as err:
        parse_config(bad)
    text = str(err.value)
    assert "modules.a.cpu_affinity: must be a non-empty list of CPU numbers" in text
    assert "modules.a.nice: must be -20..19" in text
    assert "modules.a.sched: fifo needs a priority 1-99" in text
    assert "modules.b.nice: only for modules the control room starts" in text
    ok = parse_config('[modules.a]\nmodule = "m"\ncpu_affinity = [0]\nnice = -2\nsched = "rr:10"\n')
    spec = ok.modules["a"]
    assert (spec.cpu_affinity, spec.nice, spec.sched) == ([0], -2, "rr:10")
