"""Software Bpod state machine (firmware 22/23, machine types 3/4) behind a pseudo-terminal.

``Emulator`` is the I/O-free core, ``PtyEmulator`` serves it on ptys, ``parse_script`` turns
"Port1In@0.5" into scheduled inputs. Run ``python -m services.bpod.emulator --link PATH``.
"""

from services.bpod.emulator.hardware import PROFILES, Profile, get_profile
from services.bpod.emulator.machine import Emulator
from services.bpod.emulator.pty_link import PtyEmulator, extra_port_paths
from services.bpod.emulator.script import ScriptItem, parse_script

__all__ = [
    "PROFILES",
    "Emulator",
    "Profile",
    "PtyEmulator",
    "ScriptItem",
    "extra_port_paths",
    "get_profile",
    "parse_script",
]
