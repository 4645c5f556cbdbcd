"""Data flow: LSL discovery and configuration (``lsl``), the ring-buffered consumer
(``watcher``, ``ring_buffer``), XDF files (``xdf_reader`` + ``xdf_spool``, ``xdf_writer``) and
fixed-rate loops (``event_loop``, ``timing``). Nothing here knows about module servers or commands.
"""
