"""Public path of the client: ``from shared_utils.client import ModuleClient``.

The code lives in :mod:`shared_utils.protocol.client`; this module keeps the documented path working.
"""

from shared_utils.protocol.client import ModuleClient

__all__ = ["ModuleClient"]
