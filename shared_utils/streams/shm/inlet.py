"""A ``pylsl.StreamInlet`` look-alike over a same-host ring, so LSL consumer code reads rings as is.

Why a look-alike rather than a new API for consumers: the decoder, the recorder and the
StreamWatcher were written against pylsl's inlet (``pull_chunk`` into a preallocated ``dest_obj``,
``samples_available``, ``time_correction``, ``close_stream``, ``LostError`` when the source is
gone). :class:`RingInlet` keeps those calls and their meaning, so switching a consumer to the ring
is one decision where it opens its input (:func:`ring_inlet_for`, :func:`open_ring_inlet`), and
its pull loop stays the same. Differences that matter:

- the rate is the ring's full rate, also when the LSL copy is decimated (``info()`` says so);
- ``time_correction()`` is exactly 0: the ring's timestamps are this machine's LSL clock;
- a reader lapped by the writer loses the oldest samples and counts them (``lost_samples``),
  where an LSL inlet would buffer up to ``max_buflen`` and then drop silently;
- ``LostError`` comes once the writer has gone (closed, or died: the message says which, and
  what a torn chunk cost) *and* everything it committed has been pulled.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np

from shared_utils.checks import choice_message
from shared_utils.logging import get_logger
from shared_utils.streams.shm.errors import RingNotFoundError, ShmError, WriterGoneError
from shared_utils.streams.shm.reader import ShmReader

log = get_logger("shm")

TRANSPORTS = ("auto", "lsl", "shm")
LIVENESS_EVERY_S = 0.1  # after a quiet pull, look at the writer's lock at most this often
_LSL_FORMATS = {"float32": 1, "float64": 2, "int32": 4, "int16": 5, "int8": 6, "int64": 7}


def check_transport(transport: str) -> str:
    """``transport`` if it is one of :data:`TRANSPORTS`; else ValueError naming them."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport {choice_message(transport, TRANSPORTS)}")
    return transport


class RingStreamInfo:
    """A stream info at the ring's full rate: ``base`` (a pylsl StreamInfo) with its nominal
    rate (and the rate in ``as_xml``) replaced; everything else is ``base``'s."""

    def __init__(self, base: Any, srate: float) -> None:
        self._base, self._srate = base, float(srate)

    def nominal_srate(self) -> float:
        return self._srate

    def as_xml(self) -> str:
        return re.sub(
            r"<nominal_srate>[^<]*</nominal_srate>",
            f"<nominal_srate>{self._srate!r}</nominal_srate>",
            self._base.as_xml(),
            count=1,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def ring_info(reader: ShmReader) -> Any:
    """A pylsl StreamInfo describing the ring itself (for a ring opened by name, without LSL):
    name, type, shape, format, labels and unit from the ring's metadata, and ``desc/shm``."""
    import pylsl

    from shared_utils.streams.lsl import describe_channels

    meta = reader.meta
    info = pylsl.StreamInfo(
        reader.name, reader.stream_type or "EEG", reader.channels, reader.srate,
        _LSL_FORMATS[reader.dtype.name], str(meta.get("source_id") or f"shm:{reader.segment}"),
    )  # fmt: skip
    describe_channels(info, list(reader.ch_names), unit=str(meta.get("unit") or ""))
    shm = info.desc().append_child("shm")
    for k, v in {"segment": reader.segment, "session": reader.session, "uid": reader.uid}.items():
        shm.append_child_value(k, str(v))
    return info


class RingInlet:
    """What a ``pylsl.StreamInlet`` offers, read from a :class:`ShmReader` (see the module notes).

    ``lsl_info``: the full info of the LSL stream that announced the ring (kept, at the ring's
    rate, as :meth:`info`); None for a ring opened by name.
    """

    transport = "shm"

    def __init__(self, reader: ShmReader, lsl_info: Any = None) -> None:
        self.reader = reader
        self.channel_count = reader.channels
        self.srate = reader.srate
        self.dtype = reader.dtype
        self._info = RingStreamInfo(lsl_info if lsl_info is not None else ring_info(reader),
                                    reader.srate)  # fmt: skip
        self._checked_at = time.monotonic()
        self._ts = np.empty(0, dtype=np.float64)

    # -- what pylsl's inlet has ------------------------------------------------------------------
    def info(self, timeout: float = 0.0) -> RingStreamInfo:
        return self._info

    def open_stream(self, timeout: float = 0.0) -> None:
        """Nothing to open: the reader is attached already."""

    def close_stream(self) -> None:
        self.reader.close()

    def time_correction(self, timeout: float = 0.0) -> float:
        """0: the ring's timestamps are on this machine's LSL clock already."""
        return 0.0

    def samples_available(self) -> int:
        return self.reader.n_new

    @property
    def lost_samples(self) -> int:
        """Samples skipped because the writer lapped this reader (exact)."""
        return self.reader.lost_samples

    def pull_into(self, data: np.ndarray, ts: np.ndarray, timeout: float = 0.0) -> int:
        """Up to ``len(data)`` new rows into ``data`` and ``ts`` (waiting up to ``timeout`` for
        the first); the zero-allocation path. Raises ``pylsl.util.LostError`` once the writer
        is gone and everything it committed was pulled."""
        n = self.reader.pull_into(data, ts, timeout_s=timeout)
        if n == 0:
            self._check_writer()
        return n

    def pull_chunk(
        self,
        timeout: float = 0.0,
        max_samples: int = 1024,
        dest_obj: Any = None,
        min_samples: int | None = None,
        as_numpy: bool | None = None,
    ) -> tuple[Any, np.ndarray]:
        """pylsl's ``pull_chunk``: with ``timeout`` > 0 wait for ``min_samples`` (default: a full
        ``max_samples``, as liblsl does) or the timeout, then take what is there."""
        r = self.reader
        if dest_obj is not None:
            out = dest_obj if isinstance(dest_obj, np.ndarray) else np.frombuffer(
                dest_obj, dtype=self.dtype).reshape(-1, self.channel_count)  # fmt: skip
            max_samples = min(max_samples, len(out))
        else:
            out = np.empty((max_samples, self.channel_count), dtype=self.dtype)
        if timeout > 0:
            want = min(min_samples or max_samples, max(1, r.capacity // 2))
            r.wait_for_samples(r.position + want, timeout)
        ts = np.empty(max_samples, dtype=np.float64)
        n = self.pull_into(out[:max_samples], ts)
        if dest_obj is None:
            return (out[:n] if as_numpy else out[:n].tolist()), ts[:n]
        return (out[:n] if as_numpy else None), ts[:n]

    def pull_sample(self, timeout: float = 32000000.0) -> tuple[list | None, float | None]:
        row = np.empty((1, self.channel_count), dtype=self.dtype)
        ts = np.empty(1, dtype=np.float64)
        n = self.pull_into(row, ts, timeout)
        return (row[0].tolist(), float(ts[0])) if n else (None, None)

    # -- liveness -------------------------------------------------------------------------------
    def _check_writer(self) -> None:
        """After a quiet pull: is the writer still there? Raise LostError once it is gone and
        nothing it committed is left to pull (what pylsl does when an outlet vanishes)."""
        now = time.monotonic()
        r = self.reader
        if r.writer_problem is None and now - self._checked_at < LIVENESS_EVERY_S:
            return
        self._checked_at = now
        if r.writer_state() != "alive" and r.n_new <= 0:
            from pylsl.util import LostError

            raise LostError(r.writer_problem or f"the writer of {r.name!r} is gone")

    def stats(self) -> dict[str, Any]:
        return self.reader.stats()


def ring_summary(ring: RingInlet | None) -> dict[str, Any]:
    """What a consumer reports about its transport: ``{"transport": "lsl"}``, or the ring's
    segment, the samples this reader lost by being lapped, and why the writer went away."""
    if ring is None:
        return {"transport": "lsl"}
    r = ring.reader
    return {
        "transport": "shm",
        "segment": r.segment,
        "lost_samples": r.lost_samples,
        "writer_problem": r.writer_problem,
    }


def ring_inlet_for(full_info: Any, transport: str = "auto", logger: Any = None) -> RingInlet | None:
    """The ring behind an LSL stream, as an inlet, when it can be read here; else None (read LSL).

    ``full_info`` must be the full info (``inlet.info()``: the short one from a resolve has no
    ``desc``). ``transport``: ``"lsl"`` never uses a ring, ``"auto"`` and ``"shm"`` use it when the
    stream's ring is on this machine, alive, and readable by this user.
    """
    if check_transport(transport) == "lsl":
        return None
    from shared_utils.streams.shm.announce import ring_for_lsl

    try:
        d = ring_for_lsl(full_info)
        if d is None:
            return None
        reader = ShmReader(d["name"], session=d["session"], logger=logger)
    except (ShmError, OSError, KeyError, ValueError) as exc:
        (logger or log).info("shm ring not usable; reading over LSL", error=str(exc))
        return None
    if reader.uid != d.get("uid"):  # replaced between the check and the attach
        reader.close()
        return None
    return RingInlet(reader, full_info)


def open_ring_inlet(
    name: str, timeout_s: float, session: str | None = None, logger: Any = None
) -> RingInlet:
    """Attach to the ring of stream ``name`` by name (no LSL), waiting up to ``timeout_s`` for it
    to appear; raises :class:`RingNotFoundError` (listing the rings there are) or
    :class:`WriterGoneError` after that."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return RingInlet(ShmReader(name, session=session, logger=logger))
        except (RingNotFoundError, WriterGoneError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
