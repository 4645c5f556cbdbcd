"""Bpod state machine module: pyserial driver, JSON state machines, trials to LSL and JSON lines.

Layers (each importable without sockets): ``state_machine`` (named description), ``hardware``
(names from the device's self-description), ``compiler`` (names -> state matrices) and
``encoding`` (matrices -> ``C`` command bytes), ``trial`` (event stream parser, state replay),
``serial_link`` (timed serial I/O) and ``driver`` (the protocol on it), ``trial_log`` (LSL markers
and the trials file), ``core`` (one box: connection, loading, the run task), ``commands`` (the
command map), ``emulator`` (software Bpod: ``machine``, ``host_ops``, ``cycle``) and
``emulator_process`` (``--emulator``'s child process).
"""
