"""Logging set-up shared by every subcommand (the daemon and the CLI)."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None, fmt: str = "text") -> None:
    """Configure the root logger once. ``BOXINSPECT_LOG_LEVEL`` overrides the default level."""
    level = level or os.environ.get("BOXINSPECT_LOG_LEVEL", "INFO")
    if isinstance(level, str):
        level = level.upper()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler()
    if fmt == "json":
        # One JSON object per line, tracebacks included (exc_info, stack_info) and any extra= fields.
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    # TensorFlow and friends are chatty; keep their noise out of an operator's log.
    for noisy in ("absl", "tensorflow", "h5py", "matplotlib", "PIL", "urllib3", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

