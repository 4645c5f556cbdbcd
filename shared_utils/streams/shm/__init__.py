"""Same-host shared-memory stream transport: a ring per stream in ``/dev/shm``, LSL beside it.

For rates LSL cannot carry between processes (a Neuropixels probe: 384 ch x 30 kHz), a source
writes chunks into a ring and consumers on the host read them with one copy and futex wake-ups;
other hosts keep using the LSL stream the writer also announces. Layout and protocol:
docs/shm-transport.md. Linux only (``ShmUnsupportedError`` elsewhere).

    from shared_utils.streams.shm import ShmWriter, ShmReader

    with ShmWriter("probe0", channels=384, srate=30000, dtype="int16") as w:
        w.push_chunk(chunk)                        # rows of 384 int16, stamped on the LSL clock
    with ShmReader("probe0") as r:                 # another process on the same host
        n = r.pull_into(buf, ts, timeout_s=0.1)    # one copy; r.lost_samples says what was lapped
"""

from shared_utils.streams.shm.discovery import list_rings, sweep_stale
from shared_utils.streams.shm.errors import (
    RingInUseError,
    RingNotFoundError,
    RingTooSmallError,
    ShmError,
    ShmUnsupportedError,
    WriterGoneError,
)
from shared_utils.streams.shm.reader import ShmInlet, ShmReader
from shared_utils.streams.shm.writer import ShmOutlet, ShmWriter

__all__ = [
    "RingInUseError",
    "RingNotFoundError",
    "RingTooSmallError",
    "ShmError",
    "ShmInlet",
    "ShmOutlet",
    "ShmReader",
    "ShmUnsupportedError",
    "ShmWriter",
    "WriterGoneError",
    "list_rings",
    "sweep_stale",
]
