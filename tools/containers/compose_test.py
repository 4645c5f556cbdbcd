"""End-to-end check of compose.yaml on a real engine (= make compose-test).

    python tools/containers/compose_test.py [--engine auto|podman|docker] [--base auto|local|IMAGE]
                                            [--keep-image] [--netns NAME]

1. sets up the engine (tools/containers/engine.py: podman + podman-compose, or dockerd);
2. builds the image: on the public base if it is here or can be pulled, else on a local Debian
   base made with debootstrap (tools/containers/base.py; kept for the next run);
3. ``compose up -d --wait`` (the README's command), then runs every service's healthcheck until
   all pass (podman runs healthchecks only under systemd, so they are run here explicitly);
4. waits for the control room to report every module ready, then runs the README's
   ``exec control-room control-room macro experiment`` with short block lengths (~26 s);
5. reads the XDF from the data folder with pyxdf and checks streams and samples;
6. ``compose stop`` (< 10 s; every service must exit 0 on SIGTERM) and ``down``, then removes
   what it created: containers, networks, the image (unless --keep-image) and the
   temporary data folder; stops a dockerd that it started.
Prints timings and ends with one JSON line. Exit 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import base as bases
import build as builds
import engine as engines
import stack as stacks

PROJECT = "closedloop-mesh-test"
TEST_TAG = "localhost/closedloop-mesh:compose-test"
PORTS = [8101, 8102, 8103, 8104, 8105, 8106, 9010, 9020, 9021]
# The default experiment macro with short blocks: same steps, ~25 s instead of 2 min. 18 s of
# calibration is the least that gives the decoder's FIT two 4-s segments of each class.
MACRO_ARGS = {"calibration_s": 18, "online_s": 5}
EXPECTED_STREAMS = {  # stream -> minimum samples in the file
    "mock_eeg": 250 * 20,
    "mock_eeg_markers": 2,
    "control_room_commands": 5,
    "presenter_markers": 1,
    "decoder_output": 10,
    "bpod_events": 1,
}
STOP_LIMIT_S = 10.0  # every container ended (compose down = this stop, then removal)

_PORT_PROBE = """
import socket, sys
busy = []
for p in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the modules do: TIME_WAIT is fine
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        busy.append(p)
    finally:
        s.close()
print(" ".join(map(str, busy)))
"""


def ports_in_use(netns: str | None) -> list[int]:
    out = subprocess.run(
        [*engines.netns_prefix(netns), sys.executable, "-c", _PORT_PROBE, *map(str, PORTS)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(p) for p in out.split()]


def choose_base(eng: engines.Engine, wanted: str) -> str:
    """``auto``: the public base if it is here or can be pulled within a minute, else local."""
    if wanted != "auto":
        return bases.build_base(eng) if wanted == "local" else wanted
    public = builds.dockerfile_default_base()
    if eng.image_exists(public):
        return public
    engines.say(f"trying to pull {public}")
    try:
        pulled = eng.run("pull", "-q", public, timeout=90).returncode == 0
    except subprocess.TimeoutExpired:
        pulled = False
    if pulled:
        return public
    engines.say("no container registry reachable: using the local Debian base (debootstrap)")
    return bases.build_base(eng)


def check_xdf(data_dir: Path) -> dict[str, int]:
    """Samples per stream of the one XDF in ``data_dir``; raises if a stream is missing or thin."""
    import pyxdf

    files = sorted(data_dir.glob("*.xdf"))
    if len(files) != 1:
        raise AssertionError(f"expected one XDF in {data_dir}, found {[f.name for f in files]}")
    streams, _header = pyxdf.load_xdf(
        str(files[0]), synchronize_clocks=False, dejitter_timestamps=False
    )
    counts = {s["info"]["name"][0]: len(s["time_stamps"]) for s in streams}
    short = {
        name: f"{counts.get(name, 'missing')} < {need}"
        for name, need in EXPECTED_STREAMS.items()
        if counts.get(name, 0) < need
    }
    if short:
        raise AssertionError(f"{files[0].name}: streams missing or short: {short}; all: {counts}")
    engines.say(
        f"{files[0].name} ({files[0].stat().st_size // 1024} KiB) read with pyxdf: {counts}"
    )
    return counts


def wait_control_room(st: stacks.Stack, timeout: float = 120) -> dict:
    """Poll ``control-room status --json`` in its container until every module is ready."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        p = st.exec(stacks.CONTROL_ROOM, "control-room", "status", "--json", timeout=30)
        if p.returncode == 0:
            status = json.loads(p.stdout)
            states = {n: m["state"] for n, m in status["modules"].items()}
            if states and all(s == "ready" for s in states.values()):  # {}: not started yet
                return status
            last = str(states)
        else:
            last = (p.stdout + p.stderr).strip()[-300:]
        time.sleep(1.0)
    raise engines.EngineError(f"control room not ready within {timeout:.0f} s: {last}")


def run(args: argparse.Namespace) -> dict:
    t_all = time.monotonic()
    eng = engines.setup(args.engine)
    if args.netns and eng.name != "podman":
        raise engines.EngineError(
            "NETNS works with podman only: dockerd starts host-network containers in its own "
            "network namespace"
        )
    try:
        return _run(eng, args, t_all)
    finally:
        if eng.started_daemon:
            engines.say("stopping the dockerd this run started")
            engines.stop_our_dockerd()


def _run(eng: engines.Engine, args: argparse.Namespace, t_all: float) -> dict:
    busy = ports_in_use(args.netns)
    if busy:
        raise engines.EngineError(
            f"ports {busy} are in use (a `make run` or another mesh?); stop it first, or run the "
            "check in a network namespace: make compose-test NETNS=name"
        )
    base = choose_base(eng, args.base)
    timings: dict[str, float] = {"image_build": round(builds.build_image(eng, base, TEST_TAG), 1)}
    work = Path(tempfile.mkdtemp(prefix="closedloop-compose-"))
    (work / "data").mkdir()
    (work / "logs").mkdir()
    env = {
        "MESH_IMAGE": TEST_TAG,
        "BASE_IMAGE": base,
        "MESH_DATA_DIR": str(work / "data"),
        "MESH_LOG_DIR": str(work / "logs"),
    }
    eng.in_netns(args.netns)  # after the build: that needs the network
    st = stacks.Stack(eng, PROJECT, env)
    result: dict = {"engine": eng.name, "base": base}
    try:
        engines.say(f"{' '.join(eng.compose)} up -d --wait   (data: {work / 'data'})")
        st.timed("up", "up", "-d", "--wait")
        engines.say("healthchecks (python -m shared_utils.health PORT in each container):")
        t0 = time.monotonic()
        result["healthy_after_s"] = st.wait_healthy([*stacks.MODULES, stacks.CONTROL_ROOM])
        wait_control_room(st)
        timings["up_to_ready"] = round(time.monotonic() - t0 + st.timings["up"], 1)
        engines.say(f"control room ready; macro experiment {json.dumps(MACRO_ARGS)}")
        t0 = time.monotonic()
        p = st.exec(
            stacks.CONTROL_ROOM,
            *("control-room", "macro", "experiment", json.dumps(MACRO_ARGS)),
            timeout=300,
        )
        timings["macro"] = round(time.monotonic() - t0, 1)
        print(p.stdout.rstrip())
        if p.returncode != 0:
            raise engines.EngineError(f"macro failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        result["streams"] = check_xdf(work / "data")
        # `down` = stop + remove; stopping first shows how each service took SIGTERM.
        engines.say(f"{' '.join(eng.compose)} stop, then down")
        t_stop = time.time()
        st.timed("stop", "stop")
        ended = st.stopped(t_stop)
        st.timed("down", "down")
        timings.update(up=st.timings["up"], stop=st.timings["stop"], down=st.timings["down"])
        engines.say(
            f"stopped in {st.timings['stop']} s (exit code, s after stop began: {ended}); "
            f"removed in {st.timings['down']} s"
        )
        unclean = {svc: code for svc, (code, _) in ended.items() if code != 0}
        if unclean:
            raise engines.EngineError(f"services that did not exit 0 on SIGTERM: {unclean}")
        if timings["stop"] >= STOP_LIMIT_S:
            raise engines.EngineError(f"stop took {timings['stop']} s (limit {STOP_LIMIT_S} s)")
        left = st.containers()
        if left:
            raise engines.EngineError(f"containers left after down: {left}")
    except Exception:
        for svc in [stacks.CONTROL_ROOM, *stacks.MODULES]:
            print(f"--- last log lines of {svc}:\n{st.logs(svc)}", file=sys.stderr)
        raise
    finally:
        st.compose("down", "-t", "3", check=False, timeout=120)
        gone = st.remove_leftovers()
        if gone:
            engines.say(f"removed leftovers: {gone}")
        if not args.keep_image:
            eng.run("rmi", "-f", TEST_TAG)
        shutil.rmtree(work, ignore_errors=True)
    timings["total"] = round(time.monotonic() - t_all, 1)
    result["timings_s"] = timings
    return result


def main(argv: list[str] | None = None) -> int:
    p = engines.arg_parser(__doc__)
    p.add_argument("--base", default="auto", help="auto (default), local, or an image reference")
    p.add_argument("--keep-image", action="store_true", help=f"keep {TEST_TAG} afterwards")
    p.add_argument("--netns", help="run the stack inside this network namespace (ip netns)")
    args = p.parse_args(argv)
    try:
        result = run(args)
    except (engines.EngineError, AssertionError, subprocess.SubprocessError) as exc:
        print(f"compose-test FAILED: {exc}", file=sys.stderr)
        return 1
    t = result["timings_s"]
    engines.say(
        f"compose-test passed on {result['engine']}: build {t['image_build']} s, up {t['up']} s "
        f"(all healthy and attached after {t['up_to_ready']} s), macro {t['macro']} s, "
        f"stop {t['stop']} s + remove {t['down']} s, total {t['total']} s"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
