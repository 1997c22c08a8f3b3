"""Edge cost of the feature-probe candidates (docs/RESULTS.md): fp16 TFLite models of the linear recipe's shape
(random head) at 224/288/320 px and two-scale 224 + S variants (second pass resized inside the model), then their
invoke time with the edge's interpreter, 1 thread, interleaved. usage: python studies/probe_edge_cost.py"""
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from edge.judge.classifier import interpreter_class
from training import model as model_mod

W = "/work/shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
rng = np.random.default_rng(0)
k, b = rng.normal(0, 0.01, 1280).astype(np.float32), 0.0


def save(m, name):
    Path("runs/bench").mkdir(parents=True, exist_ok=True)
    c = tf.lite.TFLiteConverter.from_keras_model(m)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.target_spec.supported_types = [tf.float16]
    open(f"runs/bench/{name}.tflite", "wb").write(c.convert())


for s in (224, 288, 320):
    save(model_mod.build_linear_model(s, 0.35, W, k, b), f"lin{s}")
for s in (288, 320):
    b1 = model_mod.build_backbone(s, 0.35, W)
    b2 = model_mod.build_backbone(224, 0.35, W)
    b2.name = "mobilenetv2_224"
    inp = keras.Input((s, s, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    f1 = layers.GlobalAveragePooling2D()(b1(x, training=False))
    f2 = layers.GlobalAveragePooling2D()(b2(layers.Resizing(224, 224)(x), training=False))
    d = layers.Dense(1, activation="sigmoid")
    out = d(layers.Average()([f1, f2]))
    d.set_weights([k.reshape(-1, 1), np.array([b], np.float32)])
    save(keras.Model(inp, out), f"ms224_{s}")
files = [f"runs/bench/{n}.tflite" for n in ("lin224", "lin288", "lin320", "ms224_288", "ms224_320")]
name, cls = interpreter_class("auto")
its = {}
for f in files:
    it = cls(model_path=f, num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], rng.uniform(0, 255, d["shape"]).astype(np.float32))
    for _ in range(20):
        it.invoke()
    its[f] = (it, [])
for _ in range(100):
    for it, ts in its.values():
        t = time.perf_counter()
        it.invoke()
        ts.append(time.perf_counter() - t)
for f, (_it, ts) in its.items():
    print(f"{name} {f}: median {1000 * np.median(ts):.2f} ms, p10 {1000 * np.percentile(ts, 10):.2f} ms")  # noqa: T201
