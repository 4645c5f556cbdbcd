"""The module protocol: framing (``framing``), the Dareplane dialect (``dareplane``), command
tables (``commands``), dispatch and built-ins (``dispatch``, ``builtins``, ``tasks``), the TCP
transport (``server``, ``io_loop``, ``connection``), the client (``client``), the conformance
check (``conformance`` with ``conformance_probe``, ``conformance_rules`` and
``conformance_recommended``) and the module entry point (``module``).

The framing names are re-exported here: ``from shared_utils.protocol import Framer`` keeps working.
"""

from shared_utils.protocol.framing import (
    MAX_LINE_BYTES,
    Framer,
    LineTooLong,
    Mode,
    ProtocolError,
    Request,
    encode_reply,
    parse_request,
)

__all__ = [
    "MAX_LINE_BYTES",
    "Framer",
    "LineTooLong",
    "Mode",
    "ProtocolError",
    "Request",
    "encode_reply",
    "parse_request",
]
