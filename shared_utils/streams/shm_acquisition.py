"""StreamWatcher's second backend: the same-host shared-memory ring behind a stream.

With ``transport="auto"`` (the default) a watcher that resolved an LSL stream looks at the stream's
full info: when it announces a ring (``desc/shm``) that lives on this machine and is alive, the
watcher reads the ring instead of the LSL inlet, at the ring's full rate, and closes the inlet
before any data flowed through it. ``transport="shm"`` attaches to the ring by name without any
LSL (for rings announced with ``lsl="off"``); ``"lsl"`` never uses a ring.

Everything a consumer calls stays the same (``window``, ``pop_new``, ``n_new``,
``wait_for_samples``, ``stats``...): the ring's samples land in the watcher's own ring buffer
exactly where liblsl's would, with one copy (``pull_into`` straight into the buffer's write
slot), and a waiting reader sleeps on the ring's futex instead of inside liblsl. What differs
shows in ``stats()``: ``transport``, the ring's ``segment``, ``lost_samples`` (exact, if this
watcher was lapped), ``writer`` and ``writer_problem`` (a writer that died, and what a torn
chunk cost). With ``recover=True`` a ring whose writer went away is re-attached by name when a
new writer of the same shape appears (what liblsl's recovery does for LSL inlets).
"""

from __future__ import annotations

import time
from typing import Any

from shared_utils.streams.lsl import StreamNotFoundError
from shared_utils.streams.ring_buffer import RingBuffer
from shared_utils.streams.shm.errors import RingNotFoundError, ShmError, WriterGoneError
from shared_utils.streams.shm.inlet import (
    RingInlet,
    open_ring_inlet,
    ring_inlet_for,
    ring_summary,
)

RECOVER_EVERY_S = 0.5


class RingStreamNotFoundError(StreamNotFoundError):
    """No ring of that name on this host within the timeout; ``visible`` lists the rings."""

    def __init__(self, message: str, visible: list[str]) -> None:
        LookupError.__init__(self, message)
        self.visible = visible


class RingAcquisition:
    """The ring half of :class:`~shared_utils.streams.acquisition.InletAcquisition` (a mixin:
    the state it uses is created by ``StreamWatcher.__init__`` and ``_open``)."""

    _ring: RingInlet | None = None
    _recover_at = 0.0

    def _ring_behind(self, full: Any) -> RingInlet | None:
        """The ring announced by an LSL stream's full info, when this watcher may use it."""
        if self.transport == "lsl":
            return None
        return ring_inlet_for(full, self.transport, self.log)

    def _open_ring_by_name(self, timeout_s: float) -> RingInlet:
        """``transport="shm"``: the ring named ``self.name``, no LSL involved."""
        try:
            return open_ring_inlet(self.name, timeout_s, logger=self.log)
        except (RingNotFoundError, WriterGoneError) as exc:
            from shared_utils.streams.shm import list_rings

            rings = [str(r.get("name")) for r in list_rings() if r.get("writer_alive")]
            raise RingStreamNotFoundError(f"{exc} (waited {timeout_s:g} s)", rings) from None

    def _pull_ring(self, inlet: RingInlet, rb: RingBuffer, timeout: float) -> int:
        """One pull from the ring straight into the buffer's write slot, then publish it."""
        if self.lost:
            return self._recover_ring(timeout)
        pos = rb.pos
        data, ts = rb.write_slots(self._max_pull)
        n = inlet.pull_into(data, ts, timeout)
        if n:
            self._commit_slot(rb, pos, n)
        return n

    def _recover_ring(self, timeout: float) -> int:
        """The writer is gone: with ``recover``, re-attach to a new writer of the same name and
        shape (checked twice a second); otherwise, or until then, wait like an empty pull."""
        now = time.monotonic()
        old = self._ring
        if self.recover and old is not None and now >= self._recover_at:
            self._recover_at = now + RECOVER_EVERY_S
            try:
                new = RingInlet(type(old.reader)(self.name, session=old.reader.session,
                                                 logger=self.log))  # fmt: skip
            except ShmError:
                new = None
            shape = (old.channel_count, old.dtype, old.srate)
            if new is not None and (new.channel_count, new.dtype, new.srate) == shape:
                old.close_stream()
                self.inlet = self._ring = new
                self.lost = False
                self.log.info("shm ring re-attached", stream=self.name, segment=new.reader.segment)
                return 0
            if new is not None:
                new.close_stream()
                self.log.warning("a new ring of this name has another shape; not re-attached",
                                 stream=self.name)  # fmt: skip
        self._stop.wait(min(max(timeout, 0.001), 0.1))
        return 0

    def _transport_stats(self) -> dict[str, Any]:
        """What ``stats()`` adds about the transport (attributes only: safe after close)."""
        return ring_summary(self._ring)
