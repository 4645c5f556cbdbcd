"""Stream watcher service: list LSL streams, watch them, report health, serve windows as JSON."""
