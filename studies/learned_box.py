"""A learned box finder for patterned belts (issue 25): objectness from the frozen backbone's own feature maps.

The frozen MobileNetV2 alpha 0.35 (ImageNet weights) runs on the whole frame resized to a long side of ``--long``
px (640); three intermediate maps (``block_3_expand_relu`` stride 4, pooled to stride 8; ``block_6_expand_relu``
stride 8; ``block_13_expand_relu`` stride 16, upsampled to stride 8) plus the cell's mean Lab colour give one
feature vector per stride-8 cell. A small head (logistic regression or histogram gradient boosting, sklearn)
learns box-vs-background from synth scenes whose boxes are known (``parts.json``; a cell is positive when its
centre lies inside the box's rotated rectangle), rendered from TRAINING seeds only. Decoding: the probability
map is resized to the frame, thresholded, the connected component with the largest probability mass is the
box, its bounding box the answer; nothing above the threshold (or a component under ``MIN_AREA`` of the frame)
is a "no box" answer, scored like the localiser's whole-frame fallback (IoU 0).

Scoring as ``studies/self_belt_policy.py`` does: IoU >= 0.8 share (a fallback counts as a miss), IoU >= 0.5,
no-box share, per set and per view. ``--policy`` rows (a ``self_belt_policy.py --json``) add the combined
policies: the learned box where its confidence passes ``--conf``, else today's ``free`` / ``self`` answer.

    python studies/learned_box.py render --out runs/lbox/train --seeds 1000-1009 --parts 10
    python studies/learned_box.py render --out runs/lbox/train --seeds 1020-1029 --belt-size 1280x720 640x480
    python studies/learned_box.py features DATA... --cache runs/lbox/feat
    python studies/learned_box.py fit --train runs/lbox/train/* --head logreg --out runs/lbox/head.pkl
    python studies/learned_box.py eval DATA... --head runs/lbox/head.pkl [--policy rows.json] [--json out.json]
    python studies/learned_box.py empty DATA... --head HEAD     # false boxes on DATA/empty/ (synth belt sets)
    python studies/learned_box.py bench DATA... --head HEAD     # ms per frame: features, head, decode
    python studies/learned_box.py litert                        # the backbone part as a LiteRT model, ms per frame
    python studies/learned_box.py numpyhgb DATA... --head HEAD  # the HGB head in plain numpy: ms per frame

Run from the repository root with ``PYTHONPATH=.`` and one thread (``OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1
TF_NUM_INTEROP_THREADS=1``), under ``nice -n 10``. Results: docs/RESULTS.md "A learned box finder".
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from boxinspect.boxfinder import render, sizes_arg
from edge.judge.boxfinder import input_size
from edge.judge.crops import known_views
from training.boxfinder import cell_labels, sample_cells

log = logging.getLogger("learned_box")
WEIGHTS = Path("../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
LAYERS = ("block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu")
STRIDE = 8
MIN_AREA = 0.004  # of the frame: a component smaller than this is not a box (the smallest synth box is ~2%)
_MODEL: dict[str, Any] = {}


def _backbone() -> Any:
    if "f" not in _MODEL:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        base = tf.keras.applications.MobileNetV2(input_shape=(None, None, 3), alpha=0.35, include_top=False,
                                                 weights=None)
        base.load_weights(str(WEIGHTS))
        model = tf.keras.Model(base.input, [base.get_layer(n).output for n in LAYERS])

        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])
        def run(x: Any) -> Any:
            b3, b6, b13 = model(x)
            b3 = tf.nn.avg_pool2d(b3, 2, 2, "VALID")
            b13 = tf.image.resize(b13, tf.shape(b6)[1:3], method="bilinear")
            return tf.concat([b3, b6, b13], axis=-1)

        _MODEL["f"] = run
    return _MODEL["f"]


def _resize(img: np.ndarray, long: int) -> np.ndarray:
    """Resize so the long side is ``long`` and both sides are multiples of 32 (the backbone's stride)."""
    nh, nw = input_size(*img.shape[:2], long)
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)


def cell_features(img_bgr: np.ndarray, long: int) -> np.ndarray:
    """(H/8, W/8, C) float16: the three backbone maps on one stride-8 grid, plus the cell's mean Lab."""
    small = _resize(img_bgr, long)
    h, w = small.shape[0] // STRIDE, small.shape[1] // STRIDE
    x = small[:, :, ::-1].astype(np.float32)[None] / 127.5 - 1.0
    maps = np.asarray(_backbone()(x))[0]
    lab = cv2.resize(cv2.cvtColor(small, cv2.COLOR_BGR2LAB), (w, h), interpolation=cv2.INTER_AREA)
    return np.concatenate([maps, lab.astype(np.float32) / 100.0], axis=2).astype(np.float16)


def with_context(f: np.ndarray, ctx: str) -> np.ndarray:
    """Optional context per cell: ``median``: minus the frame's median cell (the belt, most of the frame);
    ``blur``: plus the 5x5-cell mean; ``both``."""
    x = f.astype(np.float32)
    if ctx.endswith("-nolab"):  # without the cell's mean Lab (the last 3 features): the product graph has none
        x, ctx = x[..., :-3], ctx[: -len("-nolab")]
    parts = [x]
    if ctx in ("median", "both"):
        parts.append(x - np.median(x.reshape(-1, x.shape[-1]), axis=0))
    if ctx in ("blur", "both"):
        from scipy.ndimage import uniform_filter

        parts.append(uniform_filter(x, size=(5, 5, 1), mode="nearest"))
    return np.concatenate(parts, axis=2) if len(parts) > 1 else x


def cache_path(cache: Path, data: Path, long: int) -> Path:
    return cache / f"{data.resolve().parent.name}_{data.name}_L{long}.npz"


def features(data: Path, cache: Path, long: int) -> Path:
    """Cache every photo's cell features and labels of one data set (one npz; keys f<i>, y<i>)."""
    out = cache_path(cache, data, long)
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    t0 = time.monotonic()
    ts = known_views(data)
    for i, t in enumerate(ts):
        img = cv2.imread(str(data / t["file"]), cv2.IMREAD_COLOR)
        f = cell_features(img, long)
        arrays[f"f{i}"] = f
        arrays[f"y{i}"] = cell_labels(t, img.shape[:2], f.shape[:2])
    np.savez(out, **arrays)
    log.info("%s: %d photos, %.0f ms per photo -> %s", data, len(ts), 1000 * (time.monotonic() - t0) / len(ts), out)
    return out


def training_cells(npzs: list[Path], n: int, ctx: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for p in npzs:
        z = np.load(p)
        for k in (k for k in z.files if k.startswith("f")):
            x, y = sample_cells(with_context(z[k], ctx), z["y" + k[1:]], rng, n)
            xs.append(x)
            ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def fit_head(x: np.ndarray, y: np.ndarray, kind: str) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        head = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=300))
    elif kind == "mlp":  # ships as two 1x1 convolutions on the backbone's maps
        head = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=40,
                                                             early_stopping=True, random_state=0))
    elif kind == "hgb":
        head = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=31,
                                              l2_regularization=1.0, random_state=0)
    else:
        raise SystemExit(f"unknown head {kind}")
    t0 = time.monotonic()
    head.fit(x, y)
    log.info("fitted %s on %d cells (%.1f%% positive) in %.0f s", kind, len(y), 100 * y.mean(), time.monotonic() - t0)
    return head


def prob_map(head: Any, f: np.ndarray, ctx: str = "none") -> np.ndarray:
    f = with_context(f, ctx)
    flat = f.reshape(-1, f.shape[-1])
    return head.predict_proba(flat)[:, 1].reshape(f.shape[:2]).astype(np.float32)


def decode(prob: np.ndarray, frame: tuple[int, int], thr: float) -> tuple[list[int] | None, float]:
    """Probability grid -> (box in frame pixels or None, confidence = mean probability inside the component)."""
    fh, fw = frame
    big = cv2.resize(prob, (fw, fh), interpolation=cv2.INTER_LINEAR)
    n, lab, stats, _ = cv2.connectedComponentsWithStats((big >= thr).astype(np.uint8), connectivity=8)
    if n <= 1:
        return None, 0.0
    mass = np.bincount(lab.reshape(-1), weights=big.reshape(-1), minlength=n)[1:]
    best = int(np.argmax(mass)) + 1
    x, y, w, h, area = (int(v) for v in stats[best])
    if area < MIN_AREA * fh * fw:
        return None, 0.0
    return [x, y, x + w, y + h], float(mass[best - 1] / area)


def _score(box: list[int] | None, truth: list[int]) -> float:
    from edge.judge.localize import iou

    return iou(box, truth) if box else 0.0


def predict_set(data: Path, head: Any, cache: Path, long: int, ctx: str) -> list[dict[str, Any]]:
    """Per photo: path, view, known box, frame size and the probability grid (not scored yet)."""
    z = np.load(features(data, cache, long))
    man = json.loads((data / "parts.json").read_text())
    fw, fh = man["frame_size"]
    return [{"path": t["file"], "view": t["view"], "truth": t["bbox"], "frame": (fh, fw),
             "prob": prob_map(head, z[f"f{i}"], ctx)} for i, t in enumerate(known_views(data))]


def learned_rows(preds: list[dict[str, Any]], thr: float) -> list[dict[str, Any]]:
    out = []
    for p in preds:
        box, conf = decode(p["prob"], p["frame"], thr)
        out.append({"path": p["path"], "view": p["view"], "whole": box is None, "bbox": box,
                    "conf": round(conf, 4), "iou": round(_score(box, p["truth"]), 4)})
    return out


def stats(rows: list[dict[str, Any]]) -> dict[str, float]:
    if not rows:
        return {}
    return {"iou08": float(np.mean([r["iou"] >= 0.8 and not r["whole"] for r in rows])),
            "iou05": float(np.mean([r["iou"] >= 0.5 and not r["whole"] for r in rows])),
            "whole": float(np.mean([r["whole"] for r in rows])), "n": len(rows)}


def combined(learned: list[dict[str, Any]], other: dict[str, dict[str, Any]], conf: float) -> list[dict[str, Any]]:
    """The learned box where it is confident (a box with mean probability >= conf), else today's answer."""
    return [r if (not r["whole"] and r["conf"] >= conf) else other[r["path"]] | {"view": r["view"]}
            for r in learned]


def set_summary(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per answer column: all views, top, oblique."""
    return {col: {"all": stats(rs), **{v: stats([r for r in rs if r["view"] == v]) for v in ("top", "oblique")}}
            for col, rs in rows.items()}


def evaluate(data: Path, head: Any, a: argparse.Namespace) -> dict[str, Any]:
    preds = predict_set(data, head, a.cache, a.long, a.ctx)
    cols: dict[str, list[dict[str, Any]]] = {}
    for thr in a.thr:
        cols[f"learned@{thr}"] = learned_rows(preds, thr)
    if a.policy:
        prev = json.loads(a.policy.read_text())["sets"].get(data.name)
        if prev:
            views = {p["path"]: p["view"] for p in preds}
            for k in ("free", "self"):
                other = {r["path"]: r[k] | {"path": r["path"]} for r in prev["rows"]}
                cols[k] = [other[p] | {"view": views[p]} for p in views]
                for thr in a.thr:
                    for c in a.conf:
                        cols[f"learned@{thr}>={c}_else_{k}"] = combined(cols[f"learned@{thr}"], other, c)
    return {"summary": set_summary(cols), "rows": cols}


def _log_summary(name: str, summ: dict[str, dict[str, Any]]) -> None:
    for col, s in summ.items():
        a, t, o = s["all"], s["top"], s["oblique"]
        log.info("%-8s %-28s IoU>=0.8 %5.1f%% (top %5.1f, obl %5.1f)  IoU>=0.5 %5.1f%%  nobox %4.1f%%  n %d",
                 name, col, 100 * a["iou08"], 100 * t["iou08"], 100 * o["iou08"], 100 * a["iou05"],
                 100 * a["whole"], a["n"])


def bench(data: Path, head: Any, long: int, n: int, ctx: str) -> dict[str, float]:
    """ms per frame: read excluded; backbone + cell features, head, decode (after one warm-up frame)."""
    ts = known_views(data)[: n + 1]
    imgs = [cv2.imread(str(data / t["file"]), cv2.IMREAD_COLOR) for t in ts]
    prob_map(head, cell_features(imgs[0], long), ctx)
    tf_, th, td = 0.0, 0.0, 0.0
    for im in imgs[1:]:
        t0 = time.perf_counter()
        f = cell_features(im, long)
        t1 = time.perf_counter()
        p = prob_map(head, f, ctx)
        t2 = time.perf_counter()
        decode(p, im.shape[:2], 0.5)
        t3 = time.perf_counter()
        tf_, th, td = tf_ + t1 - t0, th + t2 - t1, td + t3 - t2
    k = 1000 / max(1, len(imgs) - 1)
    res = {"features_ms": tf_ * k, "head_ms": th * k, "decode_ms": td * k, "frames": len(imgs) - 1}
    log.info("%s: %s", data, {key: round(v, 1) for key, v in res.items()})
    return res


def empties(data: Path, head: Any, a: argparse.Namespace) -> dict[str, Any]:
    """False boxes on a synth belt set's empty-belt frames (``DATA/empty/line*/<view>/*``): share with a box."""
    frames = sorted(p for p in (data / "empty").rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    probs = [prob_map(head, cell_features(cv2.imread(str(p), cv2.IMREAD_COLOR), a.long), a.ctx) for p in frames]
    shape = cv2.imread(str(frames[0]), cv2.IMREAD_COLOR).shape[:2]
    res = {}
    for thr in a.thr:
        got = [decode(pr, shape, thr) for pr in probs]
        res[str(thr)] = {"frames": len(frames), "boxes": sum(b is not None for b, _ in got),
                         "confs": sorted(round(c, 3) for b, c in got if b is not None)[-5:]}
        log.info("%s empty belt, thr %.2f: a box on %d of %d frames (top confidences %s)", data.name, thr,
                 res[str(thr)]["boxes"], len(frames), res[str(thr)]["confs"])
    return res


def litert_cost(shape: tuple[int, int], n: int, out: Path) -> dict[str, float]:
    """ms per frame of the backbone up to the three maps (float32 LiteRT, one thread, fixed input shape): what a
    full-frame backbone in the model package would cost; the head is extra (see ``bench``)."""
    import tensorflow as tf

    run = _backbone()

    @tf.function(input_signature=[tf.TensorSpec([1, shape[0], shape[1], 3], tf.float32)])
    def fixed(x: Any) -> Any:
        return run(x)

    blob = tf.lite.TFLiteConverter.from_concrete_functions([fixed.get_concrete_function()], fixed).convert()
    out.write_bytes(blob)
    interp = tf.lite.Interpreter(model_content=blob, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    x = np.random.default_rng(0).uniform(-1, 1, (1, shape[0], shape[1], 3)).astype(np.float32)
    interp.set_tensor(inp, x)
    interp.invoke()
    t0 = time.perf_counter()
    for _ in range(n):
        interp.set_tensor(inp, x)
        interp.invoke()
    res = {"ms": 1000 * (time.perf_counter() - t0) / n, "bytes": len(blob), "h": shape[0], "w": shape[1]}
    log.info("LiteRT backbone to block_13_expand at %dx%d: %.1f ms per frame, %.2f MB", shape[1], shape[0],
             res["ms"], len(blob) / 1e6)
    return res


def hgb_arrays(head: Any) -> dict[str, np.ndarray]:
    """An sklearn HGB classifier as flat arrays (what a model package could hold; no sklearn on the edge)."""
    nodes = [t[0].nodes for t in head._predictors]
    offs = np.cumsum([0] + [len(n) for n in nodes[:-1]])
    allnodes = np.concatenate(nodes)
    shift = np.repeat(offs, [len(n) for n in nodes])
    return {"feature": allnodes["feature_idx"].astype(np.int32), "thr": allnodes["num_threshold"].astype(np.float32),
            "left": (allnodes["left"] + shift).astype(np.int32), "right": (allnodes["right"] + shift).astype(np.int32),
            "leaf": allnodes["is_leaf"].astype(bool), "value": allnodes["value"].astype(np.float32),
            "roots": offs.astype(np.int32), "base": np.float32(np.ravel(head._baseline_prediction)[0])}


def hgb_numpy(arr: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """P(box) per row of x: every tree walked at once, one level per step (numpy only)."""
    idx = np.repeat(arr["roots"][:, None], len(x), axis=1)
    cols = np.arange(len(x))[None, :]
    while True:
        leaf = arr["leaf"][idx]
        if leaf.all():
            break
        go_left = x[cols, arr["feature"][idx]] <= arr["thr"][idx]
        idx = np.where(leaf, idx, np.where(go_left, arr["left"][idx], arr["right"][idx]))
    raw = arr["base"] + arr["value"][idx].sum(axis=0)
    return 1.0 / (1.0 + np.exp(-raw))


def hgb_numpy_cost(data: Path, head: Any, a: argparse.Namespace) -> dict[str, float]:
    """ms per frame of :func:`hgb_numpy` on the cached cells of ``data``, and its largest difference to sklearn."""
    arr = hgb_arrays(head)
    z = np.load(features(data, a.cache, a.long))
    fs = [z[f"f{i}"] for i in range(min(a.n, len(z.files) // 2))]
    diff, t = 0.0, 0.0
    for f in fs:
        x = f.reshape(-1, f.shape[-1]).astype(np.float32)
        t0 = time.perf_counter()
        p = hgb_numpy(arr, x)
        t += time.perf_counter() - t0
        diff = max(diff, float(np.abs(p - head.predict_proba(x)[:, 1]).max()))
    res = {"ms": 1000 * t / len(fs), "max_abs_diff": diff, "nodes": int(len(arr["leaf"]))}
    log.info("%s: HGB in numpy %.1f ms per frame (%d nodes), max |p - sklearn| %.2g", data.name, res["ms"],
             res["nodes"], diff)
    return res


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seeds", type=_seeds, required=True, help="e.g. 1000-1009 (training seeds only)")
    r.add_argument("--parts", type=int, default=10, help="parts per class per seed")
    r.add_argument("--belt-size", nargs="*", default=[], help="WxH, in turn by seed: belt sets of these sizes only "
                   "(named belt<seed>_<W>x<H> since 2026-12-07, beltsz<seed> before)")
    for name in ("features", "fit", "eval", "bench", "empty", "litert", "numpyhgb"):
        p = sub.add_parser(name)
        p.add_argument("data", type=Path, nargs="*")
        p.add_argument("--cache", type=Path, default=Path("runs/lbox/feat"))
        p.add_argument("--long", type=int, default=640, help="long side of the frame the backbone sees")
        p.add_argument("--train", type=Path, nargs="*", default=[])
        p.add_argument("--head", type=str, default="logreg", help="fit: logreg | hgb; eval/bench: a .pkl")
        p.add_argument("--out", type=Path)
        p.add_argument("--cells", type=int, default=200, help="fit: positive cells per photo (and as many negative)")
        p.add_argument("--thr", type=float, nargs="*", default=[0.5])
        p.add_argument("--conf", type=float, nargs="*", default=[0.7])
        p.add_argument("--policy", type=Path, help="eval: a self_belt_policy.py JSON with the free/self rows")
        p.add_argument("--json", type=Path)
        p.add_argument("--ctx", default="none", choices=("none", "median", "blur", "both", "none-nolab", "blur-nolab"),
                       help="fit: context (-nolab: without the cell's mean Lab)")
        p.add_argument("--n", type=int, default=20, help="bench: frames")
    return ap.parse_args()


def main() -> None:
    a = _args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if a.cmd == "render":
        sizes = sizes_arg(",".join(a.belt_size)) if a.belt_size else None
        render(a.out, a.seeds, a.parts, sizes, kinds=("belt",) if sizes else ("belt", "line"))
    elif a.cmd == "features":
        for d in a.data:
            features(d, a.cache, a.long)
    elif a.cmd == "fit":
        x, y = training_cells([features(d, a.cache, a.long) for d in a.train], a.cells, a.ctx)
        head = fit_head(x, y, a.head)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_bytes(pickle.dumps({"head": head, "long": a.long, "kind": a.head, "ctx": a.ctx}))
    else:
        saved = pickle.loads(Path(a.head).read_bytes())
        head, a.ctx = saved["head"], saved.get("ctx", "none")
        if a.cmd == "bench":  # ms per frame; litert: the backbone alone as a LiteRT model
            res: dict[str, Any] = {d.name: bench(d, head, a.long, a.n, a.ctx) for d in a.data}
        elif a.cmd == "litert":
            res = {f"{h}x{w}": litert_cost((h, w), a.n, a.cache / f"backbone_{w}x{h}.tflite")
                   for h, w in ((352, 640), (480, 640))}
        elif a.cmd == "numpyhgb":
            res = {d.name: hgb_numpy_cost(d, head, a) for d in a.data}
        elif a.cmd == "empty":
            res = {d.name: empties(d, head, a) for d in a.data}
        else:
            res = {d.name: evaluate(d, head, a) for d in a.data}
            for name, r in res.items():
                _log_summary(name, r["summary"])
        if a.json:
            a.json.write_text(json.dumps(res, indent=0))


if __name__ == "__main__":
    main()
