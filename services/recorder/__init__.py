"""Recorder service: LSL streams into crash-safe XDF files (see docs/recorder.md)."""
