"""The TFLite interpreter classes a package or a box finder runs on, and the error either raises. No TensorFlow
imported here unless it is the last runtime left.

Runtimes, in the order ``runtime="auto"`` tries them: ``ai_edge_litert.interpreter`` (LiteRT, XNNPACK on CPU),
``tflite_runtime.interpreter`` (legacy, last release 2.14: numpy<2 only, cannot load newer op versions),
``tensorflow.lite`` (last resort, imported lazily). Used by the classifier (edge/judge/classifier.py), the backbone
digest (edge/judge/backbone.py) and the learned box finder (edge/judge/boxfinder.py), which a package may carry, so
this module imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

RUNTIMES: dict[str, str] = {
    "litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}


class ModelError(RuntimeError):
    """A model that cannot be loaded or run. The message is one line saying why."""


def interpreter_class(runtime: str) -> tuple[str, Callable[..., Any]]:
    """Return (runtime name, Interpreter class); ModelError naming every runtime that failed."""
    names = list(RUNTIMES) if runtime == "auto" else [runtime]
    errors = []
    for name in names:
        if name not in RUNTIMES:
            raise ModelError(f"unknown runtime {name!r} (choose auto, {', '.join(RUNTIMES)})")
        try:
            if name == "tensorflow":  # tf.lite is an API alias, not the tensorflow.lite package
                return name, importlib.import_module("tensorflow").lite.Interpreter
            return name, importlib.import_module(RUNTIMES[name]).Interpreter
        except Exception as e:  # ImportError, or a runtime built against another numpy
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise ModelError("no TFLite runtime available (" + "; ".join(errors) + "); pip install ai-edge-litert")
