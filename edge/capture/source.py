"""What every camera source is: the ``Source`` interface the capture reads from, a frame's trigger stamp, and the
one function that masks credentials in a source's URI or pipeline. Its own module so the sources that live in
modules of their own (edge/capture/gstreamer.py, edge/capture/genicam.py) and the capture that opens them
(edge/capture/frames.py) import it rather than each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import numpy as np

OPEN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TriggerStamp:
    """A frame the camera took on a trigger (GenICam trigger mode): the camera's own count and time of it."""

    count: int  # the camera's frame count (GigE Vision block id): one per trigger in trigger mode
    at: float  # time.time() of the trigger, as near as the camera tells it
    device: str  # the camera that counted (serial number or device id): part ids are "<device>-<count>"

    @property
    def part_id(self) -> str:
        return f"{self.device}-{self.count}"


SECRET_PARAM_WORDS = ("pass", "pwd", "token", "secret", "key", "auth", "sig", "credential", "session")


def _mask_params(text: str) -> str:
    """``a=1&password=x`` -> ``a=1&password=***`` (any parameter whose name looks like a credential)."""
    parts = []
    for piece in text.split("&"):
        name, eq, value = piece.partition("=")
        if eq and value and any(w in unquote(name).lower() for w in SECRET_PARAM_WORDS):
            piece = f"{name}=***"
        parts.append(piece)
    return "&".join(parts)


def safe_uri(uri: str) -> str:
    """``uri`` with credentials masked: the whole userinfo (``user:pass@``, also when the password holds
    ``@`` or ``/``) and the values of credential-like query/fragment parameters (``?token=``,
    ``password=``, ``api_key=``...). The one masking function for logs, /status and /readyz."""
    if "!" in uri and "appsink" in uri:  # a GStreamer pipeline: URLs and credential properties inside it
        return _mask_pipeline(uri)
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an invalid IPv6 literal: show nothing that could hold a secret
        return uri.split("://", 1)[0] + "://***" if "://" in uri else "***"
    if "://" not in uri:  # a device index or a file path: nothing to mask but a query-like tail
        return _mask_params(uri) if "=" in uri else uri
    scheme, rest = uri.split("://", 1)
    # The authority ends at the first '/', '?' or '#', but a password may contain '/' or '@': whatever
    # stands before the LAST '@' ahead of the query is userinfo (over-masking a path with '@' is harmless).
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    if "@" in head:
        rest = "***@" + rest[head.rindex("@") + 1 :]
    masked = f"{scheme}://{rest}"
    if parts.query or parts.fragment:
        base, sep, tail = masked.partition("?") if "?" in masked else masked.partition("#")
        query, hsep, frag = tail.partition("#") if sep == "?" else ("", "#", tail)
        masked = base + sep + _mask_params(query) if sep == "?" else base
        if hsep and frag:
            masked += "#" + _mask_params(frag)
    return masked


def _mask_pipeline(pipeline: str) -> str:
    """A GStreamer pipeline with every URL in it (``location=rtsp://user:pw@...``) passed through ``safe_uri`` and
    the values of credential-like properties (``user-pw=``, ``proxy-pw=``) masked."""
    out = []
    for word in pipeline.split(" "):
        name, eq, value = word.partition("=")
        if eq and value and any(w in name.lower() for w in SECRET_PARAM_WORDS + ("pw",)):
            word = f"{name}=***"
        elif eq and "://" in value:
            word = f"{name}={safe_uri(value)}"
        out.append(word)
    return " ".join(out)


class Source:
    """One open source. ``read()`` -> ``(ok, image)``; ``finite`` sources end instead of failing.

    A source that waits for triggers (``awaits_trigger``) returns ``(True, None)`` when no trigger came within its
    poll time but the camera answers: no frame is expected then, so that is neither a failure nor a stall. A frame
    taken on a trigger leaves its ``TriggerStamp`` in ``stamp`` until the next read."""

    finite = False
    fps: float | None = None
    awaits_trigger = False
    stamp: TriggerStamp | None = None

    def read(self, decode: bool = True) -> tuple[bool, np.ndarray | None]:
        """The next frame; ``decode=False`` only advances past it (``(ok, None)``)."""
        raise NotImplementedError

    def release(self) -> None:
        pass
