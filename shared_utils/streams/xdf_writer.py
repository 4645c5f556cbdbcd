"""A native XDF 1.0 writer, usable on its own and by the recorder service.

Why native: LabRecorder builds every sample with a string stream and buffers in an ofstream, which
caps it near 250 k samples/s and leaves half-written chunks behind after a crash. Here each chunk is
encoded in one numpy pass and handed to the kernel with a single ``writev`` on an unbuffered file
descriptor, so:

- whatever was written survives a ``kill -9`` of the writing process (it is in the page cache), and
  the file always ends on a chunk boundary unless the kill lands inside one ``writev``;
- a failed or short write (disk full, file size limit) is rolled back with ``ftruncate`` to the
  last complete chunk, so the file stays loadable and the error is raised as :class:`XdfWriteError`.

Layout written (XDF 1.0, as read by pyxdf): ``XDF:`` magic, FileHeader, then per stream a
StreamHeader (full LSL info XML), Samples chunks (explicit 8-byte timestamps), ClockOffset chunks,
Boundary chunks, and on :meth:`XdfWriter.close` a StreamFooter per stream.

Example::

    with XdfWriter("out.xdf") as w:
        w.add_stream(1, {"name": "EEG", "type": "EEG", "channel_count": 8,
                         "nominal_srate": 500.0, "channel_format": "float32"})
        w.write_clock_offset(1, collection_time=0.0, offset_value=0.0)
        w.write_samples(1, timestamps, samples)        # (n,), (n, 8)
    # close() wrote the footers

Thread safety: chunks from different threads never interleave (one lock around each write); the
samples of one stream must come from one thread at a time, in time order.
"""

from __future__ import annotations

import datetime as _dt
import os
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from shared_utils.streams.xdf_format import (
    BOUNDARY_UUID,
    CHANNEL_FORMATS,
    MAGIC,
    TAG_BOUNDARY,
    TAG_CLOCK_OFFSET,
    TAG_FILE_HEADER,
    TAG_SAMPLES,
    TAG_STREAM_FOOTER,
    TAG_STREAM_HEADER,
    add_desc,
    chunk_header,
    encode_string_samples,
    parse_info,
    varlen_int,
)


class XdfWriteError(OSError):
    """Writing to the XDF file failed; the file was cut back to its last complete chunk."""


@dataclass
class StreamState:
    """What the writer knows about one stream: format for encoding, totals for the footer."""

    stream_id: int
    name: str
    channel_count: int
    nominal_srate: float
    channel_format: str
    dtype: np.dtype | None
    sample_count: int = 0
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    offsets: list[tuple[float, float]] = field(default_factory=list)
    footer_written: bool = False
    _record: np.dtype | None = None
    _scratch: np.ndarray | None = None

    def record_dtype(self) -> np.dtype:
        """Packed per-sample layout: [u8 ts-bytes=8][f64 timestamp][channels]."""
        if self._record is None:
            self._record = np.dtype(
                [("tsb", "u1"), ("ts", "<f8"), ("v", self.dtype, (self.channel_count,))]
            )
        return self._record

    def scratch(self, n: int) -> np.ndarray:
        """A reusable encode buffer of at least ``n`` records (grows, never shrinks)."""
        if self._scratch is None or len(self._scratch) < n:
            size = max(n, 2 * len(self._scratch) if self._scratch is not None else n)
            self._scratch = np.empty(size, dtype=self.record_dtype())
            self._scratch["tsb"] = 8
        return self._scratch


class XdfWriter:
    """Write one XDF file. See the module docstring for the layout and guarantees."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        header_fields: Mapping[str, str] | None = None,
        stream_desc: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Create the file and write the magic and FileHeader (refuses an existing file by default).

        ``header_fields`` adds elements to the FileHeader XML (e.g. ``{"recorder": "mesh"}``);
        ``stream_desc`` adds ``<desc><tag><key>value</key></tag></desc>`` blocks to every stream
        header (e.g. ``{"session": {"exp_ref": ...}}``).
        """
        self.path = Path(path)
        self._stream_desc = dict(stream_desc or {})
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        flags |= getattr(os, "O_CLOEXEC", 0)
        self._fd: int | None = os.open(self.path, flags, 0o644)
        self._lock = threading.Lock()
        self._streams: dict[int, StreamState] = {}
        self.bytes_written = 0
        self.error: XdfWriteError | None = None
        now = _dt.datetime.now(_dt.UTC).astimezone().strftime("%Y-%m-%dT%H:%M:%S%z")
        extra = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in (header_fields or {}).items())
        xml = f'<?xml version="1.0"?><info><version>1.0</version><datetime>{now}</datetime>{extra}</info>'
        try:
            self._write([MAGIC, chunk_header(TAG_FILE_HEADER, len(xml.encode())), xml.encode()])
        except XdfWriteError:
            self._close_fd()
            raise

    # -- low level -------------------------------------------------------------------------
    def _write(self, parts: list[Any]) -> None:
        """Write one chunk (several buffers) completely, or roll the file back and raise."""
        with self._lock:
            if self._fd is None:
                raise XdfWriteError(f"{self.path} is closed")
            if self.error is not None:
                raise self.error
            start = self.bytes_written
            views = [memoryview(p).cast("B") for p in parts]
            total = sum(len(v) for v in views)
            done = 0
            try:
                while done < total:
                    n = os.writev(self._fd, views)
                    if n <= 0:
                        raise OSError(28, "write returned 0 bytes (no space left?)")
                    done += n
                    while views and n >= len(views[0]):
                        n -= len(views[0])
                        views.pop(0)
                    if views and n:
                        views[0] = views[0][n:]
            except OSError as e:
                err = XdfWriteError(e.errno, f"writing {self.path} failed: {e.strerror or e}")
                self.error = err
                try:
                    os.ftruncate(self._fd, start)
                    os.lseek(self._fd, start, os.SEEK_SET)
                except OSError:
                    pass
                raise err from e
            self.bytes_written = start + total

    def _state(self, stream_id: int) -> StreamState:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise KeyError(f"stream {stream_id} was not added (call add_stream first)") from None

    # -- public API ------------------------------------------------------------------------
    @property
    def streams(self) -> dict[int, StreamState]:
        """Streams added so far, by id (read-only use)."""
        return self._streams

    @property
    def closed(self) -> bool:
        return self._fd is None

    def add_stream(self, stream_id: int, info: Any) -> StreamState:
        """Write a StreamHeader. ``info``: XML text, a pylsl ``StreamInfo``, or a field mapping
        for :func:`stream_info_xml` (name, type, channel_count, nominal_srate, channel_format...).
        """
        if not 0 <= int(stream_id) < 2**32:
            raise ValueError(f"stream_id must fit in 32 bits, got {stream_id}")
        if stream_id in self._streams:
            raise ValueError(f"stream {stream_id} already added")
        xml, values = parse_info(info)
        for tag, fields in self._stream_desc.items():
            xml = add_desc(xml, tag, fields)
        fmt = values["channel_format"]
        dt = CHANNEL_FORMATS[fmt]
        state = StreamState(
            stream_id=int(stream_id),
            name=values["name"],
            channel_count=int(values["channel_count"]),
            nominal_srate=float(values["nominal_srate"]),
            channel_format=fmt,
            dtype=None if dt is None else np.dtype(dt),
        )
        body = xml.encode("utf-8")
        self._write([chunk_header(TAG_STREAM_HEADER, len(body), stream_id), body])
        self._streams[stream_id] = state
        return state

    def write_samples(self, stream_id: int, timestamps: Any, samples: Any) -> int:
        """Write one Samples chunk; returns the number of samples written.

        ``timestamps``: shape (n,) seconds. ``samples``: (n, channels) numeric array-like, or for
        string streams a sequence of n rows of str/bytes. A 1-D numeric array is taken as one
        channel when the stream has one channel.
        """
        st = self._state(stream_id)
        ts = np.ascontiguousarray(timestamps, dtype="<f8").reshape(-1)
        n = len(ts)
        if n == 0:
            return 0
        if st.dtype is None:
            rows = list(samples)
            if len(rows) != n or any(len(r) != st.channel_count for r in rows):
                raise ValueError(f"stream {stream_id}: need {n} rows of {st.channel_count} strings")
            body = encode_string_samples(ts, rows)
            count = varlen_int(n)
            self._write([chunk_header(TAG_SAMPLES, len(count) + len(body), stream_id), count, body])
        else:
            data = np.asarray(samples)
            if data.ndim == 1 and st.channel_count == 1:
                data = data.reshape(-1, 1)
            if data.shape != (n, st.channel_count):
                raise ValueError(
                    f"stream {stream_id}: samples shape {data.shape} != ({n}, {st.channel_count})"
                )
            rec = st.scratch(n)[:n]
            rec["ts"] = ts
            rec["v"] = data
            count = varlen_int(n)
            self._write([chunk_header(TAG_SAMPLES, len(count) + rec.nbytes, stream_id), count, rec])
        with self._lock:
            if st.first_timestamp is None:
                st.first_timestamp = float(ts[0])
            st.last_timestamp = float(ts[-1])
            st.sample_count += n
        return n

    def write_clock_offset(
        self, stream_id: int, collection_time: float, offset_value: float
    ) -> None:
        """Write a ClockOffset chunk: at ``collection_time`` (source clock) the source's clock
        needed ``offset_value`` seconds added to reach the recorder's clock."""
        st = self._state(stream_id)
        body = struct.pack("<dd", float(collection_time), float(offset_value))
        self._write([chunk_header(TAG_CLOCK_OFFSET, len(body), stream_id), body])
        with self._lock:
            st.offsets.append((float(collection_time), float(offset_value)))

    def write_boundary(self) -> None:
        """Write a Boundary chunk (lets readers resynchronise after a damaged region)."""
        self._write([chunk_header(TAG_BOUNDARY, len(BOUNDARY_UUID)), BOUNDARY_UUID])

    def write_footer(self, stream_id: int) -> None:
        """Write the StreamFooter (first/last timestamp, count, clock offsets) for one stream."""
        st = self._state(stream_id)
        if st.footer_written:
            return

        def num(x: float | None) -> str:
            return "0" if x is None else f"{x:.16g}"

        offs = "".join(
            f"<offset><time>{t:.16g}</time><value>{v:.16g}</value></offset>" for t, v in st.offsets
        )
        xml = (
            '<?xml version="1.0"?><info>'
            f"<first_timestamp>{num(st.first_timestamp)}</first_timestamp>"
            f"<last_timestamp>{num(st.last_timestamp)}</last_timestamp>"
            f"<sample_count>{st.sample_count}</sample_count>"
            f"<clock_offsets>{offs}</clock_offsets></info>"
        ).encode()
        self._write([chunk_header(TAG_STREAM_FOOTER, len(xml), stream_id), xml])
        st.footer_written = True

    def flush(self, fsync: bool = True) -> None:
        """Data is already in the kernel after every write; ``fsync`` also forces it to disk.

        The fsync runs on a duplicate descriptor outside the write lock, so chunks from other
        threads keep flowing into the page cache while the disk catches up.
        """
        if not fsync:
            return
        with self._lock:
            if self._fd is None:
                return
            fd = os.dup(self._fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self, footers: bool = True) -> None:
        """Write missing footers (unless ``footers`` is false or a write already failed), close.

        A footer that cannot be written is skipped: pyxdf loads files without footers.
        """
        if self._fd is None:
            return
        if footers and self.error is None:
            for sid in list(self._streams):
                try:
                    self.write_footer(sid)
                except XdfWriteError:
                    break
        self._close_fd()

    def _close_fd(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> XdfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
