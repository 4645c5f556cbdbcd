"""Central logging over real TCP: our logger -> our receiver, outages, drops, bad input, processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Collector

from shared_utils import logging as mesh_logging
from shared_utils.log_receiver import LogReceiver
from shared_utils.logging import (
    configure_logging,
    encode_frame,
    get_logger,
    parse_log_server,
    shutdown_logging,
    wire_record,
)

ROOT = Path(__file__).resolve().parent.parent
early_log = get_logger("tests.early")  # obtained before any configure_logging, like module code


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def receiver(collector: Collector, tmp_path: Path) -> Iterator[LogReceiver]:
    rcv = LogReceiver(port=0, log_dir=tmp_path, on_record=collector).start()
    yield rcv
    rcv.close()


@pytest.fixture
def configured() -> Iterator[Callable[..., None]]:
    """configure_logging for this test only; always undone at teardown."""

    def configure(port: int, **kw: object) -> None:
        configure_logging(
            "testmod", level="DEBUG", log_server=f"127.0.0.1:{port}", console=False, **kw
        )

    yield configure
    shutdown_logging(timeout=0.5)


def _n_events(prefix: str) -> Callable[[list[dict]], int]:
    return lambda recs: sum(1 for r in recs if str(r["event"]).startswith(prefix))


def test_record_fields_reach_receiver_and_file(
    receiver: LogReceiver, collector: Collector, configured
) -> None:
    """A structlog record arrives with module, logger, level, event, key-values and wall time."""
    configured(receiver.port)
    before = time.time()
    get_logger("testmod.core").info("trial started", trial=3, label="go left")
    (rec,) = collector.wait_for(lambda r: len(r) >= 1)
    assert rec["module"] == "testmod"
    assert rec["logger"] == "testmod.core"
    assert (rec["level"], rec["levelno"]) == ("info", 20)
    assert rec["event"] == "trial started"
    assert rec["kv"] == {"trial": 3, "label": "go left"}
    assert before - 1 <= rec["created"] <= time.time() + 1
    assert rec["time"].startswith(time.strftime("%Y-%m-%d", time.gmtime(rec["created"])))
    lines = receiver.path.read_text().splitlines()
    assert json.loads(lines[0])["event"] == "trial started"


def test_logger_obtained_at_import_follows_later_configuration(
    receiver, collector, configured
) -> None:
    """A module-level get_logger() made before configure_logging still reaches the receiver."""
    configured(receiver.port)
    early_log.warning("from a module-level logger")
    (rec,) = collector.wait_for(lambda r: len(r) >= 1)
    assert (rec["event"], rec["logger"], rec["level"]) == (
        "from a module-level logger",
        "tests.early",
        "warning",
    )


def test_exception_traceback_is_formatted(receiver, collector, configured) -> None:
    """log.exception ships the formatted traceback text, not a repr of exc_info."""
    configured(receiver.port)
    log = get_logger("testmod.core")

    def divide() -> float:
        return 1 / 0

    try:
        divide()
    except ZeroDivisionError:
        log.exception("decoder crashed", step=7)
    (rec,) = collector.wait_for(lambda r: len(r) >= 1)
    assert rec["level"] == "error"
    assert rec["kv"] == {"step": 7}
    assert rec["exc_text"].startswith("Traceback (most recent call last):")
    assert "in divide" in rec["exc_text"]
    assert rec["exc_text"].endswith("ZeroDivisionError: division by zero")


def test_stdlib_logging_flows_through(receiver, collector, configured) -> None:
    """Records from plain ``logging`` loggers (libraries) reach the receiver formatted."""
    configured(receiver.port)
    lib = logging.getLogger("some.library")
    lib.info("opened %s at %d Hz", "amp", 500)
    try:
        {}["missing"]
    except KeyError:
        lib.exception("lookup failed")
    recs = collector.wait_for(lambda r: len(r) >= 2)
    assert (recs[0]["event"], recs[0]["logger"], recs[0]["module"]) == (
        "opened amp at 500 Hz",
        "some.library",
        "testmod",
    )
    assert recs[1]["exc_text"].endswith("KeyError: 'missing'")


def test_records_logged_while_receiver_down_arrive_on_reconnect(
    free_port, configured, tmp_path
) -> None:
    """Records queued while nothing listens are delivered, in order, once the receiver starts."""
    port = free_port()
    configured(port)
    log = get_logger("testmod.core")
    for i in range(30):
        log.info("queued", i=i)
    shipper = mesh_logging.shipper()
    assert shipper is not None
    deadline = time.monotonic() + 10
    while shipper.connect_failures == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # wait until the sender has really found nobody listening
    assert shipper.connect_failures > 0
    assert not shipper.connected
    col = Collector()
    with LogReceiver(port=port, log_dir=tmp_path, on_record=col):
        recs = col.wait_for(lambda r: _n_events("queued")(r) >= 30)
    assert [r["kv"]["i"] for r in recs if r["event"] == "queued"] == list(range(30))
    assert shipper.dropped == 0


def test_receiver_restart_loses_nothing_logged_while_it_was_gone(free_port, configured) -> None:
    """Records logged after the receiver closed go to its successor, not into the dead socket."""
    port = free_port()
    configured(port)
    log = get_logger("testmod.core")
    first = Collector()
    with LogReceiver(port=port, on_record=first):
        log.info("before restart")
        first.wait_for(lambda r: len(r) >= 1)
    log.info("while down")  # the old connection is closed now
    second = Collector()
    with LogReceiver(port=port, on_record=second):
        log.info("after restart")
        recs = second.wait_for(lambda r: len(r) >= 2)
    assert [r["event"] for r in recs] == ["while down", "after restart"]


def test_queue_overflow_is_counted_and_reported(free_port, configured) -> None:
    """With a tiny queue and no receiver, drops are counted and a record reports how many."""
    port = free_port()
    configured(port, queue_size=10)
    log = get_logger("testmod.core")
    for i in range(100):
        log.info("burst", i=i)
    shipper = mesh_logging.shipper()
    assert shipper is not None
    assert shipper.dropped >= 80
    col = Collector()
    with LogReceiver(port=port, on_record=col):
        recs = col.wait_for(lambda r: bool(col.events("log records dropped")))
        recs = col.wait_for(lambda r: _n_events("burst")(r) + shipper.dropped >= 100)
    (report,) = col.events("log records dropped")
    assert report["level"] == "warning"
    assert report["kv"]["dropped"] == shipper.dropped == report["kv"]["dropped_total"]
    received = [r["kv"]["i"] for r in recs if r["event"] == "burst"]
    assert len(received) + shipper.dropped == 100
    assert received == sorted(received)


def test_logging_never_blocks_on_a_receiver_that_stops_reading(configured) -> None:
    """A receiver that accepts but never reads cannot stall the caller; overflow is counted."""
    black_hole = socket.create_server(("127.0.0.1", 0))  # accepts via backlog, never reads
    try:
        configured(black_hole.getsockname()[1], queue_size=100)
        log = get_logger("testmod.core")
        payload = "x" * 2000
        worst = 0.0
        for i in range(5000):  # ~10 MB: far beyond the socket buffers
            t = time.perf_counter()
            log.info("fill", i=i, payload=payload)
            worst = max(worst, time.perf_counter() - t)
        assert worst < 1.0  # a blocked sendall would take the 5 s send timeout
        assert mesh_logging.shipper().dropped > 0
    finally:
        black_hole.close()


def test_oversized_record_is_truncated_not_lost(receiver, collector, configured) -> None:
    """A record bigger than the frame limit arrives shortened, marked as truncated."""
    configured(receiver.port)
    get_logger("testmod.core").info("huge", blob="y" * 3_000_000)
    (rec,) = collector.wait_for(lambda r: len(r) >= 1)
    assert rec["event"] == "huge"
    assert "truncated" in rec["kv"]
    assert receiver.bad_frames == 0


def _frame(event: str, **kv: object) -> bytes:
    return encode_frame(
        wire_record(module="raw", logger="raw", levelno=20, event=event, kv=kv, created=time.time())
    )


def test_receiver_survives_garbage_oversize_and_abrupt_disconnects(receiver, collector) -> None:
    """Bad input closes or skips only the offending connection/frame and is itself logged."""
    port = receiver.port
    # 1. a frame announcing 4 GiB: the receiver closes this connection
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\xff\xff\xff\xff" + b"z" * 100)
        s.settimeout(5)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
    # 2. a well-framed non-JSON body and a JSON array are skipped; the connection stays usable
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(struct.pack(">L", 9) + b"not json{" + struct.pack(">L", 3) + b"[1]")
        s.sendall(_frame("after garbage"))
        collector.wait_for(lambda r: any(x["event"] == "after garbage" for x in r))
    # 3. half a frame, then a reset (SO_LINGER 0)
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sendall(_frame("never complete")[:20])
    s.close()
    # 4. random bytes on several connections
    for seed in range(10):
        with socket.create_connection(("127.0.0.1", port)) as r:
            r.sendall(os.urandom(500 + seed * 97))
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(_frame("still alive"))
        recs = collector.wait_for(lambda r: any(x["event"] == "still alive" for x in r))
    events = [r["event"] for r in recs]
    assert "oversized log frame; connection closed" in events
    assert events.count("bad log frame skipped") >= 2
    assert "never complete" not in events
    assert receiver.bad_frames >= 3
    assert all(
        r["module"] == "log_receiver"
        for r in recs
        if r["event"].startswith(("oversized", "bad log"))
    )


def test_close_writes_what_already_arrived(tmp_path: Path) -> None:
    """Frames already sent when close() is called still reach the file (shutdown loses nothing)."""
    rcv = LogReceiver(port=0, log_dir=tmp_path).start()
    with socket.create_connection(("127.0.0.1", rcv.port)) as s:
        s.sendall(b"".join(_frame("last words", i=i) for i in range(2000)))
        rcv.close()
    lines = rcv.path.read_text().splitlines()
    assert len(lines) == 2000
    assert json.loads(lines[-1])["kv"] == {"i": 1999}


def test_burst_on_one_connection_arrives_whole(receiver, collector) -> None:
    """50,000 records pushed as fast as possible on one connection all arrive, in order."""
    n = 50_000
    data = b"".join(_frame("b", seq=i) for i in range(n))
    with socket.create_connection(("127.0.0.1", receiver.port)) as s:
        s.sendall(data)
        recs = collector.wait_for(lambda r: len(r) >= n, timeout=30)
    assert [r["kv"]["seq"] for r in recs] == list(range(n))
    assert len(receiver.path.read_text().splitlines()) == n


CHILD = """
import sys
from shared_utils.logging import configure_logging, get_logger
configure_logging("child", log_server=sys.argv[1], console=False)
log = get_logger("child.main")
for i in range(int(sys.argv[2])):
    log.info("child record", i=i)
"""


def test_subprocess_records_are_flushed_at_normal_exit(receiver, collector) -> None:
    """A process that logs and returns immediately still delivers everything it queued."""
    n = 2000
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, f"127.0.0.1:{receiver.port}", str(n)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    recs = collector.wait_for(lambda r: len(r) >= n)
    assert [r["kv"]["i"] for r in recs] == list(range(n))
    assert {r["module"] for r in recs} == {"child"}


def test_cli_writes_jsonl_and_prints_readable_lines(free_port, tmp_path) -> None:
    """``python -m shared_utils.log_receiver`` logs to DIR/*.jsonl, prints, and stops on SIGTERM."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "shared_utils.log_receiver",
        "--port",
        str(port),
        "--log-dir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "log receiver on" in proc.stdout.readline()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(_frame("hello from cli test", n=1))
        busy = subprocess.run(
            argv,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert busy.returncode != 0
        assert "another receiver" in busy.stderr
        line = proc.stdout.readline()
        assert "INFO" in line
        assert "hello from cli test" in line
        assert "n=1" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "stopped after 1 records" in out
    (path,) = tmp_path.glob("mesh-logs-*.jsonl")
    assert json.loads(path.read_text())["event"] == "hello from cli test"


def test_log_server_address_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Option beats environment beats default; 'none'/'off' disable sending."""
    monkeypatch.delenv("MESH_LOG_SERVER", raising=False)
    assert parse_log_server(None) == ("127.0.0.1", 9020)
    monkeypatch.setenv("MESH_LOG_SERVER", "10.0.0.2:9100")
    assert parse_log_server(None) == ("10.0.0.2", 9100)
    assert parse_log_server("localhost:9030") == ("localhost", 9030)
    assert parse_log_server("9031") == ("127.0.0.1", 9031)
    assert parse_log_server("none") is None
    assert parse_log_server("OFF") is None
    with pytest.raises(ValueError, match="host:port"):
        parse_log_server("somewhere:port")


def test_import_has_no_side_effects() -> None:
    """Importing the logging, receiver and event-loop modules starts no thread and configures nothing."""
    code = (
        "import threading, structlog\n"
        "import shared_utils.logging, shared_utils.log_receiver, shared_utils.streams.event_loop, shared_utils.streams.timing\n"
        "shared_utils.logging.get_logger('x')\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert not structlog.is_configured()\n"
        "assert shared_utils.logging.shipper() is None\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
