"""A supervised package's map (issue 29): its head applied to every cell of the last feature map.

A supervised package scores ``sigmoid(f . w + b)`` on its pooled features ``f`` (edge/judge/model_package.py
``FeaturesSpec``). The first ``channels`` values of ``f`` are the global average of the backbone's last feature map
(the .tflite's ``cells`` output, ``CellsSpec``); the rest (the mid-level max and mean of ``--pooling gap+mid``) are
the same for the whole crop. The head applied to one cell in place of the average,

    z_cell = cell . w[:channels] + (f[channels:] . w[channels:] + b)  =  z_crop + (cell - mean cell) . w[:channels],

is that cell's logit (a class activation map); their mean is the crop's logit, since the average is linear. The map
is computed in the second form, anchored on the crop's score, so that the mean stays exact in int8 too.
So a cell above the threshold's logit pulls the crop towards a defect, a cell below pushes it towards good, and
the crop is a defect when the cells' mean reaches the threshold. On the map a cell is shown as its odds in percent of
the threshold's odds, ``100 * exp(z_cell - logit(threshold))`` (100 = at the threshold), the unit an anomaly
package's map already has: there the score is ``d / (d + d_thr)``, whose odds are ``d / d_thr``.
"""

from __future__ import annotations

import math

import numpy as np


def cell_logits(fmap: np.ndarray, weights: np.ndarray, score: float) -> np.ndarray:
    """(H, W) logits of the cells of ``fmap`` (H, W, C) under the head ``weights`` (D,; its first C apply to the
    average of ``fmap``), anchored on the crop's ``score``: ``logit(score) + (cell - mean cell) . w[:C]``. In float
    this is the head on the cell (their mean is the crop's logit since the average is linear); anchoring on the
    score keeps that mean exact in int8 too, where the map output and the pooled average round apart (one
    quantisation step per channel, ~1 logit summed over 1,280 channels on the test package)."""
    h, w, c = fmap.shape
    x = np.asarray(fmap, np.float64).reshape(-1, c)
    dev = (x - x.mean(axis=0)) @ np.asarray(weights, np.float64)[:c]
    out: np.ndarray = (dev + logit(score)).reshape(h, w)
    return out


def logit(p: float) -> float:
    """log(p / (1 - p)), ``p`` kept inside [1e-6, 1 - 1e-6] (a uint8 score can be exactly 0 or 1)."""
    q = min(max(float(p), 1e-6), 1 - 1e-6)
    return math.log(q / (1 - q))


def odds_ratio(logits: np.ndarray, threshold: float) -> np.ndarray:
    """Each cell's odds over the threshold's odds: ``exp(z - logit(threshold))`` (1 = at the threshold)."""
    out: np.ndarray = np.exp(np.clip(np.asarray(logits, np.float64) - logit(threshold), -50.0, 50.0))
    return out
