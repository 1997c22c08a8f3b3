"""Frames to one decision per part: localise, crop, classify or score anomalies, decide, fuse views, SPC."""
