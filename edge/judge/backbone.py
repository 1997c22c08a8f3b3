"""The backbone identity of a model package: ``backbone_sha256``, equal for two packages whose features are identical.

A package's features output (edge/judge/model_package.py ``FeaturesSpec``) is computed by the ops of the .tflite
upstream of that output. The digest walks the graph backwards from the features tensor and hashes, in
execution order, every op on the way (its builtin name) and every tensor it touches: shape, type,
quantisation (scales, zero points, axis) and, for constant tensors (weights, biases, quantisation tables),
their bytes. Tensor names are left out (they carry the Keras model's name, which changes between runs),
and so is everything downstream of the features, i.e. the head. Consequences:

* a head-only package (the same .tflite, a new head in the sidecar) has its parent's digest;
* two packages converted from models with the same frozen backbone weights, at the same input size and with the
  same int8 calibration, get the same digest even though their heads differ;
* any change that can change a feature value (weights, input size, quantisation scales, an op) changes it.

It is computed by ``convert`` (with the converted file in hand) and stored in the sidecar, where
``package_sha256`` protects it; the edge compares the stored strings. :func:`backbone_digest` is here (no
TensorFlow) so that tests and tools can recompute it on the edge.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge.judge.interpreter import RUNTIMES, ModelError, interpreter_class


def _plain_interpreter(path: Path, runtime: str) -> Any:
    """An interpreter WITHOUT the default XNNPACK delegate: a delegate replaces ops by one DELEGATE node,
    which would hide the graph we want to walk."""
    name, cls = interpreter_class(runtime)
    mod = importlib.import_module("tensorflow").lite.experimental if name == "tensorflow" \
        else importlib.import_module(RUNTIMES[name])
    kwargs: dict[str, Any] = {"model_path": str(path)}
    if hasattr(mod, "OpResolverType"):
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = cls(**kwargs)
        interp.allocate_tensors()
    except Exception as e:
        raise ModelError(f"{path}: cannot open for the backbone digest ({type(e).__name__}: {e})") from e
    return interp


def _tensor_header(t: dict[str, Any]) -> dict[str, Any]:
    q = t.get("quantization_parameters") or {}
    return {
        "shape": [int(x) for x in t["shape"]],
        "dtype": np.dtype(t["dtype"]).name,
        "scales": [float(x) for x in np.asarray(q.get("scales", []), np.float64).ravel()],
        "zero_points": [int(x) for x in np.asarray(q.get("zero_points", [])).ravel()],
        "axis": int(q.get("quantized_dimension", 0)),
    }


def backbone_digest(path: str | Path, features_output: str, runtime: str = "auto") -> str:
    """sha256 (hex) of the part of the .tflite at ``path`` that computes the output tensor named
    ``features_output`` (see the module docstring). ModelError if there is no such output."""
    p = Path(path)
    interp = _plain_interpreter(p, runtime)
    outs = {str(o["name"]): int(o["index"]) for o in interp.get_output_details()}
    if features_output not in outs:
        raise ModelError(f"{p}: no output tensor named {features_output!r} (outputs: {sorted(outs)})")
    ops = interp._get_ops_details()  # the graph is only visible this way
    tensors = {int(t["index"]): t for t in interp.get_tensor_details()}
    inputs = {int(t["index"]) for t in interp.get_input_details()}
    producer = {int(o): op["index"] for op in ops for o in op["outputs"]}
    by_index = {op["index"]: op for op in ops}
    needed: set[int] = set()
    stack = [outs[features_output]]
    while stack:
        t = stack.pop()
        op_i = producer.get(t)
        if op_i is None or op_i in needed:
            continue
        needed.add(op_i)
        stack.extend(int(i) for i in by_index[op_i]["inputs"] if int(i) >= 0)
    h = hashlib.sha256(b"boxinspect-backbone-v1\n")
    canon: dict[int, int] = {}

    def tensor_ref(i: int) -> int:
        if i < 0:
            return -1
        if i not in canon:
            canon[i] = len(canon)
            t = tensors[i]
            head = _tensor_header(t)
            head["kind"] = "input" if i in inputs else ("computed" if i in producer else "constant")
            h.update(json.dumps(head, sort_keys=True).encode())
            if head["kind"] == "constant":
                h.update(np.ascontiguousarray(interp.get_tensor(i)).tobytes())
        return canon[i]

    for op_i in sorted(needed):  # execution order
        op = by_index[op_i]
        ins = [tensor_ref(int(i)) for i in op["inputs"]]
        outs_ = [tensor_ref(int(i)) for i in op["outputs"]]
        h.update(json.dumps({"op": op["op_name"], "in": ins, "out": outs_}).encode())
    h.update(json.dumps({"features": canon[outs[features_output]]}).encode())
    return h.hexdigest()
