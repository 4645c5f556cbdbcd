"""Logging interop with dareplane-utils 0.0.24, both ways, over real TCP.

Their modules log with ``UJsonSocketHandler`` (length-prefixed JSON of ``record.__dict__``: ``msg``
unformatted plus ``args``, and every value stringified when one is not serialisable); our receiver
must turn that into the same records ours produce. Our frames must in turn be readable by their
``LogRecordSocketReceiver``.
"""

from __future__ import annotations

import logging
import logging.handlers  # their handler module uses logging.handlers without importing it
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dareplane_utils.logging.ujson_socket_handler import UJsonSocketHandler
from helpers import Collector

from shared_utils.log_receiver import LogReceiver

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def receiver(collector: Collector) -> Iterator[LogReceiver]:
    rcv = LogReceiver(port=0, on_record=collector).start()
    yield rcv
    rcv.close()


@pytest.fixture
def dp_logger(receiver: LogReceiver, request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A stdlib logger whose only handler is Dareplane's socket handler, aimed at our receiver."""
    logger = logging.getLogger(f"dp_module.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = UJsonSocketHandler("127.0.0.1", receiver.port)
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)
    handler.close()


def test_their_socket_handler_logs_into_our_receiver(
    dp_logger: logging.Logger, collector: Collector
) -> None:
    """msg+args are formatted, level and logger kept, extras become key-values."""
    dp_logger.info("hello %s, trial %d", "world", 4, extra={"block": "B2"})
    (rec,) = collector.wait_for(lambda r: len(r) >= 1)
    assert rec["event"] == "hello world, trial 4"
    assert (rec["level"], rec["levelno"]) == ("info", 20)
    assert rec["logger"] == dp_logger.name
    assert rec["module"] == "dp_module"
    assert rec["kv"] == {"block": "B2"}
    assert isinstance(rec["created"], float)
    assert abs(rec["created"] - time.time()) < 60
    assert rec["source"] == "stdlib"


def test_their_stringified_fallback_records_are_normalised(dp_logger, collector) -> None:
    """A non-serialisable value makes their handler stringify everything; we undo what we can."""
    try:
        raise RuntimeError("amp lost")
    except RuntimeError:
        dp_logger.exception("stream %s failed", "eeg", extra={"obj": object()})
    (rec,) = collector.wait_for(lambda r: len(r) >= 1)
    assert rec["event"] == "stream eeg failed"  # args arrived as the string "('eeg',)"
    assert isinstance(rec["created"], float)  # created arrived as a string
    assert rec["level"] == "error"
    assert "RuntimeError" in rec["exc_text"]
    assert "amp lost" in rec["exc_text"]
    assert rec["kv"]["obj"].startswith("<object object")


DP_MODULE = """
import logging.handlers, sys
from dareplane_utils.logging.logger import default_dareplane_config, get_logger
default_dareplane_config["handlers"]["socket"]["port"] = int(sys.argv[1])
log = get_logger("dp_strawman")
log.setLevel("DEBUG")
log.info("module started on port %s", 8080)
log.warning("plain warning")
logging.shutdown()
"""


def test_dareplane_get_logger_in_a_process_logs_into_our_receiver(receiver, collector) -> None:
    """A Dareplane module configured by their get_logger() reaches our receiver unchanged."""
    proc = subprocess.run(
        [sys.executable, "-c", DP_MODULE, str(receiver.port)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    recs = collector.wait_for(lambda r: len(r) >= 2)
    assert [(r["logger"], r["level"], r["event"]) for r in recs] == [
        ("dp_strawman", "info", "module started on port 8080"),
        ("dp_strawman", "warning", "plain warning"),
    ]


THEIR_RECEIVER = """
import logging.handlers, sys
from pathlib import Path
from dareplane_utils.logging.server import LogRecordSocketReceiver
r = LogRecordSocketReceiver(host="127.0.0.1", port=int(sys.argv[1]), logfile=Path(sys.argv[2]))
print("up", flush=True)
r.serve_until_stopped()
"""

OUR_MODULE = """
import sys
from shared_utils.logging import configure_logging, get_logger
configure_logging("ourmod", log_server=sys.argv[1], console=False)
log = get_logger("ourmod.core")
log.info("ready", port=8101)
log.info("progress 50%s done", note="percent-s survives")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("step failed")
"""


def test_our_logger_logs_into_their_receiver(free_port, tmp_path: Path) -> None:
    """Our frames carry the LogRecord keys their receiver needs, including formatted tracebacks."""
    port, logfile = free_port(), tmp_path / "dareplane.log"
    rcv = subprocess.Popen(
        [sys.executable, "-c", THEIR_RECEIVER, str(port), str(logfile)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert rcv.stdout.readline().strip() == "up"
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        ours = subprocess.run(
            [sys.executable, "-c", OUR_MODULE, f"127.0.0.1:{port}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ours.returncode == 0, ours.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "ZeroDivisionError" not in logfile.read_text():
            time.sleep(0.05)
        text = logfile.read_text()
    finally:
        rcv.kill()
        rcv.wait(5)
    assert "ourmod.core - INFO - ready port=8101" in text
    assert "progress 50%s done note='percent-s survives'" in text
    assert "ourmod.core - ERROR - step failed" in text
    assert "ZeroDivisionError: division by zero" in text
