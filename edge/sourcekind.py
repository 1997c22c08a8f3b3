"""What kind of source a ``source.uri`` names (camera, stream, file, folder), from its shape alone.

Its own module so the config check (edge/config.py) and the capture (edge/capture.py, which imports the
config) can both use it without importing each other.
"""

from __future__ import annotations

from pathlib import Path

STREAM_SCHEMES = {"rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt"}


def guess_kind(uri: str) -> str:
    """``gstreamer`` (a pipeline), ``usb``, ``rtsp`` (any network stream), ``folder`` or ``file`` from the shape of
    ``uri``."""
    u = uri.strip()
    if "!" in u and "appsink" in u:  # a GStreamer pipeline (edge/gstreamer_source.py)
        return "gstreamer"
    if u.isdigit() or u.startswith("/dev/video"):
        return "usb"
    if "://" in u and u.split("://", 1)[0].lower() in STREAM_SCHEMES:
        return "rtsp"
    p = Path(u)
    if p.is_dir() or (not p.exists() and (u.endswith("/") or not p.suffix)):
        return "folder"
    return "file"
