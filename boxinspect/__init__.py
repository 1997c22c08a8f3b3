"""boxinspect: visual inspection for production lines.

Packages: ``training`` (Keras transfer learning and evaluation), ``convert`` (Keras to TFLite with
metadata and an accuracy gate), ``edge`` (the daemon), and this package (CLI, synthetic data, demo).
"""

from edge import __version__

__all__ = ["__version__"]
