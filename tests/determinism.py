"""The determinism check: build the tiny int8 test model from scratch more than once and compare the builds.

    python -m tests.determinism --repeat 2            # two from-scratch builds (bash scripts/test.sh --repeat 2)
    python -m tests.determinism --repeat 1 --against-session
                                                      # one build beside the test session's (what .ci/run does)

Each build runs in its own fresh Python process (nothing shared in memory), niced, through the same steps as
the pytest fixtures (tests/tiny_build.py): synthetic boxes -> train -> evaluate -> int8 convert. The builds
are compared on what the tests consume: the Keras scores of the test images (report/scores_test.csv), the
int8 package's bytes, its scores on the test images (edge.judge.classifier, as the daemon scores them) and its
macro F1 on them (the sidecar, as the gate measured it).

Verdict (exit status): 0 when every build matches the first bit for bit, or when the macro F1 of the int8
model differs by less than the margin the fixture keeps to its bound (tiny_build.TINY_INT8_MAX_F1_DROP minus
the larger drop); 1 otherwise. The difference is always printed, and written as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests import tiny_build

REPO = tiny_build.REPO


def build_one(d: Path) -> None:
    """One from-scratch build into ``d`` (synth/, run/, model_int8.tflite); run in a fresh process."""
    tiny_build.set_repeatable_env()  # before TensorFlow is imported in this process
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.model import offline_weights_path

    weights = offline_weights_path(0.35)
    if weights is None:
        raise SystemExit("offline MobileNetV2 alpha 0.35 weights not found (../shared/weights/); set BOXINSPECT_WEIGHTS")
    d.mkdir(parents=True, exist_ok=True)
    synth = tiny_build.make_synth(d / "synth")
    run = tiny_build.train_tiny(d / "run", synth, weights)
    tiny_build.convert_tiny_int8(run, d / "model_int8.tflite")


def _test_items(run: Path) -> list[tuple[Path, str]]:
    split = json.loads((run / "split.json").read_text())
    root = Path(json.loads((run / "train_config.json").read_text())["data_dir"])
    return [(root / it["path"], it["label"]) for it in split["items"] if it["split"] == "test"]


def fingerprint(run: Path, pkg: Path) -> dict[str, Any]:
    """What the tests consume from one build, in numbers that can be compared."""
    from edge.judge.classifier import Classifier
    from training.data import read_bgr

    with open(run / "report" / "scores_test.csv", newline="") as fh:
        keras_scores = {r["path"]: float(r["score"]) for r in csv.DictReader(fh)}
    clf = Classifier.load(pkg, num_threads=1)
    int8_scores = {str(p): float(clf.score(read_bgr(p))) for p, _ in _test_items(run)}
    return {
        "run": str(run), "package": str(pkg),
        "tflite_sha256": hashlib.sha256(pkg.read_bytes()).hexdigest(),
        "threshold": json.loads((run / "metrics.json").read_text())["threshold"],
        "keras_test_scores": [keras_scores[k] for k in sorted(keras_scores)],
        "int8_test_scores": [int8_scores[k] for k in sorted(int8_scores)],
        **tiny_build.int8_summary(pkg),
    }


def _max_diff(a: list[float], b: list[float]) -> float | None:
    if len(a) != len(b):
        return None
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def compare(first: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """One build against the first: identical or how far apart, and whether that fits in the fixture's margin."""
    f1_diff = abs(first["int8_macro_f1"] - other["int8_macro_f1"])
    margin = tiny_build.TINY_INT8_MAX_F1_DROP - max(first["f1_drop"], other["f1_drop"])
    identical = (first["tflite_sha256"] == other["tflite_sha256"]
                 and first["keras_test_scores"] == other["keras_test_scores"]
                 and first["int8_test_scores"] == other["int8_test_scores"] and first["threshold"] == other["threshold"])
    return {
        "identical": identical,
        "tflite_bytes_identical": first["tflite_sha256"] == other["tflite_sha256"],
        "threshold_diff": abs(first["threshold"] - other["threshold"]),
        "keras_scores_max_diff": _max_diff(first["keras_test_scores"], other["keras_test_scores"]),
        "int8_scores_max_diff": _max_diff(first["int8_test_scores"], other["int8_test_scores"]),
        "int8_macro_f1": [first["int8_macro_f1"], other["int8_macro_f1"]],
        "int8_macro_f1_diff": f1_diff,
        "margin": margin,
        "ok": identical or f1_diff < margin,
    }


def describe(c: dict[str, Any], n: int) -> str:
    if c["identical"]:
        return (f"identical: the same .tflite bytes, the same Keras and int8 scores on the {n} test images, int8 "
                f"macro F1 {c['int8_macro_f1'][0]:.4f} both times (margin to the fixture bound {c['margin']:.4f})")
    return (f"NOT bit-identical: .tflite bytes {'same' if c['tflite_bytes_identical'] else 'differ'}, threshold "
            f"differs by {c['threshold_diff']:.3g}, Keras scores by up to {c['keras_scores_max_diff']}, int8 scores "
            f"by up to {c['int8_scores_max_diff']}; int8 macro F1 {c['int8_macro_f1'][0]:.4f} vs "
            f"{c['int8_macro_f1'][1]:.4f} (difference {c['int8_macro_f1_diff']:.4f}, margin {c['margin']:.4f}: "
            f"{'within' if c['ok'] else 'OVER'})")


def _session_build(wait_s: float) -> tuple[Path, Path]:
    """The test session's build (tiny_build.model_cache_dir()): its run and int8 package, waiting up to ``wait_s``
    for the session to finish them, then for their cache locks (never read half-written)."""
    from filelock import FileLock

    d = tiny_build.model_cache_dir()
    run, pkg = d / "run", d / f"convert-{tiny_build.convert_key()}" / "model_int8.tflite"
    deadline = time.monotonic() + wait_s
    while not ((run / "metrics.json").is_file() and Path(f"{pkg}.json").is_file()):
        if time.monotonic() > deadline:
            raise SystemExit(f"no test session build in {d} after {wait_s:.0f} s (run the tests first)")
        time.sleep(5)
    for lock in (run, pkg):
        with FileLock(f"{lock}.lock"):
            pass
    return run, pkg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.determinism", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2, help="from-scratch builds to make (default 2)")
    ap.add_argument("--against-session", action="store_true",
                    help="compare with the test session's build too (.cache/test-models/KEY: what CI does beside pytest)")
    ap.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the session's build (default 0)")
    ap.add_argument("--work", type=Path, default=REPO / ".cache" / "determinism", help="where the builds go")
    ap.add_argument("--json", type=Path, default=None, help="write the comparison here")
    ap.add_argument("--build-one", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.build_one is not None:
        build_one(a.build_one)
        return 0
    builds: list[tuple[Path, Path]] = [_session_build(a.wait)] if a.against_session else []
    env = {**os.environ, "PYTHONPATH": str(REPO), **tiny_build.REPEATABLE_ENV}
    for i in range(a.repeat):
        d = a.work / f"build-{i + 1}"
        t = time.monotonic()
        print(f"==> build {i + 1} of {a.repeat} from scratch in {d} (niced)", flush=True)
        subprocess.run(["nice", "-n", "10", sys.executable, "-m", "tests.determinism", "--build-one", str(d)],
                       cwd=REPO, env=env, check=True)
        print(f"    built in {time.monotonic() - t:.0f} s", flush=True)
        builds.append((d / "run", d / "model_int8.tflite"))
    if len(builds) < 2:
        raise SystemExit("nothing to compare: --repeat 2, or --repeat 1 with --against-session")
    prints = [fingerprint(run, pkg) for run, pkg in builds]
    report = {"builds": [{k: v for k, v in p.items() if not k.endswith("_scores")} for p in prints],
              "comparisons": [compare(prints[0], p) for p in prints[1:]]}
    for i, c in enumerate(report["comparisons"], start=2):
        print(f"build {i} vs build 1: {describe(c, len(prints[0]['int8_test_scores']))}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    ok = all(c["ok"] for c in report["comparisons"])
    print("determinism check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
