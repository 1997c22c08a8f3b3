"""The edge side of boxinspect: the inspection daemon and its parts. It never imports TensorFlow, nor the
``boxinspect`` package (which may import this one)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("boxinspect")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

