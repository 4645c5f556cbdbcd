"""What the shared-memory transport refuses, each with a message that says what to do."""

from __future__ import annotations

from shared_utils.streams.shm._os import ShmUnsupportedError


class ShmError(RuntimeError):
    """Base class of the transport's errors."""


class RingInUseError(ShmError):
    """A live writer already owns a ring of that stream name on this host."""


class RingTooSmallError(ShmError, ValueError):
    """The ring asked for cannot hold enough of the stream for readers to keep up."""


class RingNotFoundError(ShmError, LookupError):
    """No ring of that stream name exists on this host (in this session)."""


class WriterGoneError(ShmError):
    """The ring's writer died (its lock is free) without closing the ring."""


__all__ = [
    "RingInUseError",
    "RingNotFoundError",
    "RingTooSmallError",
    "ShmError",
    "ShmUnsupportedError",
    "WriterGoneError",
]
