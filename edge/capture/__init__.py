"""Frames in: camera sources (OpenCV, GStreamer, GenICam), trigger stamps, the region of interest."""
