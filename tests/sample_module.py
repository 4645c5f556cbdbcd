"""A small module for server tests that need a real process: python -m tests.sample_module --port P.

Commands cover what the process-level tests look at: a CLOSE hook, work queued for the main
thread, a child process group, and a slow command.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import click

from shared_utils.module_cli import module_options, run_module


def build(server: Any) -> dict[str, Any]:
    server.tasks.join_timeout_s = 0.5
    server.tasks.term_timeout_s = 0.5
    main_result: dict[str, Any] = {}
    main_done = threading.Event()

    def echo(**kwargs: Any) -> dict[str, Any]:
        """Return the arguments."""
        return kwargs

    def slow(seconds: float = 1.0) -> str:
        """Sleep, then answer (blocks only this connection)."""
        time.sleep(seconds)
        return "done"

    def on_main() -> Any:
        """Queue a function for the process's main thread."""

        def fn(stop_event: threading.Event) -> None:
            main_result["on_main"] = threading.current_thread() is threading.main_thread()
            main_result["thread"] = threading.current_thread().name
            main_done.set()

        return server.tasks.run_on_main_thread(fn, name="on_main")

    def main_result_cmd(timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the main-thread function and report where it ran."""
        main_done.wait(timeout)
        return dict(main_result)

    def close_hook() -> None:
        """Say goodbye on stdout (tests read it)."""
        print("close hook ran", flush=True)

    def touch(path: str, text: str = "") -> int:
        """Write ``text`` to ``path`` (lets a test see that a command ran without a reply)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return 0

    def spawn(argv: list) -> subprocess.Popen:
        """Start a child process in its own group (Dareplane's Popen convention)."""
        return subprocess.Popen([sys.executable, *argv], start_new_session=True)

    return {
        "ECHO": echo,
        "SLOW": slow,
        "ON_MAIN": on_main,
        "MAIN_RESULT": main_result_cmd,
        "SPAWN": spawn,
        "TOUCH": touch,
        "CLOSE": close_hook,
    }


@click.command()
@module_options(default_port=8199)
def main(**common: Any) -> None:
    """Sample module for the server tests."""
    run_module("sample", build, **common)


if __name__ == "__main__":
    main()
