"""The ring's byte layout (version 1), its names in /dev/shm, and a typed view of a mapped ring.

docs/shm-transport.md describes the same layout for writers in other languages; keep the two in
step. Everything is little-endian. One segment holds, in order:

    [0, 4096)                 header page: fixed fields, hot counters, reader table
    [4096, data_offset)       metadata: UTF-8 JSON, NUL-padded (may be empty: "{}" is assumed)
    [data_offset, ts_offset)  samples: capacity rows x channels, row-major (row = one sample)
    [ts_offset, total_size)   timestamps: capacity float64 (LSL clock = CLOCK_MONOTONIC seconds)

Sample number k (counted from 0 since the ring was created) lives in row k % capacity. Two
counters make the ring a seqlock over its write head: ``write_start`` (claimed: rows of samples
below ``write_start - capacity`` may be overwritten) and ``write_end`` (committed: samples below
it are complete). A reader copies, then re-reads ``write_start`` and discards what the writer may
have touched meanwhile, so a torn or lapped copy is never delivered and every skipped sample is
counted.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"CLMESHRB"
VERSION = 1
HEADER_SIZE = 4096
PAGE = 4096
MAX_READERS = 32
READER_SLOT_SIZE = 64
READER_TABLE = 1024
NAME_OFF, NAME_LEN = 256, 256
TYPE_OFF, TYPE_LEN = 512, 64
# Offsets of the locks (one byte each, beyond the file's end: they lock nothing but themselves).
LOCK_WRITER = 1 << 40
LOCK_READER0 = LOCK_WRITER + 1

# state (u32 at 76)
STATE_LIVE, STATE_CLOSED = 1, 2

# Channel formats: LSL's numbering, so the field's tools and ours agree.
DTYPE_CODES: dict[str, int] = {
    "float32": 1, "float64": 2, "int32": 4, "int16": 5, "int8": 6, "int64": 7,
}  # fmt: skip
CODE_DTYPES = {v: np.dtype(k).newbyteorder("<") for k, v in DTYPE_CODES.items()}

# Fixed header fields: name -> (offset, struct format).
FIELDS: dict[str, tuple[int, str]] = {
    "magic": (0, "8s"),
    "version": (8, "<I"),
    "header_size": (12, "<I"),
    "dtype_code": (16, "<I"),
    "itemsize": (20, "<I"),
    "channels": (24, "<I"),
    "max_readers": (28, "<I"),
    "srate": (32, "<d"),
    "capacity": (40, "<Q"),
    "data_offset": (48, "<Q"),
    "ts_offset": (56, "<Q"),
    "total_size": (64, "<Q"),
    "writer_pid": (72, "<I"),
    "state": (76, "<I"),
    "created_lsl": (80, "<d"),
    "created_unix": (88, "<d"),
    "uid": (96, "16s"),
    "meta_size": (112, "<Q"),
}
# Hot line (128..191): u64 write_start @128, u64 write_end @136, u32 notify @144 (futex word),
# f64 last_commit_lsl @152.
HOT_OFF = 128
NOTIFY_OFF = 144
# Reader slot i at READER_TABLE + 64 i: u32 pid @0, u32 flags @4, u64 position @8,
# u64 lost @16, f64 last_active_lsl @24.

PREFIX = "clmesh"
SESSION_ENV = "MESH_SHM_SESSION"
_SAFE = re.compile(r"[A-Za-z0-9_.-]")


def session() -> str:
    """Names of one mesh share a session (``$MESH_SHM_SESSION``, default ``default``)."""
    s = os.environ.get(SESSION_ENV, "") or "default"
    return "".join(c if _SAFE.fullmatch(c) and c != "." else "_" for c in s)


def _escape(name: str) -> str:
    return "".join(
        c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in name
    )


def segment_name(stream: str, sess: str | None = None) -> str:
    """``clmesh.<session>.<stream>`` with unsafe characters %-escaped (``/dev/shm`` file name)."""
    if not stream:
        raise ValueError("a stream name is required")
    name = f"{PREFIX}.{sess or session()}.{_escape(stream)}"
    if len(name.encode()) > 250:
        raise ValueError(f"stream name too long for a shared-memory name: {stream[:40]!r}...")
    return name


def session_prefix(sess: str | None = None) -> str:
    return f"{PREFIX}.{sess or session()}."


def round_up(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class Geometry:
    """Where everything is, computed once from channels, dtype, capacity and metadata size."""

    channels: int
    dtype: np.dtype
    capacity: int
    meta_size: int
    data_offset: int = field(init=False)
    ts_offset: int = field(init=False)
    total_size: int = field(init=False)

    def __post_init__(self) -> None:
        data_off = HEADER_SIZE + self.meta_size
        ts_off = data_off + round_up(self.capacity * self.channels * self.dtype.itemsize, 64)
        object.__setattr__(self, "data_offset", data_off)
        object.__setattr__(self, "ts_offset", ts_off)
        object.__setattr__(self, "total_size", round_up(ts_off + 8 * self.capacity, PAGE))


def meta_bytes(meta: dict[str, Any]) -> bytes:
    raw = json.dumps(meta, separators=(",", ":")).encode()
    return raw + b"\0" * (round_up(len(raw) + 1, PAGE) - len(raw))


class RingView:
    """Typed access to one mapped ring: header fields, hot counters, reader slots and arrays.

    Holds numpy views into the mapping; :meth:`release` drops them so the mmap can be closed.
    """

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm = mm
        if len(mm) < HEADER_SIZE or mm[0:8] != MAGIC:
            raise ValueError("not a closedloop-mesh ring (bad magic)")
        ver = self.get("version")
        if ver != VERSION:
            raise ValueError(f"ring layout version {ver}; this code reads version {VERSION}")
        code = self.get("dtype_code")
        if code not in CODE_DTYPES:
            raise ValueError(f"unknown channel format code {code}")
        self.dtype = CODE_DTYPES[code]
        self.channels = self.get("channels")
        self.capacity = self.get("capacity")
        self.srate = self.get("srate")
        self.max_readers = min(self.get("max_readers"), MAX_READERS)
        if self.get("itemsize") != self.dtype.itemsize or self.channels < 1 or self.capacity < 1:
            raise ValueError("inconsistent ring header (itemsize, channels or capacity)")
        data_off, ts_off = self.get("data_offset"), self.get("ts_offset")
        if ts_off + 8 * self.capacity > len(mm) or data_off < HEADER_SIZE:
            raise ValueError("ring header points beyond the segment")
        self.hot = np.frombuffer(mm, dtype="<u8", count=2, offset=HOT_OFF)
        self.notify = np.frombuffer(mm, dtype="<u4", count=1, offset=NOTIFY_OFF)
        self.last_commit = np.frombuffer(mm, dtype="<f8", count=1, offset=152)
        self.slots = np.frombuffer(
            mm, dtype="<u8", count=self.max_readers * 8, offset=READER_TABLE
        ).reshape(self.max_readers, 8)
        self.slot_pids = np.frombuffer(
            mm, dtype="<u4", count=self.max_readers * 16, offset=READER_TABLE
        ).reshape(self.max_readers, 16)[:, 0]
        self.slot_f64 = self.slots.view("<f8")
        n = self.capacity * self.channels
        self.data = np.frombuffer(mm, self.dtype, n, data_off).reshape(self.capacity, self.channels)
        self.ts = np.frombuffer(mm, dtype="<f8", count=self.capacity, offset=ts_off)

    # ------------------------------------------------------------------------------ fields
    def get(self, name: str) -> Any:
        off, fmt = FIELDS[name]
        return struct.unpack_from(fmt, self.mm, off)[0]

    def set(self, name: str, value: Any) -> None:
        off, fmt = FIELDS[name]
        struct.pack_into(fmt, self.mm, off, value)

    @property
    def stream_name(self) -> str:
        return bytes(self.mm[NAME_OFF : NAME_OFF + NAME_LEN]).split(b"\0", 1)[0].decode()

    @property
    def stream_type(self) -> str:
        return bytes(self.mm[TYPE_OFF : TYPE_OFF + TYPE_LEN]).split(b"\0", 1)[0].decode()

    @property
    def uid(self) -> str:
        return self.get("uid").hex()

    def meta(self) -> dict[str, Any]:
        size = self.get("meta_size")
        raw = bytes(self.mm[HEADER_SIZE : HEADER_SIZE + size]).split(b"\0", 1)[0]
        try:
            out = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return out if isinstance(out, dict) else {}

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (what ``list_rings`` shows)."""
        return {
            "name": self.stream_name,
            "type": self.stream_type,
            "channels": self.channels,
            "srate": self.srate,
            "format": self.dtype.name,
            "capacity": self.capacity,
            "capacity_s": self.capacity / self.srate if self.srate > 0 else None,
            "writer_pid": self.get("writer_pid"),
            "uid": self.uid,
            "written": int(self.hot[1]),
            "closed": self.get("state") == STATE_CLOSED,
            "size_bytes": len(self.mm),
        }

    def release(self) -> None:
        for attr in (
            "hot",
            "notify",
            "last_commit",
            "slots",
            "slot_pids",
            "slot_f64",
            "data",
            "ts",
        ):
            self.__dict__.pop(attr, None)


def init_header(
    mm: mmap.mmap,
    geo: Geometry,
    *,
    srate: float,
    stream: str,
    stream_type: str,
    pid: int,
    created_lsl: float,
    created_unix: float,
    uid: bytes,
    meta: bytes,
) -> None:
    """Write a fresh header (state LIVE, counters 0) into a zero-filled mapping."""
    vals = {
        "magic": MAGIC, "version": VERSION, "header_size": HEADER_SIZE,
        "dtype_code": DTYPE_CODES[geo.dtype.name], "itemsize": geo.dtype.itemsize,
        "channels": geo.channels, "max_readers": MAX_READERS, "srate": float(srate),
        "capacity": geo.capacity, "data_offset": geo.data_offset, "ts_offset": geo.ts_offset,
        "total_size": geo.total_size, "writer_pid": pid, "state": STATE_LIVE,
        "created_lsl": created_lsl, "created_unix": created_unix, "uid": uid,
        "meta_size": len(meta),
    }  # fmt: skip
    for k, v in vals.items():
        if k != "magic":
            off, fmt = FIELDS[k]
            struct.pack_into(fmt, mm, off, v)
    for off, ln, text in ((NAME_OFF, NAME_LEN, stream), (TYPE_OFF, TYPE_LEN, stream_type)):
        raw = text.encode()[: ln - 1]
        mm[off : off + len(raw)] = raw
    mm[HEADER_SIZE : HEADER_SIZE + len(meta)] = meta
    mm[0:8] = MAGIC  # last: a reader that sees the magic sees a complete header
