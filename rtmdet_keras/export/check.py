"""The export's self-check: each ``.tflite`` against the Keras network it came from.

:func:`compare_with_keras` runs both on the same letterboxed images and measures how far the scores,
the decoded boxes and the NMS'd detections (:func:`match_detections`) of the model are from the
network's; :func:`run_self_check` does it for every exported model, prints
:func:`format_check_table` and records the figures in each model's JSON.
"""

from __future__ import annotations

import json
import math
from typing import Dict

import numpy as np
import tensorflow as tf

from rtmdet_keras.data import load_split
from rtmdet_keras.export.calibration import as_images, dataset_images
from rtmdet_keras.export.metadata import write_json
from rtmdet_keras.postprocess import decode_and_nms, decode_outputs, image_detections
from rtmdet_keras.runtime.tflite import TFLiteDetector


def _iou_matrix(a, b):
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), -1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def match_detections(ref, other, iou_thr: float = 0.5):
    """Greedy one-to-one matching of two detection sets ``(boxes, scores, labels)``: each reference box,
    best score first, takes the unmatched box of the same class with the highest IoU >= ``iou_thr``.
    Returns ``[(ref_index, other_index, iou)]``."""
    rb, rs, rl = ref
    ob, _, ol = other
    if len(rb) == 0 or len(ob) == 0:
        return []
    iou = _iou_matrix(rb, ob)
    iou[np.asarray(rl)[:, None] != np.asarray(ol)[None, :]] = -1
    used, pairs = set(), []
    for i in np.argsort(-np.asarray(rs), kind="stable"):
        cand = [(iou[i, j], j) for j in range(len(ob)) if j not in used and iou[i, j] >= iou_thr]
        if cand:
            v, j = max(cand)
            used.add(j)
            pairs.append((int(i), int(j), float(v)))
    return pairs


def compare_with_keras(network, run_fn, images, cfg, score_thr: float = 0.3, batch_size: int = 8) -> dict:
    """Run the Keras network and ``run_fn`` (images -> network-contract dict, e.g. a
    :class:`~rtmdet_keras.runtime.tflite.TFLiteDetector`) on the same letterboxed images and measure:

    * ``score_max``/``score_mean``: |Δ sigmoid score| over every prior and class;
    * ``box_max``/``box_mean``: |Δ| of decoded box coordinates in pixels over every prior, and
      ``box_conf_max``/``box_conf_mean`` over priors whose Keras score reaches ``score_thr``;
    * detections after :func:`~rtmdet_keras.postprocess.decode_and_nms` with score >= ``score_thr``:
      ``dets_keras``, ``dets_other``, ``matched`` (same class, IoU >= 0.5), their mean IoU and the
      largest score difference of a matched pair.
    """
    images = np.asarray(images)
    acc = {"score_max": 0.0, "score_sum": 0.0, "score_n": 0, "box_max": 0.0, "box_sum": 0.0, "box_n": 0,
           "conf_max": 0.0, "conf_sum": 0.0, "conf_n": 0, "dets_keras": 0, "dets_other": 0, "matched": 0,
           "iou_sum": 0.0, "match_score_max": 0.0}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        k_out = {k: np.asarray(v) for k, v in network(tf.constant(batch, tf.float32), training=False).items()}
        o_out = run_fn(batch)
        ks, kb = (np.asarray(t) for t in decode_outputs(k_out, cfg))
        os_, ob = (np.asarray(t) for t in decode_outputs(o_out, cfg))
        ds, db = np.abs(ks - os_), np.abs(kb - ob)
        acc["score_max"] = max(acc["score_max"], float(ds.max()))
        acc["score_sum"] += float(ds.sum())
        acc["score_n"] += ds.size
        acc["box_max"] = max(acc["box_max"], float(db.max()))
        acc["box_sum"] += float(db.sum())
        acc["box_n"] += db.size
        conf = ks.max(-1) >= score_thr
        if conf.any():
            acc["conf_max"] = max(acc["conf_max"], float(db[conf].max()))
            acc["conf_sum"] += float(db[conf].sum())
            acc["conf_n"] += db[conf].size
        k_det = [np.asarray(t) for t in decode_and_nms(k_out, cfg)]
        o_det = [np.asarray(t) for t in decode_and_nms(o_out, cfg)]
        for i in range(len(batch)):
            kd, od = image_detections(k_det, i, score_thr), image_detections(o_det, i, score_thr)
            pairs = match_detections(kd, od)
            acc["dets_keras"] += len(kd[0])
            acc["dets_other"] += len(od[0])
            acc["matched"] += len(pairs)
            acc["iou_sum"] += sum(p[2] for p in pairs)
            for a, b, _ in pairs:
                acc["match_score_max"] = max(acc["match_score_max"], abs(float(kd[1][a]) - float(od[1][b])))
    nan = float("nan")
    return {
        "images": int(len(images)), "score_thr": score_thr,
        "score_max": acc["score_max"], "score_mean": acc["score_sum"] / max(acc["score_n"], 1),
        "box_max": acc["box_max"], "box_mean": acc["box_sum"] / max(acc["box_n"], 1),
        "box_conf_max": acc["conf_max"] if acc["conf_n"] else nan,
        "box_conf_mean": acc["conf_sum"] / acc["conf_n"] if acc["conf_n"] else nan,
        "dets_keras": acc["dets_keras"], "dets_other": acc["dets_other"], "matched": acc["matched"],
        "match_iou": acc["iou_sum"] / acc["matched"] if acc["matched"] else nan,
        "match_score_max": acc["match_score_max"] if acc["matched"] else nan,
    }


def format_check_table(rows: Dict[str, dict]) -> str:
    """The self-check of several models (name -> :func:`compare_with_keras` result) as a table."""
    def f(v, spec):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    thr = next(iter(rows.values()))["score_thr"] if rows else 0.3
    head = (f"{'model':<10} {'imgs':>4}  {'|Δscore| max':>12} {'mean':>8}  {'|Δbox| px max':>13} {'mean':>7}  "
            f"{f'@score≥{thr:g} max':>16} {'mean':>6}  {'dets keras/tflite':>17} {'matched':>7} {'IoU':>5}")
    lines = ["-" * len(head), head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(
            f"{name:<10} {r['images']:>4}  {f(r['score_max'], '.4f'):>12} {f(r['score_mean'], '.5f'):>8}  "
            f"{f(r['box_max'], '.3f'):>13} {f(r['box_mean'], '.4f'):>7}  {f(r['box_conf_max'], '.3f'):>16} "
            f"{f(r['box_conf_mean'], '.3f'):>6}  {str(r['dets_keras']) + '/' + str(r['dets_other']):>17} "
            f"{r['matched']:>7} {f(r['match_iou'], '.3f'):>5}")
    lines.append("-" * len(head))
    return "\n".join(lines) + "\n"


def check_images(cfg, check_dataset, n, fallback):
    """``n`` letterboxed images for the self-check: of ``check_dataset``, else the validation split, else
    ``fallback`` (the calibration images)."""
    if check_dataset is None:
        try:
            check_dataset = load_split(cfg, "val")
        except Exception:  # no validation split: the check runs on calibration images instead
            check_dataset = None
    if check_dataset is None:
        return None if fallback is None else np.asarray(fallback)[:n]
    if hasattr(check_dataset, "records"):
        return dataset_images(check_dataset, cfg, n, shuffle=False)
    return as_images(check_dataset, cfg, n)


def run_self_check(network, cfg, paths, formats, check_dataset, n_images, fallback, print_fn=print) -> None:
    """Compare every exported ``.tflite`` of ``paths`` with ``network`` on ``n_images`` images of
    ``check_dataset`` (default: the validation split, else ``fallback``, the calibration images), print
    the table and add each model's row to its JSON as ``check``."""
    images = check_images(cfg, check_dataset, n_images, fallback)
    if images is None:
        print_fn("self-check skipped: no validation or calibration images")
        return
    rows = {}
    for fmt in formats:
        detector = TFLiteDetector(paths[fmt], cfg=cfg)
        rows[fmt] = compare_with_keras(network, lambda x, d=detector: d(x, cfg), images, cfg)
        meta_path = paths[fmt].with_suffix(".json")
        meta = json.loads(meta_path.read_text())
        meta["check"] = rows[fmt]
        write_json(meta_path, meta)
    print_fn(f"\nself-check against the Keras network on {len(images)} images "
             f"(scores in [0, 1], boxes in input pixels):")
    print_fn(format_check_table(rows).rstrip())
