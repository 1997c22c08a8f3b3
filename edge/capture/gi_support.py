"""PyGObject (``gi``) for the GStreamer and GenICam sources, imported once, with an error that says what to install.

The edge install does not need it: only ``source.kind: gstreamer`` (Gst) and ``source.kind: genicam`` (Aravis)
import it, when the camera is opened. It comes from the distribution (Debian / Pi OS ``python3-gi`` with
``gir1.2-gstreamer-1.0`` and ``gir1.2-aravis-0.8``), made visible to the daemon's venv by
``scripts/link-system-gi.sh`` (docs/DEPLOY.md, "Cameras": why that and not PyPI's PyGObject).
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType

_lock = threading.Lock()
_loaded: dict[str, ModuleType] = {}

HINTS = {
    "Gst": "apt install python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good",
    "GstVideo": "apt install gir1.2-gst-plugins-base-1.0",
    "GstApp": "apt install gir1.2-gst-plugins-base-1.0",
    "Aravis": "apt install python3-gi gir1.2-aravis-0.8",
}
VERSIONS = {"Gst": "1.0", "GstVideo": "1.0", "GstApp": "1.0", "Aravis": "0.8"}


class GiMissing(RuntimeError):
    """PyGObject or a GObject-introspection namespace is not installed; the message says what to install."""


def require(namespace: str) -> ModuleType:
    """``gi.repository.<namespace>`` at the version the sources are written for (``Gst`` is initialised)."""
    with _lock:
        if namespace in _loaded:
            return _loaded[namespace]
        hint = HINTS.get(namespace, "")
        try:
            gi = importlib.import_module("gi")
        except ImportError as e:
            raise GiMissing(
                f"PyGObject (gi) is not importable ({e}): {hint}, then scripts/link-system-gi.sh VENV "
                "(or make the venv with the system's python3 and --system-site-packages)"
            ) from e
        try:
            gi.require_version(namespace, VERSIONS[namespace])
            module = importlib.import_module(f"gi.repository.{namespace}")
        except (ValueError, ImportError) as e:
            raise GiMissing(f"GObject introspection for {namespace} {VERSIONS[namespace]} is missing ({e}): {hint}") from e
        if namespace == "Gst":
            module.init(None)
        _loaded[namespace] = module
        return module
