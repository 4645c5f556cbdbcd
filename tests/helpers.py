"""Small helpers several test files share: polling, log-record collection, strict XDF loading and
starting the Bpod emulator as a real child process.

They live here rather than in each test file so that a fix (a longer READY wait, a stricter XDF
check) reaches every test that relies on it.
"""

from __future__ import annotations

import logging
import select
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyxdf

ROOT = Path(__file__).resolve().parent.parent


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 20.0, every: float = 0.02) -> Any:
    """Poll ``pred`` until it returns something truthy and return that; fail naming ``what``.

    The timeout only guards against hangs; it is not a timing check.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def open_inlet(name: str, timeout: float = 5.0, max_buflen: int = 60) -> Any:
    """A pylsl inlet on the stream called ``name``, opened; fails if it is not visible."""
    import pylsl

    found = pylsl.resolve_byprop("name", name, minimum=1, timeout=timeout)
    assert found, f"LSL stream {name!r} not visible"
    inlet = pylsl.StreamInlet(found[0], max_buflen=max_buflen)
    inlet.open_stream(timeout=timeout)
    return inlet


def poll_until(cond: Callable[[], Any], timeout: float = 10.0, every: float = 0.02) -> bool:
    """Poll ``cond`` until true or the timeout (bounded; no fixed sleeps in tests); its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return bool(cond())


class Collector:
    """Thread-safe list of log records handed to ``on_record``, with a blocking wait."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self._cond = threading.Condition()

    def __call__(self, rec: dict) -> None:
        with self._cond:
            self.records.append(rec)
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[dict]], bool], timeout: float = 10.0) -> list[dict]:
        """Block until ``pred(records)`` holds; fail showing the last records if it never does."""
        with self._cond:
            ok = self._cond.wait_for(lambda: pred(self.records), timeout)
            assert ok, f"condition not met; got {len(self.records)} records: {self.records[-5:]}"
            return list(self.records)

    def events(self, event: str) -> list[dict]:
        """The records so far whose ``event`` is ``event``."""
        with self._cond:
            return [r for r in self.records if r["event"] == event]


class _WarningRecords(logging.Handler):
    """Keeps the WARNING+ records pyxdf logs, so a load that only logged a problem still fails."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def load_xdf_strict(path: Path, **kwargs: Any) -> list[dict]:
    """pyxdf.load_xdf with its warnings (Python warnings and WARNING+ log records) as errors."""
    handler = _WarningRecords()
    logger = logging.getLogger("pyxdf")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            streams, _ = pyxdf.load_xdf(str(path), **kwargs)
    finally:
        logger.removeHandler(handler)
    assert not handler.records, [r.getMessage() for r in handler.records]
    return streams


def start_bpod_emulator(link: Path, *args: str) -> subprocess.Popen:
    """``python -m services.bpod.emulator --link LINK [args]``, returned once it printed READY.

    The caller owns the process (terminate or kill it in a ``finally``).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.bpod.emulator", "--link", str(link), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready
        assert proc.stdout.readline().startswith("READY")
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc
