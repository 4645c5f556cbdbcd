"""Helpers of the XDF reader that never call pyxdf themselves.

:class:`ChunkSpool` is pyxdf's ``on_chunk`` hook that writes numeric samples to one file per
stream instead of keeping them in memory; :class:`FilePrefix` shows pyxdf only the complete
chunks of a file a crash cut short. ``shared_utils.streams.xdf_reader`` uses both.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChunkSpool", "FilePrefix"]


class FilePrefix(io.RawIOBase):
    """The first ``limit`` bytes of a file, as a seekable stream for pyxdf."""

    def __init__(self, path: Path, limit: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed with this object
        self._limit = limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            return self._f.seek(self._limit + offset)
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b: Any) -> int:
        left = max(0, self._limit - self._f.tell())
        return self._f.readinto(memoryview(b)[:left])

    def close(self) -> None:
        self._f.close()
        super().close()


class ChunkSpool:
    """pyxdf ``on_chunk`` hook: numeric chunks go to one file per stream instead of memory."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.files: dict[int, Any] = {}
        self.meta: dict[int, tuple[np.dtype, int]] = {}
        self.error: Exception | None = None

    def on_chunk(self, values: Any, stamps: Any, info: dict, stream_id: int) -> tuple:
        if self.error is not None or not isinstance(values, np.ndarray):
            return values, stamps, info  # strings stay in memory (markers are small)
        try:
            f = self.files.get(stream_id)
            if f is None:
                f = self.files[stream_id] = open(self.folder / f"stream{stream_id}.bin", "wb")  # noqa: SIM115
                self.meta[stream_id] = (values.dtype.newbyteorder("="), values.shape[1])
            f.write(np.ascontiguousarray(values, dtype=self.meta[stream_id][0]).tobytes())
        except Exception as exc:  # noqa: BLE001 - reported after load_xdf returns
            self.error = exc
            return values, stamps, info
        return np.empty((0, values.shape[1]), values.dtype), stamps, info  # no view: frees it

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def attach(self, s: dict[str, Any]) -> None:
        """Replace the (empty) in-memory samples by a memmap of the spooled file."""
        sid = s["info"].get("stream_id")
        if sid not in self.meta:
            return
        dtype, n_ch = self.meta[sid]
        n = len(s.get("time_stamps", []))  # pyxdf may drop trailing samples (pylsl#67 repair)
        path = self.folder / f"stream{sid}.bin"
        s["time_series"] = (
            np.memmap(path, dtype=dtype, mode="r", shape=(n, n_ch)) if n else np.zeros((0, n_ch))
        )
