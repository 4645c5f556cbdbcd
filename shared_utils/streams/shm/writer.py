"""ShmWriter: the source side of a same-host ring (one writer per stream name and host).

A push costs one copy of the chunk into shared memory, two counter stores around it and one
``FUTEX_WAKE`` system call: no allocation, no serialisation, and readers can never slow it down
(they are not waited for; one that falls a whole ring behind is told how much it lost). The
stream is also announced on LSL for other hosts (see :mod:`.announce`), in full or decimated.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from typing import Any

import numpy as np

from shared_utils.checks import choice_message
from shared_utils.logging import get_logger
from shared_utils.streams.shm import _os, discovery, layout
from shared_utils.streams.shm.errors import RingInUseError, RingTooSmallError, ShmError
from shared_utils.streams.shm.layout import LOCK_READER0, LOCK_WRITER, STATE_CLOSED, RingView

log = get_logger("shm")

MIN_CAPACITY_S = 0.1  # a reader descheduled for 100 ms must not lose data
DEFAULT_CAPACITY_S = 1.0  # 61 MB at 1024 ch x 30 kHz int16: fits Docker's 64 MiB /dev/shm
READER_SWEEP_S = 1.0


class ShmWriter:
    """Publish a regular multichannel stream into a shared-memory ring named after the stream.

    ``ShmWriter("probe0", channels=384, srate=30000, dtype="int16")`` creates
    ``/dev/shm/clmesh.<session>.probe0`` holding ``capacity_s`` seconds. ``push_chunk(x)`` appends
    samples (rows). Refused with a clear error: a second live writer of the same name
    (:class:`RingInUseError`, naming its pid), a ring shorter than ``min_capacity_s``
    (:class:`RingTooSmallError`), a ring that does not fit in ``/dev/shm`` (OSError ENOSPC), an
    irregular rate. The ring of a writer that died is replaced, with a log line.

    ``lsl``: ``"auto"`` (full stream on LSL when its byte rate allows, else decimated),
    ``"full"``, ``"decimated"`` or ``"off"``; see :func:`.announce.lsl_plan`.
    """

    def __init__(
        self,
        name: str,
        channels: int,
        srate: float,
        dtype: str = "int16",
        *,
        capacity_s: float = DEFAULT_CAPACITY_S,
        stream_type: str = "EEG",
        channel_names: list[str] | None = None,
        unit: str = "",
        source_id: str = "",
        lsl: str = "auto",
        min_capacity_s: float = MIN_CAPACITY_S,
        session: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        _os.check_supported()
        self.name = name
        self.dtype, self.channels, self.srate, self.capacity = _checked_shape(
            dtype, channels, srate, capacity_s, min_capacity_s
        )
        self.max_chunk = self.capacity // 2
        self.session = session or layout.session()
        self.segment = layout.segment_name(name, self.session)
        self.uid = secrets.token_bytes(16)
        if not channel_names:
            from shared_utils.streams.lsl import default_channel_labels

            channel_names = default_channel_labels(self.channels)
        self.channel_names = list(channel_names)
        if len(self.channel_names) != self.channels:
            raise ValueError(
                f"{len(self.channel_names)} channel names for {self.channels} channels"
            )
        meta_d = {"channel_names": self.channel_names, "unit": unit, "source_id": source_id}
        meta_d.update(meta or {})
        self._fd = -1
        self._mm: Any = None
        self._view: RingView | None = None
        self._create(stream_type, layout.meta_bytes(meta_d))
        v = self._view
        assert v is not None
        self._hot, self._notify, self._last = v.hot, v.notify, v.last_commit
        self._data, self._ts = v.data, v.ts
        self._futex = _os.Futex(_os.mapping_address(self._mm) + layout.NOTIFY_OFF)
        self._written = 0
        self._seq = 0
        self._back = np.arange(self.max_chunk - 1, -1, -1, dtype=np.float64) / self.srate
        self._next_sweep = time.monotonic() + READER_SWEEP_S
        self.reader_events: list[dict[str, Any]] = []
        self._closed = False
        self.announcer: Any = None
        if lsl != "off":
            from shared_utils.streams.shm.announce import LslAnnouncer

            self.announcer = LslAnnouncer(self, stream_type, mode=lsl, source_id=source_id)
        log.info(
            "shm ring created", stream=name, segment=self.segment, channels=self.channels,
            srate=self.srate, dtype=self.dtype.name, capacity=self.capacity,
            size_mb=round(len(self._mm) / 1e6, 1),
            lsl=self.announcer.plan if self.announcer else "off",
        )  # fmt: skip

    # ------------------------------------------------------------------------------ creation
    def _create(self, stream_type: str, meta: bytes) -> None:
        """Build the ring under a temporary name, then link it in place (atomic: exists or not)."""
        for stale in discovery.sweep_stale(self.session):
            log.warning("removed a stale shm ring (its writer died)", **stale)
        geo = layout.Geometry(self.channels, self.dtype, self.capacity, len(meta))
        free = _os.shm_free_bytes()
        if geo.total_size > free:
            raise ShmError(
                f"the ring for {self.name!r} needs {geo.total_size / 1e6:.1f} MB but "
                f"{_os.SHM_DIR} has {free / 1e6:.1f} MB free (containers default to 64 MiB: "
                "raise shm_size, or ask for a shorter capacity_s)"
            )
        for _attempt in range(3):
            tmp = f"{self.segment}{discovery.TMP_MARK}{os.getpid()}-{secrets.token_hex(3)}"
            fd = _os.create_segment(tmp, geo.total_size)
            try:
                if not _os.try_lock(fd, LOCK_WRITER):
                    raise ShmError(f"could not lock the new ring {tmp}")
                mm = _os.map_segment(fd)
                layout.init_header(
                    mm, geo, srate=self.srate, stream=self.name, stream_type=stream_type,
                    pid=os.getpid(), created_lsl=_os.lsl_clock(), created_unix=time.time(),
                    uid=self.uid, meta=meta,
                )  # fmt: skip
                try:
                    self._link(tmp)
                except BaseException:
                    mm.close()
                    raise
            except FileNotFoundError:  # a sweeper took our half-made ring: make another
                os.close(fd)
                continue
            except BaseException:
                _os.unlink_segment(tmp)
                os.close(fd)
                raise
            _os.unlink_segment(tmp)
            self._fd, self._mm, self._view = fd, mm, RingView(mm)
            return
        raise ShmError(f"could not create the ring {self.segment} (removed while being made)")

    def _link(self, tmp: str) -> None:
        """Link ``tmp`` to the stream's name; replace a dead writer's ring, refuse a live one."""
        try:
            _os.link_segment(tmp, self.segment)
            return
        except FileExistsError:
            pass
        stale = discovery.remove_if_stale(self.segment)
        if stale is None and _os.segment_path(self.segment).exists():
            raise RingInUseError(self._owner_message())
        if stale:
            log.warning("replaced the shm ring of a dead writer", **stale)
        try:
            _os.link_segment(tmp, self.segment)
        except FileExistsError:  # another writer of this name started at this very moment
            raise RingInUseError(self._owner_message()) from None

    def _owner_message(self) -> str:
        pid, since = "?", ""
        try:
            fd, mm, view = discovery.open_ring(self.segment)
            try:
                pid = view.get("writer_pid")
                age = time.time() - view.get("created_unix")
                since = f", writing for {age:.0f} s"
            finally:
                discovery.close_ring(fd, mm, view)
        except (OSError, ValueError):
            pass
        return (
            f"stream {self.name!r} already has a live shared-memory writer on this host "
            f"(pid {pid}{since}, segment {_os.segment_path(self.segment)}): stop it first, or "
            "publish under another name"
        )

    # --------------------------------------------------------------------------------- push
    @property
    def total(self) -> int:
        """Samples written since the ring was created."""
        return self._written

    def push_chunk(self, data: Any, timestamps: Any = None) -> int:
        """Append samples (rows of ``channels`` values); returns how many.

        ``timestamps``: None stamps the newest sample with the LSL clock now; a number is the
        newest sample's time; either way the earlier ones are spaced at 1/srate before it (LSL's
        convention). An array gives every sample's time.
        """
        if self._closed:
            raise ShmError(f"the ring of {self.name!r} is closed")
        x = np.asarray(data)
        if x.ndim == 1:
            x = x.reshape(-1, self.channels) if x.size % self.channels == 0 else x[None, :]
        n = x.shape[0]
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected rows of {self.channels} channels, got shape {x.shape}")
        if x.dtype != self.dtype and not np.can_cast(x.dtype, self.dtype, "same_kind"):
            raise ValueError(
                f"samples of type {x.dtype} would be truncated in this ring of "
                f"{self.dtype.name}; convert (and scale) them to {self.dtype.name} first"
            )
        if n == 0:
            return 0
        if n > self.max_chunk:
            raise ValueError(
                f"a chunk of {n} samples is more than half the ring ({self.capacity} samples); "
                "push smaller chunks or create the ring with a longer capacity_s"
            )
        cap, s = self.capacity, self._written
        i = s % cap
        first = min(n, cap - i)
        self._hot[0] = s + n  # claim: rows about to be overwritten are no longer valid
        self._data[i : i + first] = x[:first]
        if first < n:
            self._data[: n - first] = x[first:]
        ts = self._ts
        if timestamps is None or np.ndim(timestamps) == 0:
            newest = _os.lsl_clock() if timestamps is None else float(timestamps)
            back = self._back[self.max_chunk - n :]
            np.subtract(newest, back[:first], out=ts[i : i + first])
            if first < n:
                np.subtract(newest, back[first:], out=ts[: n - first])
        else:
            t = np.asarray(timestamps, dtype=np.float64)
            if t.shape != (n,):
                self._hot[0] = s  # nothing was committed; withdraw the claim
                raise ValueError(f"{n} samples but timestamps of shape {t.shape}")
            ts[i : i + first] = t[:first]
            ts[: n - first] = t[first:]
        self._written = s + n
        self._hot[1] = s + n  # commit
        self._last[0] = _os.lsl_clock()
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self._notify[0] = self._seq
        self._futex.wake()
        if self.announcer is not None:
            tc = ts[i : i + n] if first == n else np.concatenate((ts[i:], ts[: n - first]))
            self.announcer.push(x, tc, timestamps is None or np.ndim(timestamps) == 0)
        if time.monotonic() >= self._next_sweep:
            self._sweep_readers()
        return n

    def push_sample(self, sample: Any, timestamp: float | None = None) -> int:
        return self.push_chunk(np.asarray(sample).reshape(1, -1), timestamp)

    # ------------------------------------------------------------------------------ readers
    def _sweep_readers(self) -> None:
        """Free the slots of readers that died (their lock is free); report where they stood."""
        self._next_sweep = time.monotonic() + READER_SWEEP_S
        v = self._view
        if v is None:
            return
        for i in np.flatnonzero(v.slot_pids[: v.max_readers]):
            if not _os.try_lock(self._fd, LOCK_READER0 + int(i)):
                continue  # alive
            try:
                ev = {
                    "event": "reader_died", "pid": int(v.slot_pids[i]),
                    "position": int(v.slots[i, 1]), "behind": self._written - int(v.slots[i, 1]),
                    "lost": int(v.slots[i, 2]), "at_lsl": _os.lsl_clock(),
                }  # fmt: skip
                v.slots[i, :] = 0
            finally:
                _os.unlock(self._fd, LOCK_READER0 + int(i))
            self.reader_events.append(ev)
            log.warning(
                "a shm reader died holding a read position; its slot is freed (the writer is "
                "unaffected)", stream=self.name, **{k: v for k, v in ev.items() if k != "event"},
            )  # fmt: skip

    def backlog(self) -> int:
        """Samples the slowest attached reader has yet to pull (0 without readers).

        Readers never hold the writer back; a writer that would rather wait than lap them (a file
        replay, a benchmark measuring lossless throughput) can pace itself on this.
        """
        v = self._view
        if v is None:
            return 0
        used = v.slot_pids[: v.max_readers] != 0
        if not used.any():
            return 0
        lag = int(self._written - v.slots[used, 1].min())
        if lag > self.max_chunk and time.monotonic() >= self._next_sweep:
            self._sweep_readers()  # a dead reader must not look like a slow one forever
            return self.backlog()
        return lag

    def readers(self) -> list[dict[str, Any]]:
        """Attached readers: pid, position, how far behind, lost samples, alive."""
        if self._view is None:
            return []
        self._sweep_readers()
        return discovery.readers_of(self._fd, self._view)

    def stats(self) -> dict[str, Any]:
        return {
            "stream": self.name, "segment": self.segment, "samples": self._written,
            "capacity": self.capacity, "channels": self.channels, "srate": self.srate,
            "format": self.dtype.name, "readers": self.readers(),
            "reader_events": list(self.reader_events),
            "lsl": self.announcer.plan if self.announcer else {"mode": "off"},
        }  # fmt: skip

    # -------------------------------------------------------------------------------- close
    def close(self) -> None:
        """Mark the ring closed (readers see it at once), remove its name, release it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.announcer is not None:
            self.announcer.close()
        v = self._view
        if v is not None:
            v.set("state", STATE_CLOSED)
            self._notify[0] = (self._seq + 1) & 0xFFFFFFFF
            self._futex.wake()
        _os.unlink_segment(self.segment)
        for a in ("_hot", "_notify", "_last", "_data", "_ts"):
            self.__dict__.pop(a, None)
        discovery.close_ring(self._fd, self._mm, v)
        self._view = self._mm = None
        log.info("shm ring closed", stream=self.name, samples=self._written)

    def __enter__(self) -> ShmWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ShmOutlet = ShmWriter


def _checked_shape(
    dtype: str, channels: int, srate: float, capacity_s: float, min_capacity_s: float
) -> tuple[np.dtype, int, float, int]:
    """(dtype, channels, srate, capacity in samples) of a new ring, or ValueError saying why not."""
    dt = np.dtype(dtype).newbyteorder("<")
    if dt.name not in layout.DTYPE_CODES:
        raise ValueError(f"dtype not supported: {choice_message(str(dtype), layout.DTYPE_CODES)}")
    n = int(channels)
    if n < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    rate = float(srate)
    if not rate > 0 or not math.isfinite(rate):
        raise ValueError(
            f"srate must be a positive rate, got {srate}: irregular streams (markers) go over LSL"
        )
    capacity = math.ceil(capacity_s * rate)
    if capacity_s < min_capacity_s:
        need = math.ceil(min_capacity_s * rate)
        raise RingTooSmallError(
            f"a ring of {capacity_s:g} s ({capacity} samples) is too small for {rate:g} Hz: it "
            f"must hold at least {min_capacity_s:g} s ({need} samples) so that a reader "
            "descheduled for a moment loses nothing; ask for a longer capacity_s"
        )
    return dt, n, rate, capacity
