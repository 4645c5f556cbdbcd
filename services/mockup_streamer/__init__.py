"""Mockup streamer: synthetic EEG with alpha high/low states and markers, or XDF replay, over LSL."""
