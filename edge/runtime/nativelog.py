"""Native libraries' log lines, bounded (issue 24): OpenCV, the FFmpeg inside it, and whatever C code prints on stderr.

These lines never pass through Python's ``logging``, so the rate limits of edge/runtime/ratelimit.py cannot see them.
A corrupt stream is the worst case: FFmpeg's decoder writes one line per damaged macroblock row straight to stderr
(``[mpeg4 @ 0x55…] Error at MB: 86``): a 19-second video with 0.05 % of its bytes garbled gave 2,184 lines, and a
looping source repeats them for ever. Three levers, set once at start-up by :func:`quiet_native_libraries`:

- OpenCV's own logger (``[ WARN:0@…] global cap_….cpp``): ``cv2.utils.logging.setLogLevel`` at ``logging.opencv``
  (default ``error``), unless ``OPENCV_LOG_LEVEL`` is set in the environment (then that wins, as OpenCV documents).
- FFmpeg's decoder messages: OpenCV prints them at FFmpeg's ``AV_LOG_ERROR`` unless ``OPENCV_FFMPEG_LOGLEVEL`` is set;
  at ``logging.opencv: error`` or quieter the daemon sets it to ``AV_LOG_FATAL`` (8) before the first capture opens,
  so a damaged frame is reported by the capture's own rate-limited lines (and ``boxinspect_capture_*`` metrics), not
  per macroblock. ``warning`` and more verbose leave FFmpeg at OpenCV's default. A value already in the environment
  wins.
- What is still printed on stderr: with ``logging.format: json`` fd 2 is read line by line (edge/runtime/logs.py
  ``capture_native_stderr``) and each line is logged through ``RateLimitFilter``, the rule of every other repeated
  line (the first of a kind, then one per interval with "N similar line(s) suppressed"), where a kind is the line
  with its numbers and addresses blanked (:func:`as_template`). In text mode fd 2 stays the process's own (a crash message
  printed just before an abort must still reach the journal), so there only the two levels above apply.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Literal

from edge.runtime.ratelimit import DEFAULT_INTERVAL_S, RateLimitFilter

log = logging.getLogger(__name__)

OpencvLevel = Literal["silent", "fatal", "error", "warning", "info", "debug"]
AV_LOG_FATAL = 8
_NUMBERS = re.compile(r"\b0x[0-9a-fA-F]+\b|\b\d+\b")


def quiet_native_libraries(level: OpencvLevel = "error") -> str:
    """Set OpenCV's and its FFmpeg's log levels (see the module doc); -> a one-line summary for the log."""
    import cv2

    own = os.environ.get("OPENCV_LOG_LEVEL")
    if own is None:
        names = {"silent": "LOG_LEVEL_SILENT", "fatal": "LOG_LEVEL_FATAL", "error": "LOG_LEVEL_ERROR",
                 "warning": "LOG_LEVEL_WARNING", "info": "LOG_LEVEL_INFO", "debug": "LOG_LEVEL_DEBUG"}
        utils_logging = getattr(cv2.utils, "logging", None)  # OpenCV >= 4.9's Python binding
        if utils_logging is not None:
            utils_logging.setLogLevel(getattr(utils_logging, names[level]))
        else:  # older bindings (the floors' 4.8): OpenCV reads its variable when it first logs
            os.environ["OPENCV_LOG_LEVEL"] = level.upper()
    ffmpeg = os.environ.get("OPENCV_FFMPEG_LOGLEVEL")
    if ffmpeg is None and level in ("silent", "fatal", "error"):
        ffmpeg = os.environ["OPENCV_FFMPEG_LOGLEVEL"] = str(AV_LOG_FATAL)  # read when the first capture opens
    summary = (f"OpenCV log level {own or level}{' (OPENCV_LOG_LEVEL)' if own else ''}, its FFmpeg "
               f"{'at ' + ffmpeg if ffmpeg else 'at its default (errors)'}")
    log.debug("native logs: %s", summary)
    return summary


def as_template(line: str) -> tuple[str, tuple[str, ...]]:
    """A native line as a logging template and its arguments: numbers and addresses become ``%s`` (so the rate
    rule of ``RateLimitFilter``, keyed on the template, sees one kind where only they differ)."""
    parts = _NUMBERS.split(line.replace("%", "%%"))
    return "%s".join(parts), tuple(_NUMBERS.findall(line))


def limit_native_logger(native: logging.Logger, interval: float = DEFAULT_INTERVAL_S) -> logging.Logger:
    """``native`` (the logger of the lines read from fd 2) with the rate rule of every other repeated line
    (idempotent)."""
    if not any(isinstance(f, RateLimitFilter) for f in native.filters):
        native.addFilter(RateLimitFilter(interval))
    return native
