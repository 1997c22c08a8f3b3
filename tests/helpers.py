"""Helpers shared by several test files (each defined once, here)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.model_package import package_digest, sidecar_path


def edit_sidecar(model: Path, change: Callable[[dict[str, Any]], None], reseal: bool = True) -> dict[str, Any]:
    """Apply ``change`` to the sidecar of ``model``. ``reseal`` recomputes package_sha256, as convert would
    (a legitimately re-made package); without it the edit is a tampering the loader must refuse."""
    side = sidecar_path(model)
    doc = json.loads(side.read_text())
    change(doc)
    if reseal:
        doc["package_sha256"] = package_digest(doc)
    side.write_text(json.dumps(doc, indent=1))
    return doc
