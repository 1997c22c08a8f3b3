"""Markdown table comparing converted formats, from their sidecars and ``boxinspect bench --json`` files.

    python -m convert.report runs/x/model_int8.tflite runs/x/model_fp16.tflite ... [--bench-suffix .bench.json]

For each model: size, test metrics of the TFLite model (and the Keras reference), agreement with Keras,
the gate outcome, and median invoke latency per thread count from ``<model><bench-suffix>`` if present.
No TensorFlow needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.judge.model_package import load_metadata


def _f(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def formats_table(models: list[Path], bench_suffix: str = ".bench.json") -> str:
    rows = [
        "| format | file | size | threshold | accuracy | macro F1 | AUC | defect recall | agreement with Keras "
        "| max abs score diff | gate | invoke median 1 thread | 2 threads | preprocess+invoke median 1 / 2 threads |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    keras_row = None
    for m in models:
        meta = load_metadata(m)
        met = meta.metrics
        bench = Path(str(m) + bench_suffix)
        lat: dict[int, dict] = {}
        if bench.is_file():
            for r in json.loads(bench.read_text())["results"]:
                lat[int(r["threads"])] = r

        def med(t: int, key: str = "invoke", lat=lat) -> str:
            return f"{lat[t][key]['median_ms']:.2f} ms" if t in lat else "-"

        gate = "-" if met is None else ("pass" if met.gate_passed else "**REJECTED**")
        if met is not None and keras_row is None:
            k = met.keras
            kthr = met.keras_threshold if met.keras_threshold is not None else meta.threshold
            keras_row = (f"| Keras (reference) | model.keras | - | {_f(kthr)} | {_f(k.accuracy)} | {_f(k.macro_f1)} "
                         f"| {_f(k.auc)} | {_f(k.recall)} | - | - | - | - | - | - |")
        t = met.tflite if met else None
        rows.append(
            f"| {meta.format} | {m.name} | {meta.size_bytes / 1e6:.2f} MB | {_f(meta.threshold)} "
            f"| {_f(t.accuracy if t else None)} | {_f(t.macro_f1 if t else None)} | {_f(t.auc if t else None)} "
            f"| {_f(t.recall if t else None)} | {_f(met.agreement if met else None)} "
            f"| {_f(met.max_abs_score_diff if met else None, 4)} | {gate} | {med(1)} | {med(2)} "
            f"| {med(1, 'preprocess_invoke')} / {med(2, 'preprocess_invoke')} |"
        )
    if keras_row:
        rows.insert(2, keras_row)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convert.report", description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--bench-suffix", default=".bench.json")
    args = p.parse_args(argv)
    sys.stdout.write(formats_table(args.models, args.bench_suffix) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
