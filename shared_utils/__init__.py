"""Shared building blocks of the module mesh: protocol, server, client, logging, data layer.

This package is the only code that services and the control room share. It never imports
from ``services`` or ``control_room``.
"""

__version__ = "0.1.0"
