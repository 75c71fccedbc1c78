"""Box operations shared by training, decoding and evaluation: priors, decoding, IoU and GIoU.

Conventions, used everywhere in the package:

* boxes are ``xyxy`` in pixels of the network input, ``float32``;
* priors are the grid points ``(x * stride, y * stride)`` (offset 0) with their stride, as
  ``[P, 3] = (x, y, stride)``, flattened level by level: P3 row-major (y outer, x inner), then P4,
  then P5;
* the head predicts per level ``cls_pX [B, H/s, W/s, C]`` logits and ``reg_pX [B, H/s, W/s, 4]``
  ``(left, top, right, bottom)`` distances in stride units (``exp(reg)`` when ``exp_on_reg``).

Everything here is plain TensorFlow, so the Keras 3 model and the tf_keras twin used for QAT call
the same functions.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

# Added to denominators (union, enclosing area) so degenerate and zero-size boxes give finite IoU,
# GIoU and gradients. mmdetection's IoU calculator and GIoULoss use the same 1e-6.
EPS = 1e-6

_LEVEL_KEY = re.compile(r"^(?P<prefix>.+)_p(?P<level>\d+)$")


def make_priors(height: int, width: int, strides: Sequence[int], offset: float = 0.0) -> tf.Tensor:
    """Grid-point priors for an input of ``height x width`` pixels.

    Level ``s`` has a ``ceil(height / s) x ceil(width / s)`` grid (the size of a stride-``s``
    feature map when every stride-2 conv pads ``k // 2``, as in RTMDet). Point ``(i, j)`` (row,
    column) is at ``((j + offset) * s, (i + offset) * s)`` pixels; RTMDet uses ``offset = 0``.

    Returns:
        ``float32 [P, 3]``: ``(x, y, stride)`` in pixels, level by level, row-major within a level.
    """
    rows = []
    for s in strides:
        s = int(s)
        h, w = -(-int(height) // s), -(-int(width) // s)
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        pts = np.stack([(xs.ravel() + offset) * s, (ys.ravel() + offset) * s, np.full(h * w, s, np.float64)], -1)
        rows.append(pts)
    return tf.constant(np.concatenate(rows, 0), dtype=tf.float32)


def _level_maps(maps, prefix: Optional[str]):
    if isinstance(maps, Mapping):
        if prefix is None:
            raise ValueError("flatten_levels: pass prefix= ('cls' or 'reg') when giving a dict of outputs")
        found = []
        for key, value in maps.items():
            m = _LEVEL_KEY.match(str(key))
            if m and m.group("prefix") == prefix:
                found.append((int(m.group("level")), value))
        if not found:
            raise KeyError(
                f"flatten_levels: no outputs named '{prefix}_p<level>' among {sorted(map(str, maps))}"
            )
        return [v for _, v in sorted(found, key=lambda t: t[0])]
    return list(maps)


def flatten_levels(maps: Union[Mapping[str, tf.Tensor], Sequence[tf.Tensor]], prefix: Optional[str] = None):
    """Per-level maps ``[B, H_l, W_l, K]`` -> ``[B, P, K]`` in prior order (see :func:`make_priors`).

    Args:
        maps: a list of maps from the finest level to the coarsest, or the network's output dict,
            from which the entries ``f"{prefix}_p<level>"`` are taken in increasing level order.
        prefix: ``"cls"`` or ``"reg"`` when ``maps`` is a dict.
    """
    flat = []
    for m in _level_maps(maps, prefix):
        m = tf.convert_to_tensor(m)
        k = m.shape[-1] if m.shape[-1] is not None else tf.shape(m)[-1]
        # Keep the prior count static when the map size is known: NMS and the assigner need it.
        hw = m.shape[1] * m.shape[2] if m.shape[1] is not None and m.shape[2] is not None else -1
        flat.append(tf.reshape(m, [tf.shape(m)[0], hw, k]))
    return flat[0] if len(flat) == 1 else tf.concat(flat, axis=1)


def distances_to_boxes(priors: tf.Tensor, distances: tf.Tensor) -> tf.Tensor:
    """Prior points ``[P, >=2]`` (x, y first) and ``(l, t, r, b)`` distances ``[..., P, 4]`` in pixels
    -> boxes ``[..., P, 4]`` xyxy pixels: ``(x - l, y - t, x + r, y + b)``."""
    priors = tf.cast(priors, tf.float32)
    distances = tf.cast(distances, tf.float32)
    px, py = priors[:, 0], priors[:, 1]
    return tf.stack(
        [px - distances[..., 0], py - distances[..., 1], px + distances[..., 2], py + distances[..., 3]], axis=-1
    )


def decode_predictions(reg, priors: tf.Tensor, exp_on_reg: bool = False) -> tf.Tensor:
    """Raw head distances -> boxes xyxy pixels ``[B, P, 4]``.

    Args:
        reg: ``[B, P, 4]`` raw ltrb in stride units, or per-level maps (list, or the output dict
            with ``reg_pX`` keys) that are flattened first.
        priors: ``[P, 3]`` from :func:`make_priors`.
        exp_on_reg: distances are ``exp(reg) * stride`` instead of ``reg * stride``.
    """
    if isinstance(reg, (Mapping, list, tuple)):
        reg = flatten_levels(reg, prefix="reg")
    reg = tf.cast(reg, tf.float32)
    if exp_on_reg:
        reg = tf.exp(reg)
    return distances_to_boxes(priors, reg * tf.cast(priors, tf.float32)[:, 2:3])


def box_area(boxes: tf.Tensor) -> tf.Tensor:
    """Area of xyxy boxes ``[..., 4]``; inverted (x2 < x1 or y2 < y1) boxes count as 0."""
    wh = tf.maximum(boxes[..., 2:4] - boxes[..., 0:2], 0.0)
    return wh[..., 0] * wh[..., 1]


def pairwise_iou(a: tf.Tensor, b: tf.Tensor, eps: float = EPS) -> tf.Tensor:
    """IoU of every box of ``a [..., N, 4]`` with every box of ``b [..., M, 4]`` -> ``[..., N, M]``.

    Leading dimensions must match (or broadcast). The union is clamped at ``eps``, so empty boxes
    give IoU 0 rather than NaN.
    """
    a = tf.cast(a, tf.float32)
    b = tf.cast(b, tf.float32)
    # One [..., N, M] tensor per coordinate: 3-4x faster on CPU than [..., N, M, 2] pairs.
    ax1, ay1, ax2, ay2 = (a[..., :, None, i] for i in range(4))
    bx1, by1, bx2, by2 = (b[..., None, :, i] for i in range(4))
    iw = tf.maximum(tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1), 0.0)
    ih = tf.maximum(tf.minimum(ay2, by2) - tf.maximum(ay1, by1), 0.0)
    inter = iw * ih
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return inter / tf.maximum(union, eps)


def _aligned_parts(a, b, eps):
    a = tf.cast(a, tf.float32)
    b = tf.cast(b, tf.float32)
    wh = tf.maximum(tf.minimum(a[..., 2:4], b[..., 2:4]) - tf.maximum(a[..., 0:2], b[..., 0:2]), 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = tf.maximum(box_area(a) + box_area(b) - inter, eps)
    return a, b, inter, union


def aligned_iou(a: tf.Tensor, b: tf.Tensor, eps: float = EPS) -> tf.Tensor:
    """IoU of matched pairs: ``a [..., 4]``, ``b [..., 4]`` -> ``[...]``."""
    _, _, inter, union = _aligned_parts(a, b, eps)
    return inter / union


def aligned_giou(a: tf.Tensor, b: tf.Tensor, eps: float = EPS) -> tf.Tensor:
    """Generalised IoU of matched pairs -> ``[...]`` in ``[-1, 1]``:
    ``iou - (enclosing_area - union) / enclosing_area``, with union and enclosing area clamped at
    ``eps`` (finite value and gradient for degenerate boxes)."""
    a, b, inter, union = _aligned_parts(a, b, eps)
    ewh = tf.maximum(tf.maximum(a[..., 2:4], b[..., 2:4]) - tf.minimum(a[..., 0:2], b[..., 0:2]), 0.0)
    enclose = tf.maximum(ewh[..., 0] * ewh[..., 1], eps)
    return inter / union - (enclose - union) / enclose


__all__ = [
    "EPS",
    "make_priors",
    "flatten_levels",
    "distances_to_boxes",
    "decode_predictions",
    "box_area",
    "pairwise_iou",
    "aligned_iou",
    "aligned_giou",
]
