"""Installed package versions, for run records, model sidecars and benchmark reports."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def installed_versions(*names: str) -> dict[str, str]:
    """``{name: version}`` of those of ``names`` that are installed (the others are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
