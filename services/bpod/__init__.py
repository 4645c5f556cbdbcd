"""Bpod state machine module: pyserial driver, JSON state machines, trials to LSL and JSON lines.

Layers (each importable without sockets except ``server``): ``state_machine`` (named description),
``hardware`` (names from the device's self-description), ``compiler`` (bytes + replay tables),
``trial`` (event stream parser, state replay), ``driver`` (serial I/O), ``service`` (one box:
LSL markers, trials file, run thread), ``server`` (protocol commands), ``emulator`` (software Bpod).
"""
