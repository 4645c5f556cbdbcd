"""Exceptions that cross the protocol boundary.

A command function raises :class:`CommandError` to refuse a request; the server turns it into
``{"ok": false, "error": "<message>"}`` and keeps running. The message is shown to a person, so it
should say what was wrong and what to do about it.
"""

from __future__ import annotations


class CommandError(Exception):
    """A command was refused: bad arguments, wrong state, missing file. The text is the reply."""


class ModuleError(Exception):
    """Base class of errors raised by :class:`shared_utils.client.ModuleClient`."""


class ModuleUnreachable(ModuleError):
    """The module could not be reached (refused, timed out, connection dropped)."""


class CommandFailed(ModuleError):
    """The module answered with ``ok: false``; ``.error`` holds its message, ``.cmd`` the command."""

    def __init__(self, cmd: str, error: str) -> None:
        super().__init__(f"{cmd} failed: {error}")
        self.cmd = cmd
        self.error = error
