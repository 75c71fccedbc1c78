"""The JSON an export writes beside each ``.tflite``: what a consumer of the model needs to run it.

``<name>_<format>.json`` holds the class names, the input contract and its quantisation, the output
layout with each tensor's quantisation and meaning, the decode recipe (strides, ``exp_on_reg``, NMS
settings), the op report and, after the self-check, its figures (:func:`export_metadata`,
:func:`write_json`). The runtime reads it back with
:func:`rtmdet_keras.runtime.tflite.read_export_metadata`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import tensorflow as tf

from rtmdet_keras.levels import level_names
from rtmdet_keras.files import atomic_write_text


def _quant_dict(q):
    return None if q is None else {"scale": q[0], "zero_point": q[1]}


def export_metadata(detector, cfg, fmt: str, layout: str, class_names, ops) -> dict:
    """What a consumer of the ``.tflite`` needs, as a JSON-able dict."""
    h, w = detector.imgsz
    pad = int(cfg.augment.pad_val)
    strides = [int(s) for s in cfg.model.strides]
    levels = level_names(cfg.model.strides)
    outputs = []
    for name, d in sorted(detector.output_details.items()):
        entry = {"name": name, "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                 "quantization": _quant_dict(detector.output_quantization[name])}
        if "_p" in name:
            lv = name.rsplit("_", 1)[1]
            entry["level"], entry["stride"] = lv, strides[levels.index(lv)]
        entry["meaning"] = {
            "cls": "class logits; score = sigmoid(logit)",
            "scores": "class scores in [0, 1] (sigmoid applied in the graph)",
            "reg": ("ltrb distances in stride units: distance_px = " +
                    ("exp(reg) * stride" if cfg.model.exp_on_reg else "reg * stride")),
            "boxes": "boxes xyxy in pixels of the letterboxed input",
        }[name.split("_p")[0] if "_p" in name else name]
        outputs.append(entry)
    recipe = {
        "logits": ["for each level pX with stride s: prior of cell (row i, col j) = (j*s, i*s) px",
                   "score = sigmoid(cls_pX)",
                   "d = (exp(reg_pX) if exp_on_reg else reg_pX) * s",
                   "box = (px - d_l, py - d_t, px + d_r, py + d_b) xyxy px of the letterboxed input"],
        "scores": ["for each level pX with stride s: prior of cell (row i, col j) = (j*s, i*s) px",
                   "score = scores_pX",
                   "d = (exp(reg_pX) if exp_on_reg else reg_pX) * s",
                   "box = (px - d_l, py - d_t, px + d_r, py + d_b) xyxy px of the letterboxed input"],
        "decoded": ["scores and boxes are already decoded; priors in level order P3, P4, P5, row-major"],
    }[layout] + [f"class-aware NMS: score >= {cfg.test.score_thr}, IoU {cfg.test.iou_thr}, "
                 f"at most {cfg.test.max_per_img} per image",
                 "original-image box = box / letterbox scale (scale = min(H / height, W / width))"]
    return {
        "format": fmt,
        "file": detector.path.name,
        "config": cfg.name,
        "preset": cfg.preset,
        "num_classes": int(cfg.num_classes),
        "class_names": list(class_names),
        "imgsz": [h, w],
        "signature": detector.signature_key,
        "input": {
            "name": detector.input_name, "shape": list(detector.input_shape),
            "dtype": np.dtype(detector.input_dtype).name,
            "quantization": _quant_dict(detector.input_quantization),
            "contract": (f"raw RGB image 0-255, resized keeping the aspect ratio to fit {h}x{w} (scale = "
                         f"min({h}/height, {w}/width)), placed top-left, padded bottom/right with {pad}; "
                         f"channel reordering and normalisation are inside the model"),
            "channel_order": "rgb",
            "pad_value": pad,
            "model_normalisation": {"channel_order": cfg.model.channel_order, "mean": list(cfg.model.mean),
                                    "std": list(cfg.model.std)},
        },
        "layout": layout,
        "outputs": outputs,
        "decode": {"strides": strides, "exp_on_reg": bool(cfg.model.exp_on_reg), "prior_offset": 0.0,
                   "recipe": recipe},
        "test": {"score_thr": cfg.test.score_thr, "iou_thr": cfg.test.iou_thr, "nms_pre": cfg.test.nms_pre,
                 "max_per_img": cfg.test.max_per_img},
        "ops": ops,
        "tensorflow": tf.__version__,
    }


def write_json(path, data) -> None:
    """``data`` as indented JSON at ``path`` (atomically); NaN and infinities become null, NumPy scalars numbers."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (np.floating,)):
            return clean(float(v))
        return v

    atomic_write_text(path, json.dumps(clean(data), indent=2) + "\n")
