"""Logging for every module: structured console output plus shipping to the central receiver.

The package holds four concerns, one file each: ``wire`` (the frame format shared with
Dareplane), ``shipper`` (sending frames from a background thread), ``setup`` (configure once per
process, ``get_logger`` anywhere) and ``receiver`` (the central receiver, with ``records``
normalising foreign records). Module authors only need the names re-exported here.
"""

from shared_utils.logging.setup import configure_logging, get_logger, shipper, shutdown_logging
from shared_utils.logging.shipper import LogShipper
from shared_utils.logging.wire import (
    DEFAULT_LOG_SERVER,
    LOG_SERVER_ENV,
    MAX_FRAME_BYTES,
    SCHEMA,
    encode_frame,
    parse_log_server,
    wire_record,
)

__all__ = [
    "DEFAULT_LOG_SERVER",
    "LOG_SERVER_ENV",
    "MAX_FRAME_BYTES",
    "SCHEMA",
    "LogShipper",
    "configure_logging",
    "encode_frame",
    "get_logger",
    "parse_log_server",
    "shipper",
    "shutdown_logging",
    "wire_record",
]
