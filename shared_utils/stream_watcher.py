"""Public path of the LSL consumer: ``from shared_utils.stream_watcher import StreamWatcher``.

The watcher lives in :mod:`shared_utils.streams.watcher` and discovery in
:mod:`shared_utils.streams.lsl`; this module keeps the documented import path working.
"""

from shared_utils.streams.lsl import (
    FORMAT_DTYPES,
    FORMAT_NAMES,
    AmbiguousStreamError,
    StreamNotFoundError,
    channel_labels,
    describe,
    describe_all,
    list_streams,
    resolve,
)
from shared_utils.streams.watcher import StreamWatcher

__all__ = [
    "AmbiguousStreamError",
    "FORMAT_DTYPES",
    "FORMAT_NAMES",
    "StreamNotFoundError",
    "StreamWatcher",
    "channel_labels",
    "describe",
    "describe_all",
    "list_streams",
    "resolve",
]
