"""Public path of the central log receiver: ``python -m shared_utils.log_receiver --port 9020``.

The code lives in :mod:`shared_utils.logging.receiver`; this module keeps the documented command
and import path working.
"""

from shared_utils.logging.receiver import LogReceiver, format_line, main, normalise

__all__ = ["LogReceiver", "format_line", "main", "normalise"]

if __name__ == "__main__":
    main()
