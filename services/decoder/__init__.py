"""Decoder module: calibrate on an XDF recording, decode a live LSL stream, close the loop.

See docs/decoder.md. Core logic (features, classifier, model file, controller, training) imports
no sockets; ``commands.py`` only maps command names onto :class:`core.DecoderService`.
"""
