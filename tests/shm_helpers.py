"""Fixtures for the shared-memory tests: a private session per test and child processes.

Each test runs in its own session (``MESH_SHM_SESSION``, inherited by its children), so its rings
cannot meet another test's, or another engineer's run on the same host; at teardown every child
is killed and the test fails if any ring of its session is left in /dev/shm. Import the fixtures
into a test module with ``from shm_helpers import children_fixture, shm_session_fixture  # noqa``
(registered as ``children`` and ``shm_session``).
"""

from __future__ import annotations

import select
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared_utils.streams.shm import _os, layout

PROCS = Path(__file__).resolve().parent / "shm_procs.py"


def leftovers(sess: str) -> list[str]:
    return _os.list_segments(layout.session_prefix(sess))


@pytest.fixture(name="shm_session")
def shm_session_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    sess = f"t{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv(layout.SESSION_ENV, sess)
    yield sess
    left = leftovers(sess)
    for seg in left:  # clean up even when failing, so one failure does not leak segments
        _os.unlink_segment(seg)
    assert not left, f"shared-memory segments left behind: {left}"


class Child:
    """A child process with line-based stdin/stdout and a bounded ``line()`` read."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
        )

    def line(self, timeout: float = 30.0) -> str:
        """The next line it prints (the timeout only guards against a hang)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"child {self.proc.args[2:4]} printed nothing within {timeout} s"
        out = self.proc.stdout.readline()
        assert out, f"child exited with {self.proc.wait(5)} before printing"
        return out.strip()

    def send(self, text: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(name="children")
def children_fixture(shm_session: str) -> Iterator:
    """``children("writer", "--name", n, ...)`` starts ``tests/shm_procs.py`` in the test's
    session; all are killed at the end (before the session's leftover check)."""
    started: list[Child] = []

    def start(*args: str) -> Child:
        c = Child([sys.executable, str(PROCS), *args])
        started.append(c)
        return c

    yield start
    for c in started:
        c.kill()
        for f in (c.proc.stdin, c.proc.stdout):
            if f:
                f.close()
