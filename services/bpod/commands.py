"""Thin protocol layer: command names onto :class:`services.bpod.core.BpodService` methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.bpod.core import BpodService
from services.bpod.session import session_commands


def build_commands(core: BpodService) -> dict[str, Callable[..., Any]]:
    """The Bpod module's command map (STOP/STATUS/CLOSE merge with the server's built-ins)."""
    return {
        "CONNECT": core.connect,
        "INFO": core.info,
        "LOAD": core.load,
        "RUN": core.run,
        "RESULT": core.run_result,
        "STOP": core.stop,
        "OVERRIDE": core.override,
        "SOFT_CODE": core.soft_code,
        "EMULATE_INPUT": core.emulate_input,
        "STATUS": core.status,
        "CLOSE": core.close,
        **session_commands(core),  # its part in a session: trials and state machines
    }
