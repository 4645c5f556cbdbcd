"""LSL network configuration.

liblsl reads its configuration once, lazily, at the first LSL call: the file named by the
``LSLAPICFG`` environment variable wins. Tests and ``make run`` point it at
``config/lsl_loopback.cfg`` so that no LSL traffic leaves the machine; child processes inherit the
variable. ``docs/configuration.md`` describes a config for a lab with several machines.
"""

from __future__ import annotations

import os
from pathlib import Path

LOOPBACK_CONFIG = Path(__file__).resolve().parent.parent / "config" / "lsl_loopback.cfg"


def use_loopback(force: bool = False) -> Path:
    """Make this process (and its children) use the loopback-only LSL config.

    Must run before any pylsl call. An ``LSLAPICFG`` already set by the user is kept unless
    ``force`` is true. Returns the config file in effect.
    """
    if force or not os.environ.get("LSLAPICFG"):
        os.environ["LSLAPICFG"] = str(LOOPBACK_CONFIG)
    return Path(os.environ["LSLAPICFG"])
