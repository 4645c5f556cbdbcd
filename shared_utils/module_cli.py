"""Public path of the module entry point: ``from shared_utils.module_cli import module_options,
run_module``. The code lives in :mod:`shared_utils.protocol.module`.
"""

from shared_utils.protocol.module import module_options, run_module

__all__ = ["module_options", "run_module"]
