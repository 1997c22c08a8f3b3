"""Feature probe: pooled features of several MobileNetV2 layers (avg / max / GeM-3) at one input size, one pass.

usage: python studies/probe_features.py SIZE [flip|-] [DATA] [TAG] -> runs/probe/TAG-SIZE[-flip].npz
(a measurement tool for docs/RESULTS.md, not product code)
"""
import sys
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers

from training import data as data_mod
from training import model as model_mod
from training.features import prepare_pixels

LAYERS = ["out_relu", "block_16_expand_relu", "block_13_expand_relu", "block_10_expand_relu", "block_6_expand_relu"]
W = "/work/shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"

size = int(sys.argv[1])
flip = len(sys.argv) > 2 and sys.argv[2] == "flip"
data = sys.argv[3] if len(sys.argv) > 3 else "/work/shared/data/parcel-damage"
tag = sys.argv[4] if len(sys.argv) > 4 else "pd"
b = model_mod.build_backbone(size, 0.35, W)
inp = keras.Input((size, size, 3))
x = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
sub = keras.Model(b.input, [b.get_layer(n).output for n in LAYERS])
m = keras.Model(inp, sub(x))
images = data_mod.scan(Path(data), None, None)
rel = [images.rel(p) for p in images.paths]
out = {f"{ly}_{p}": [] for ly in LAYERS for p in ("avg", "max", "gem")}
t0 = time.time()
for s in range(0, len(rel), 32):
    px = np.stack([prepare_pixels(data_mod.read_rgb(p), size) for p in images.paths[s:s + 32]])
    if flip:
        px = px[:, :, ::-1, :]
    maps = m.predict(px.astype(np.float32), verbose=0)
    for ly, fm in zip(LAYERS, maps, strict=True):
        fm = np.asarray(fm, np.float64)
        out[f"{ly}_avg"].append(fm.mean(axis=(1, 2)))
        out[f"{ly}_max"].append(fm.max(axis=(1, 2)))
        out[f"{ly}_gem"].append(np.cbrt(np.mean(np.clip(fm, 0, None) ** 3, axis=(1, 2))))
    print(  # noqa: T201
        s, time.time() - t0, flush=True)
np.savez(f"runs/probe/{tag}-{size}{'-flip' if flip else ''}.npz", rel=np.array(rel),
         **{k: np.concatenate(v).astype(np.float32) for k, v in out.items()})
print(  # noqa: T201
    "done", time.time() - t0)
