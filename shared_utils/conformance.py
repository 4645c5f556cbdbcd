"""Public path of the conformance check: ``python -m shared_utils.conformance HOST:PORT``.

The code lives in :mod:`shared_utils.protocol.conformance`; this module keeps the documented
command and import path working.
"""

from shared_utils.protocol.conformance import CheckResult, failures, main, run_checks, summary

__all__ = ["CheckResult", "failures", "main", "run_checks", "summary"]

if __name__ == "__main__":
    raise SystemExit(main())
