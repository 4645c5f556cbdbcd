"""The control room: starts, watches and commands a mesh of modules over the protocol only.

It never imports a service's code; everything it knows about a module comes from the config and
from the module's replies. Entry points: ``python -m control_room`` / ``control-room`` (cli.py),
``ControlRoom`` (room.py) for scripts and tests.
"""
