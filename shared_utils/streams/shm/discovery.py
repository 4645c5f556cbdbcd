"""Finding rings on this host, and removing the rings of writers that died.

A ring of stream ``S`` in session ``X`` is the file ``/dev/shm/clmesh.X.S`` (see
:func:`layout.segment_name`). Its writer holds an exclusive lock on one byte of it for as long as
it lives; the kernel drops that lock when the writer dies, however it dies. So "is this ring
stale" is one non-blocking lock attempt, with no pid guessing: a ring whose lock can be taken has
no writer and is removed by :func:`sweep_stale` (writers sweep their session when they start;
the control room sweeps when the mesh stops; ``python -m shared_utils.streams.shm sweep`` by
hand).
"""

from __future__ import annotations

import mmap
import os
from typing import Any

from shared_utils.streams.shm import _os, layout
from shared_utils.streams.shm.layout import LOCK_READER0, LOCK_WRITER, RingView

TMP_MARK = ".tmp-"
TMP_MIN_AGE_S = 10.0  # a half-made ring younger than this may be under construction


def open_ring(seg: str) -> tuple[int, mmap.mmap, RingView]:
    """Open and map segment ``seg``; ValueError if it is not a valid ring (fd closed then)."""
    fd = _os.open_segment(seg)
    mm = None
    try:
        mm = _os.map_segment(fd)
        return fd, mm, RingView(mm)
    except (ValueError, OSError):
        if mm is not None:
            mm.close()
        os.close(fd)
        raise


def close_ring(fd: int, mm: mmap.mmap | None, view: RingView | None) -> None:
    """Drop our views, unmap (unless a caller still holds a view: then the GC unmaps) and close."""
    if view is not None:
        view.release()
    if mm is not None:
        try:
            mm.close()
        except BufferError:  # a window() view is still alive; the mapping goes with it
            pass
    os.close(fd)


def writer_alive(fd: int) -> bool:
    return _os.is_locked(fd, LOCK_WRITER)


def _same_file(seg: str, fd: int) -> bool:
    try:
        return os.stat(_os.segment_path(seg)).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def remove_if_stale(seg: str) -> dict[str, Any] | None:
    """Unlink ring ``seg`` if no writer holds it; returns what was removed (None: kept or gone)."""
    try:
        fd = _os.open_segment(seg)
    except FileNotFoundError:
        return None
    try:
        if not _os.try_lock(fd, LOCK_WRITER):
            return None  # a live writer
        if not _same_file(seg, fd):  # replaced under us by a new writer: not ours to remove
            return None
        info: dict[str, Any] = {"segment": seg}
        try:
            mm = _os.map_segment(fd)
            try:
                view = RingView(mm)
                info.update(view.describe())
                info["torn_samples"] = int(view.hot[0]) - int(view.hot[1])
                view.release()
            finally:
                mm.close()
        except (ValueError, OSError):
            info["invalid"] = True
        _os.unlink_segment(seg)
        return info
    finally:
        os.close(fd)


def sweep_stale(sess: str | None = None, all_sessions: bool = False) -> list[dict[str, Any]]:
    """Remove every ring of this session (or of all sessions) whose writer is gone.

    A half-made ring (``.tmp-`` name) is removed once it is older than a few seconds, so a
    writer being created right now is left alone.
    """
    prefix = f"{layout.PREFIX}." if all_sessions else layout.session_prefix(sess)
    removed = []
    for seg in _os.list_segments(prefix):
        if TMP_MARK in seg and _os.segment_age_s(seg) < TMP_MIN_AGE_S:
            continue
        info = remove_if_stale(seg)
        if info is not None:
            removed.append(info)
    return removed


def readers_of(fd: int, view: RingView) -> list[dict[str, Any]]:
    """The reader table: pid, position, lag, lost and whether the reader is still alive."""
    out = []
    written = int(view.hot[1])
    for i in range(view.max_readers):
        pid = int(view.slot_pids[i])
        if pid:
            pos = int(view.slots[i, 1])
            out.append({
                "slot": i, "pid": pid, "position": pos, "behind": written - pos,
                "lost": int(view.slots[i, 2]), "last_read_lsl": float(view.slot_f64[i, 3]),
                "alive": _os.is_locked(fd, LOCK_READER0 + i),
            })  # fmt: skip
    return out


def list_rings(sess: str | None = None, all_sessions: bool = False) -> list[dict[str, Any]]:
    """Every ring on this host in the session: metadata, writer liveness and its readers."""
    prefix = f"{layout.PREFIX}." if all_sessions else layout.session_prefix(sess)
    out = []
    for seg in _os.list_segments(prefix):
        if TMP_MARK in seg:
            continue
        try:
            fd, mm, view = open_ring(seg)
        except (ValueError, OSError) as exc:
            out.append({"segment": seg, "invalid": str(exc)})
            continue
        try:
            d = view.describe()
            d.update(segment=seg, writer_alive=writer_alive(fd), readers=readers_of(fd, view))
            out.append(d)
        finally:
            close_ring(fd, mm, view)
    return out
