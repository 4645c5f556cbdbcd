"""The operating-system primitives the shared-memory ring needs, in one place (Linux).

Everything POSIX- or Linux-specific about the transport lives here, behind five small pieces:

- :func:`check_supported` says, in words, why the transport cannot run on this OS;
- segments: :func:`create_segment`, :func:`open_segment`, :func:`unlink_segment`,
  :func:`list_segments` (named files in ``/dev/shm``, which is what ``shm_open`` uses on Linux);
- liveness locks: :func:`try_lock`, :func:`unlock`, :func:`is_locked` (open-file-description
  record locks on one byte each; the kernel drops them when their holder dies, even by SIGKILL,
  so "is the owner alive" needs no pid and survives pid reuse);
- wake-ups: :class:`Futex` (``FUTEX_WAIT``/``FUTEX_WAKE`` on a 32-bit word inside the mapping,
  through ``syscall(2)``; bench/shm_wakeup_bench.py measured it against eventfd, ZeroMQ ipc and
  sleep-polling);
- :func:`boot_id`: tells two hosts (or two boots) apart, so a ring named in an LSL stream's
  description is only used where it really is the same machine.

Why not ``multiprocessing.shared_memory``: on CPython 3.11 every attaching process registers the
name with its resource tracker, which unlinks the producer's segment when a reader exits
(bpo-38119); and the locks and futex need the file descriptor and the mapping address, which
``SharedMemory`` keeps private. ``os.open`` + ``mmap`` on ``/dev/shm`` is the same thing
``shm_open`` does, with nothing hidden.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import struct
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: the package imports, its classes raise ShmUnsupportedError
    fcntl = None  # type: ignore[assignment]

SHM_DIR = Path("/dev/shm")
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux x86-64 and aarch64 (32 bytes)
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "armv7l": 240, "i686": 240, "ppc64le": 221}
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1
_INT_MAX = 2**31 - 1


class ShmUnsupportedError(OSError):
    """The shared-memory transport does not run on this operating system (use LSL instead)."""


def check_supported() -> None:
    """Raise :class:`ShmUnsupportedError` with the reason when the transport cannot run here."""
    if not sys.platform.startswith("linux"):
        raise ShmUnsupportedError(
            f"the shared-memory transport needs Linux (/dev/shm, futex); this is {sys.platform}: "
            "use the LSL transport"
        )
    if not SHM_DIR.is_dir():
        raise ShmUnsupportedError(f"{SHM_DIR} does not exist: mount a tmpfs there or use LSL")
    if fcntl is None or not hasattr(fcntl, "F_OFD_SETLK"):
        raise ShmUnsupportedError("open-file-description locks are missing (Linux >= 3.15)")
    if platform.machine() not in _SYS_FUTEX:
        raise ShmUnsupportedError(f"no futex syscall number known for {platform.machine()}")


# --------------------------------------------------------------------------------- segments
def segment_path(name: str) -> Path:
    return SHM_DIR / name


def shm_free_bytes() -> int:
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize


def create_segment(name: str, size: int, mode: int = 0o600) -> int:
    """Create ``/dev/shm/<name>`` exclusively with ``size`` bytes reserved; returns the fd.

    The pages are reserved with ``posix_fallocate`` now, so a full tmpfs is an error here rather
    than a SIGBUS on the first write. Raises FileExistsError if the name exists.
    """
    fd = os.open(segment_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        os.close(fd)
        os.unlink(segment_path(name))
        if exc.errno == errno.ENOSPC:
            raise OSError(
                errno.ENOSPC,
                f"{SHM_DIR} has {shm_free_bytes() / 1e6:.1f} MB free but the ring needs "
                f"{size / 1e6:.1f} MB (containers default to 64 MiB: raise shm_size, or ask "
                "for a shorter ring)",
            ) from None
        raise
    return fd


def open_segment(name: str) -> int:
    """Open an existing segment read-write; FileNotFoundError if it is not there."""
    return os.open(segment_path(name), os.O_RDWR)


def link_segment(tmp_name: str, name: str) -> None:
    """Give segment ``tmp_name`` the final ``name``; FileExistsError if that is taken (atomic)."""
    os.link(segment_path(tmp_name), segment_path(name))


def unlink_segment(name: str) -> bool:
    """Remove the name (mappings stay valid until unmapped); false if it was already gone."""
    try:
        os.unlink(segment_path(name))
        return True
    except FileNotFoundError:
        return False


def list_segments(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def map_segment(fd: int) -> mmap.mmap:
    """Map the whole segment shared, read-write, with its page tables filled in now
    (``MAP_POPULATE``): a first touch on the hot path would otherwise cost a page fault per 4 KiB."""
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    return mmap.mmap(fd, os.fstat(fd).st_size, flags, mmap.PROT_READ | mmap.PROT_WRITE)


def segment_age_s(name: str) -> float:
    try:
        return time.time() - os.stat(segment_path(name)).st_mtime
    except FileNotFoundError:
        return 0.0


# ------------------------------------------------------------------------------------ locks
def _flock(fd: int, cmd: int, kind: int, offset: int) -> int:
    res = fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, offset, 1, 0))
    return _FLOCK.unpack(res)[0]


def try_lock(fd: int, offset: int) -> bool:
    """Take the exclusive lock on byte ``offset`` of ``fd`` without waiting; true if taken."""
    try:
        _flock(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK, offset)
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def unlock(fd: int, offset: int) -> None:
    _flock(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, offset)


def is_locked(fd: int, offset: int) -> bool:
    """True if another open file description holds the lock on byte ``offset``."""
    return _flock(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, offset) != fcntl.F_UNLCK


# ----------------------------------------------------------------------------------- wake-up
class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Futex:
    """Wait for / wake a change of the 32-bit word at ``address`` (shared between processes).

    ``wait`` returns when the word differs from ``expected`` (at once if it already does), when
    woken, or after ``timeout_s``. A waker that changes the word and then calls ``wake`` can never
    be missed: the kernel compares the word and sleeps atomically.
    """

    def __init__(self, address: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._nr = ctypes.c_long(_SYS_FUTEX[platform.machine()])
        self._addr = ctypes.c_void_p(address)
        self._word = ctypes.c_uint32.from_address(address)
        self._ts = _Timespec()
        self._wait_op = ctypes.c_int(_FUTEX_WAIT)
        self._wake_op = ctypes.c_int(_FUTEX_WAKE)
        self._all = ctypes.c_int(_INT_MAX)

    def wait(self, expected: int, timeout_s: float) -> None:
        if timeout_s <= 0:
            return
        sec = int(timeout_s)
        self._ts.tv_sec, self._ts.tv_nsec = sec, int((timeout_s - sec) * 1e9)
        self._syscall(
            self._nr, self._addr, self._wait_op, ctypes.c_uint32(expected),
            ctypes.byref(self._ts), None, 0,
        )  # fmt: skip

    def wake(self) -> None:
        self._syscall(self._nr, self._addr, self._wake_op, self._all, None, None, 0)


def mapping_address(mm: mmap.mmap) -> int:
    """Base address of a mapping (no buffer export is kept, so the mmap can still be closed)."""
    probe = ctypes.c_char.from_buffer(mm)
    try:
        return ctypes.addressof(probe)
    finally:
        del probe


def lsl_clock() -> float:
    """The LSL clock without importing pylsl: liblsl's local_clock() is CLOCK_MONOTONIC here."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def boot_id() -> str:
    """This boot of this machine (Linux): equal on both sides only on the same host."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Best effort, for messages only (the locks above are the real liveness test)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
