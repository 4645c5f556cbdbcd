"""Public path of the module server: ``from shared_utils.server import DefaultServer``.

The transport lives in :mod:`shared_utils.protocol.server`, what a line means in
:mod:`shared_utils.protocol.dispatch`; this module keeps the documented import path working.
"""

from shared_utils.protocol.server import MAX_CONNECTIONS, TOKEN_ENV, DefaultServer, is_loopback

__all__ = ["MAX_CONNECTIONS", "TOKEN_ENV", "DefaultServer", "is_loopback"]
