"""A real RTSP server (gst-rtsp-server, Debian ``gir1.2-gst-rtsp-server-1.0``) serving one video file, for the tests
of the GStreamer source: ``python tests/rtsp_server.py VIDEO PORT [--codec h264|jpeg]`` serves
``rtsp://127.0.0.1:PORT/demo`` and prints ``ready`` once listening. Every client gets its own playback from the
first frame, at the file's frame rate; the stream ends (RTCP BYE) at the end of the file. Stop it with a signal."""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

ENCODERS = {
    # H.264 as IP cameras send it (openh264 at a high bitrate: the test compares verdicts with the file's)
    "h264": "openh264enc bitrate=20000000 complexity=high gop-size=25 ! h264parse ! rtph264pay name=pay0 pt=96",
    "jpeg": "jpegenc quality=95 ! rtpjpegpay name=pay0 pt=26",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("video")
    ap.add_argument("port", type=int)
    ap.add_argument("--codec", choices=sorted(ENCODERS), default="h264")
    args = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( filesrc location={args.video} ! decodebin ! videoconvert ! video/x-raw,format=I420 ! "
                       f"{ENCODERS[args.codec]} )")
    factory.set_shared(False)
    server.get_mount_points().add_factory("/demo", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
