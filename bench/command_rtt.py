"""Command round trip: our DefaultServer against dareplane-utils' DefaultServer, same run.

Each server runs in its own process (ours through ``run_module`` as every service does, logging at
WARNING; theirs as a Dareplane ``api/server.py`` would). Clients are raw sockets in other
processes, so client overhead is the same for both.

1. One client, request/response in a loop: ``UP`` (ours: ``UP\\n`` -> JSON line; theirs:
   ``UP;`` -> ``1``), a command with a JSON reply (``ECHO|{...}`` -> JSON line; Dareplane never
   replies to commands, so for both we also time ``ECHO|{...}`` followed by ``UP`` until UP's reply).
2. Eight clients connected at once, each sending ``UP`` in a loop for a fixed time: how many were
   answered and the total rate. Dareplane serves one connection at a time.
3. Our ``UP`` p99 for one client while a second client runs a command that takes 1 s, against the
   same measurement without it.

Latencies (1, 3) are measured with both servers and the client on one CPU (``--pin``, default 0;
-1: no pinning). On this 2-vCPU VM a wake-up on the other CPU costs up to ~100 us, so where the
scheduler happens to put a client and a server swings single-client round trips between ~10 and
~100 us for both servers alike; on one CPU the figures are stable and compare the software.
Rates (2) are measured as in the issue, on every CPU with the OS placing the processes (three
alternating rounds, medians; Dareplane's single-client rate varies most, with placement), and
again all on one CPU for reference (``rates_on_one_cpu``: there eight client processes cost
more context switches per request than one, whatever the server). The server's CPU time per
request is reported with both. The servers run in the clients' session: with the kernel's
autogroup scheduling a server in a session of its own would get half of the CPU against all
clients together, whatever their number.

Targets (issue 2): (1) our UP p50 <= 1.5x Dareplane's and our UP p99 <= 0.1 ms; (2) all 8 answered
and total rate >= Dareplane's single-client rate; (3) the slow command does not move our UP p99
(within 1.5x of the baseline p99, or within 0.02 ms of it). Ends with one JSON line.

    .venv/bin/python bench/command_rtt.py [--n 20000] [--seconds 1] [--pin 0]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from typing import Any

from _common import ROOT, proc_cpu_s

P99_TARGET_MS = 0.1
P50_RATIO_TARGET = 1.5


# -- servers (run as separate processes: --serve ours|dareplane --port P) ---------------------
def serve_ours(port: int) -> None:
    from shared_utils.module_cli import run_module

    def echo(**kwargs: Any) -> dict:
        """Return the arguments."""
        return kwargs

    def slow(seconds: float = 1.0) -> str:
        """Take ``seconds`` to answer."""
        time.sleep(seconds)
        return "done"

    run_module(
        "bench_ours",
        {"ECHO": echo, "SLOW": slow},
        port=port,
        log_level="WARNING",
        log_server="none",
    )


def serve_dareplane(port: int) -> None:
    import logging

    from dareplane_utils.default_server.server import DefaultServer

    def echo(**kwargs: Any) -> int:
        return 0

    logging.disable(logging.INFO)  # their server logs every non-UP command at INFO
    srv = DefaultServer(port=port, ip="127.0.0.1", name="bench_dp", pcommand_map={"ECHO": echo})
    srv.init_server()
    srv.start_listening()


def start_server(kind: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Same session as the clients: with the kernel's autogroup scheduling a server in its
        # own session gets half of a contended CPU and its clients (all in this session) the
        # other half, whatever their number, which would measure the grouping, not the server.
        env={**os.environ, "MESH_LOG_SERVER": "none"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# -- clients ----------------------------------------------------------------------------------
class Client:
    """A raw connection that knows how one request is answered on each server."""

    def __init__(self, port: int, kind: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.kind = kind
        self.buf = b""
        if kind == "dareplane":  # their banner arrives first
            self._until(lambda b: b.find(b"\n") + 1)
        self.sock.settimeout(None)  # plain blocking reads: no extra poll() per request

    def _until(self, complete: Any) -> bytes:
        """Receive until ``complete(buf)`` returns the reply length (> 0); return the reply."""
        buf = self.buf
        while True:
            n = complete(buf)
            if n > 0:
                self.buf = buf[n:]
                return buf[:n]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk

    def request(self, data: bytes, replies: int = 1) -> bytes:
        sock = self.sock
        sock.sendall(data)
        if not self.buf:  # the usual case, kept equally cheap for both servers
            buf = sock.recv(65536)
            if self.kind == "ours":
                if buf.endswith(b"\n") and buf.count(b"\n") == replies:
                    return buf
            elif buf == b"1":
                return buf
            self.buf = buf
        if self.kind == "ours":
            return self._until(lambda b: _nth_newline(b, replies))
        return self._until(lambda b: 1 if b[:1] == b"1" else 0)

    def close(self) -> None:
        self.sock.close()


def _nth_newline(buf: bytes, n: int) -> int:
    i = -1
    for _ in range(n):
        i = buf.find(b"\n", i + 1)
        if i < 0:
            return 0
    return i + 1


def time_requests(
    client: Client, data: bytes, n: int, replies: int = 1, warmup: int = 2000
) -> list[float]:
    """Round-trip times in ms of ``n`` sequential requests (after a warm-up)."""
    for _ in range(min(warmup, n)):
        client.request(data, replies)
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        client.request(data, replies)
        out.append((clock() - t0) / 1e6)
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(values, 50), 4),
        "p99_ms": round(pct(values, 99), 4),
        "mean_ms": round(sum(values) / len(values), 4),
        "n": len(values),
    }


def _loop_client(port: int, kind: str, seconds: float, start: Any, results: Any, idx: int) -> None:
    """One of the concurrent clients: UP in a loop for ``seconds``; report how many answered."""
    try:
        c = Client(port, kind, timeout=seconds + 5) if kind == "ours" else None
        if kind == "dareplane":  # the banner only comes when the server gets to this connection
            c = Client.__new__(Client)
            c.sock = socket.create_connection(("127.0.0.1", port), timeout=seconds + 5)
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.kind, c.buf = kind, b""
    except OSError:
        results.put((idx, 0))
        start.wait()
        return
    data = b"UP\n" if kind == "ours" else b"UP;"
    start.wait()
    count = 0
    end = time.monotonic() + seconds
    if kind == "dareplane":  # most of them are never served: give up when the time is over
        c.sock.settimeout(max(0.05, seconds))
    try:
        if kind == "dareplane":
            c._until(lambda b: b.find(b"\n") + 1)  # banner: this connection is being served
        while time.monotonic() < end:
            c.request(data)
            count += 1
    except (TimeoutError, OSError):
        pass
    results.put((idx, count))
    c.close()


def concurrent_clients(port: int, kind: str, clients: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    start = ctx.Event()
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_loop_client, args=(port, kind, seconds, start, results, i))
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    time.sleep(0.3)  # let every client connect before the clock starts
    start.set()
    counts = dict(results.get(timeout=seconds + 30) for _ in procs)
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
    answered = sum(1 for v in counts.values() if v > 0)
    total = sum(counts.values())
    return {
        "clients": clients,
        "answered": answered,
        "total_rate_per_s": round(total / seconds),
        "per_client": [counts[i] for i in range(clients)],
    }


def single_rate(port: int, kind: str, seconds: float) -> float:
    c = Client(port, kind)
    data = b"UP\n" if kind == "ours" else b"UP;"
    for _ in range(1000):
        c.request(data)
    count = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        c.request(data)
        count += 1
    c.close()
    return count / seconds


def time_for(client: Client, data: bytes, seconds: float) -> list[float]:
    """Round-trip times in ms of sequential requests sent for ``seconds``."""
    out = []
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    while (t0 := clock()) < end:
        client.request(data)
        out.append((clock() - t0) / 1e6)
    return out


def slow_command_effect(port: int, rounds: int) -> dict[str, Any]:
    """Our UP p99 while another connection runs a 1 s command, and right after it, alternating.

    Each round: another connection sends SLOW (1 s); UP is timed for 0.8 s while SLOW runs, then
    for 0.8 s after SLOW has replied. Equal time in both states, so machine noise hits both.
    """
    probe = Client(port, "ours")
    time_requests(probe, b"UP\n", 2000)
    base: list[float] = []
    during: list[float] = []
    busy = True
    for _ in range(rounds):
        slow = Client(port, "ours", timeout=30)
        t_sent = time.monotonic()
        slow.sock.sendall(b'SLOW|{"seconds": 1.0}\n')
        time.sleep(0.05)  # SLOW is running now
        during += time_for(probe, b"UP\n", 0.8)
        busy = busy and time.monotonic() - t_sent < 1.0  # the block ended before SLOW did
        slow.request(b"")  # wait for SLOW's reply
        slow.close()
        base += time_for(probe, b"UP\n", 0.8)
    probe.close()
    return {"baseline": summary(base), "during_slow": summary(during), "slow_busy": busy}


def interleaved_latency(ours: int, dp: int, n: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Alternate blocks between the two servers so both see the same machine load."""
    o, d = Client(ours, "ours"), Client(dp, "dareplane")
    echo_ours = b'ECHO|{"trial": 12, "note": "a;b"}\n'
    echo_dp = b'ECHO|{"trial": 12};UP;'
    keys = ("ours_up", "dp_up", "ours_echo", "ours_echo_up", "dp_echo_up")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for c, data in ((o, b"UP\n"), (d, b"UP;"), (o, echo_ours)):
        time_requests(c, data, 2000)
    k = n // rounds
    for _ in range(rounds):
        samples["ours_up"] += time_requests(o, b"UP\n", k, warmup=0)
        samples["dp_up"] += time_requests(d, b"UP;", k, warmup=0)
        samples["ours_echo"] += time_requests(o, echo_ours, k, warmup=0)
        samples["ours_echo_up"] += time_requests(o, echo_ours + b"UP\n", k, 2, warmup=0)
        samples["dp_echo_up"] += time_requests(d, echo_dp, k, warmup=0)
    o.close()
    d.close()
    return {
        "ours": {
            "up": summary(samples["ours_up"]),
            "echo": summary(samples["ours_echo"]),
            "echo_then_up": summary(samples["ours_echo_up"]),
        },
        "dareplane": {
            "up": summary(samples["dp_up"]),
            "echo_then_up": summary(samples["dp_echo_up"]),
        },
    }


def set_affinity(pids: list[int], cpus: set[int]) -> None:
    """Pin every thread of these processes (threads started later inherit it)."""
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass  # the thread ended meanwhile


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def rates(
    ours: subprocess.Popen, ours_port: int, dp: subprocess.Popen, dp_port: int, seconds: float
) -> dict[str, Any]:
    """Our 8-client total rate and both single-client rates, three alternating rounds."""
    rate8: list[int] = []
    dp_single: list[float] = []
    ours_single: list[float] = []
    cpu_ours8: list[float] = []
    cpu_dp1: list[float] = []
    for _ in range(3):  # alternate, then take medians: the machine's load varies
        t0 = proc_cpu_s(ours.pid)
        c8 = concurrent_clients(ours_port, "ours", 8, seconds)
        cpu_ours8.append((proc_cpu_s(ours.pid) - t0) / (c8["total_rate_per_s"] * seconds))
        rate8.append(c8["total_rate_per_s"])
        t0 = proc_cpu_s(dp.pid)
        dp_single.append(single_rate(dp_port, "dareplane", seconds))
        cpu_dp1.append((proc_cpu_s(dp.pid) - t0) / (dp_single[-1] * seconds))
        ours_single.append(single_rate(ours_port, "ours", seconds))
    c8["total_rate_per_s"] = round(median(rate8))
    c8["rounds_total_rate_per_s"] = rate8
    c8["server_cpu_us_per_request"] = round(median(cpu_ours8) * 1e6, 2)
    return {
        "ours_concurrent": c8,
        "ours_single_rate_per_s": round(median(ours_single)),
        "dareplane_single_rate_per_s": round(median(dp_single)),
        "dareplane_single_rounds": [round(r) for r in dp_single],
        "dareplane_single_server_cpu_us_per_request": round(median(cpu_dp1) * 1e6, 2),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"bench": "command_rtt", "n": args.n, "rounds": args.rounds}
    res["machine"] = {"cpus": os.cpu_count(), "loadavg_1min_start": round(os.getloadavg()[0], 2)}
    ours_proc, ours_port = start_server("ours")
    dp_proc, dp_port = start_server("dareplane")
    pids = [os.getpid(), ours_proc.pid, dp_proc.pid]
    pin = args.pin >= 0 and hasattr(os, "sched_setaffinity")
    res["machine"]["latency_pinned_cpu"] = args.pin if pin else None
    every_cpu = set(range(os.cpu_count() or 1))
    try:
        if pin:  # servers and clients (forked later, they inherit it) on one CPU
            set_affinity(pids, {args.pin})
        lat = interleaved_latency(ours_port, dp_port, args.n, args.rounds)
        res["ours"], res["dareplane"] = lat["ours"], lat["dareplane"]
        res["ours"]["slow_command"] = slow_command_effect(ours_port, args.slow_rounds)
        one_cpu = rates(ours_proc, ours_port, dp_proc, dp_port, args.seconds) if pin else None
        if pin:
            set_affinity(pids, every_cpu)
        # The setting: two CPUs, the OS places every process.
        all_cpus = rates(ours_proc, ours_port, dp_proc, dp_port, args.seconds)
        res["ours"]["concurrent"] = all_cpus["ours_concurrent"]
        res["ours"]["single_rate_per_s"] = all_cpus["ours_single_rate_per_s"]
        res["dareplane"]["single_rate_per_s"] = all_cpus["dareplane_single_rate_per_s"]
        res["dareplane"]["single_rounds"] = all_cpus["dareplane_single_rounds"]
        res["dareplane"]["single_server_cpu_us_per_request"] = all_cpus[
            "dareplane_single_server_cpu_us_per_request"
        ]
        res["dareplane"]["concurrent"] = concurrent_clients(dp_port, "dareplane", 8, args.seconds)
        res["rates_on_one_cpu"] = one_cpu
    finally:
        stop_server(ours_proc)
        stop_server(dp_proc)
    res["machine"]["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    return res


def judge(res: dict[str, Any]) -> None:
    ours, dp = res["ours"], res["dareplane"]
    slow = ours["slow_command"]
    base99, during99 = slow["baseline"]["p99_ms"], slow["during_slow"]["p99_ms"]
    res["ratios"] = {
        "up_p50_ours_over_dareplane": round(ours["up"]["p50_ms"] / dp["up"]["p50_ms"], 3),
        "up_p99_ours_over_dareplane": round(ours["up"]["p99_ms"] / dp["up"]["p99_ms"], 3),
        "echo_then_up_p50_ours_over_dareplane": round(
            ours["echo_then_up"]["p50_ms"] / dp["echo_then_up"]["p50_ms"], 3
        ),
        "concurrent8_rate_over_dareplane_single": round(
            ours["concurrent"]["total_rate_per_s"] / dp["single_rate_per_s"], 3
        ),
        "slow_p99_during_over_baseline": round(during99 / base99, 3),
    }
    one = res.get("rates_on_one_cpu")
    if one:
        res["ratios"]["one_cpu_concurrent8_rate_over_dareplane_single"] = round(
            one["ours_concurrent"]["total_rate_per_s"] / one["dareplane_single_rate_per_s"], 3
        )
    res["targets"] = {
        "up_p50_within_1.5x": ours["up"]["p50_ms"] <= P50_RATIO_TARGET * dp["up"]["p50_ms"],
        "up_p99_le_0.1ms": ours["up"]["p99_ms"] <= P99_TARGET_MS,
        "all_8_answered": ours["concurrent"]["answered"] == 8,
        "rate8_ge_dareplane_single": ours["concurrent"]["total_rate_per_s"]
        >= dp["single_rate_per_s"],
        "slow_command_does_not_move_up_p99": slow["slow_busy"]
        and (during99 <= 1.5 * base99 or during99 - base99 <= 0.02),
    }
    res["targets_met"] = all(res["targets"].values())


def report(res: dict[str, Any]) -> None:
    ours, dp = res["ours"], res["dareplane"]

    def row(name: str, o: dict, d: dict | None) -> None:
        dp_txt = f"{d['p50_ms']:.4f} / {d['p99_ms']:.4f}" if d else "(never replies)"
        print(f"{name:<24}{o['p50_ms']:.4f} / {o['p99_ms']:.4f}     {dp_txt}")

    print(f"{'round trip, ms':<24}{'ours p50 / p99':<21}dareplane p50 / p99")
    row("UP", ours["up"], dp["up"])
    row("ECHO (JSON reply)", ours["echo"], None)
    row("ECHO then UP", ours["echo_then_up"], dp["echo_then_up"])
    oc, dc = ours["concurrent"], dp["concurrent"]
    print(
        f"one client, UP/s         ours {ours['single_rate_per_s']}, "
        f"dareplane {dp['single_rate_per_s']}"
    )
    print(
        f"8 clients at once        ours: {oc['answered']}/8 answered, {oc['total_rate_per_s']}/s;"
        f" dareplane: {dc['answered']}/8 answered, {dc['total_rate_per_s']}/s "
        f"(per client {dc['per_client']})"
    )
    print(
        f"server CPU per UP         ours (8 clients) {oc['server_cpu_us_per_request']} us, "
        f"dareplane (1 client) {dp['single_server_cpu_us_per_request']} us"
    )
    one = res.get("rates_on_one_cpu")
    if one:
        print(
            f"all on one CPU            ours 8 clients {one['ours_concurrent']['total_rate_per_s']}/s"
            f", dareplane 1 client {one['dareplane_single_rate_per_s']}/s, server CPU per UP "
            f"{one['ours_concurrent']['server_cpu_us_per_request']} vs "
            f"{one['dareplane_single_server_cpu_us_per_request']} us"
        )
    slow = ours["slow_command"]
    print(
        f"UP p99 while another connection runs a 1 s command: "
        f"{slow['during_slow']['p99_ms']:.4f} ms (alone {slow['baseline']['p99_ms']:.4f} ms)"
    )
    for k, v in res["ratios"].items():
        print(f"ratio  {k}: {v}")
    for k, v in res["targets"].items():
        print(f"target {k}: {'met' if v else 'MISSED'}")
    print(json.dumps(res))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="requests per latency measurement")
    ap.add_argument("--seconds", type=float, default=1.0, help="duration of one rate measurement")
    ap.add_argument("--rounds", type=int, default=10, help="alternating blocks per measurement")
    ap.add_argument("--pin", type=int, default=0, help="CPU for servers and clients; -1: none")
    ap.add_argument("--slow-rounds", type=int, default=5, help="1 s commands for target 3")
    ap.add_argument("--serve", choices=["ours", "dareplane"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve == "ours":
        serve_ours(args.port)
        return 0
    if args.serve == "dareplane":
        serve_dareplane(args.port)
        return 0
    res = measure(args)
    judge(res)
    report(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
