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
from pathlib import Path
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


def check_tflite(path: Path) -> None:
    """Refuse a file that is not a whole TFLite flatbuffer before a native interpreter reads it (ModelError, one
    line). LiteRT builds a model from a file without verifying it, so a truncated one (an interrupted copy) can make
    it read past the end: a worker of the test suite crashed once that way (tests/test_classifier.py). Checked here:
    the ``TFL3`` identifier, and (with LiteRT's own schema) that every buffer, every subgraph's tensors and operators
    lie inside the file. Without ``ai_edge_litert`` (the legacy runtimes) only the identifier is checked."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read the model file ({e.strerror or e})") from e
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{path}: corrupt or unsupported .tflite (not a TFLite flatbuffer: no TFL3 identifier)")
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return
    try:
        _walk(schema.Model.GetRootAsModel(data, 0), len(data))
    except Exception as e:  # IndexError, struct.error, ValueError: an offset or a length points past the end
        raise ModelError(f"{path}: corrupt or unsupported .tflite (truncated or damaged: "
                         f"{type(e).__name__}: {' '.join(str(e).split())[:120]})") from e


def _walk(model: Any, size: int) -> None:
    """Touch every offset and length a loader follows (bounds-checked in Python); ValueError past the end."""
    buffers = model.BuffersLength()
    for i in range(buffers):
        b = model.Buffers(i)
        if b.DataLength():
            b.DataAsNumpy()  # numpy.frombuffer raises when the bytes end early
        if b.Offset() and b.Offset() + b.Size() > size:
            raise ValueError(f"buffer {i} lies past the end of the file")
    for s in range(model.SubgraphsLength()):
        g = model.Subgraphs(s)
        for t in range(g.TensorsLength()):
            tensor = g.Tensors(t)
            if tensor.ShapeLength():
                tensor.ShapeAsNumpy()
            if tensor.Buffer() >= max(buffers, 1):
                raise ValueError(f"tensor {t} names buffer {tensor.Buffer()} of {buffers}")
        for o in range(g.OperatorsLength()):
            op = g.Operators(o)
            if op.InputsLength():
                op.InputsAsNumpy()
            if op.OutputsLength():
                op.OutputsAsNumpy()
