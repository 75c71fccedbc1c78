"""COCO bbox evaluation of detections against a ``DetectionDataset``.

The ground truth is built from the data set's records (so COCO and YOLO sources are evaluated the
same way) in the source's category ids. Detections are xyxy pixels of the *original* image.
The 12-line summary is pycocotools' own output; a per-class table follows it.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# Order of COCOeval.stats, with the names mmdetection logs them under.
METRIC_NAMES = [
    "bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l",
    "bbox_AR_1", "bbox_AR_10", "bbox_AR_100", "bbox_AR_s", "bbox_AR_m", "bbox_AR_l",
]


@dataclass
class Detections:
    """Detections for a set of images: one entry per image id, xyxy pixels of the original image."""

    boxes: Dict[int, np.ndarray] = field(default_factory=dict)  # float32 [K, 4]
    scores: Dict[int, np.ndarray] = field(default_factory=dict)  # float32 [K]
    labels: Dict[int, np.ndarray] = field(default_factory=dict)  # int32 [K], contiguous labels

    def add(self, image_id: int, boxes, scores, labels) -> None:
        self.boxes[int(image_id)] = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.scores[int(image_id)] = np.asarray(scores, np.float32).reshape(-1)
        self.labels[int(image_id)] = np.asarray(labels, np.int32).reshape(-1)

    def __len__(self):
        return len(self.boxes)


@dataclass
class CocoResult:
    metrics: Dict[str, float]  # METRIC_NAMES -> value (COCO's -1 where undefined)
    summary: str  # pycocotools' 12-line summary, verbatim
    per_class: List[dict]  # [{"class", "ap", "ap50", "ap75", "gts", "dets"}]
    # Set by rtmdet_keras.runtime.evaluate.evaluate: precision / recall / confusion matrix at one score
    # threshold (rtmdet_keras.operating_point.OperatingPoint) and the plots written, name -> path.
    operating_point: Optional[object] = None
    plots: Dict[str, object] = field(default_factory=dict)

    def table(self) -> str:
        return format_per_class_table(self.per_class)

    def report(self) -> str:
        return self.summary.rstrip() + "\n" + self.table()


def _xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def build_coco_ground_truth(dataset) -> dict:
    """COCO-format ground-truth dict (images, annotations, categories) from the records."""
    images, annotations = [], []
    ann_id = 1
    for r in dataset.records:
        images.append({"id": int(r.image_id), "width": int(r.width), "height": int(r.height),
                       "file_name": str(r.path)})
        for crowd, boxes, labels in (
            (0, r.boxes, r.labels),
            (1, r.crowd_boxes, r.crowd_labels),
        ):
            for (x, y, w, h), label in zip(_xyxy_to_xywh(boxes), labels):
                annotations.append({
                    "id": ann_id, "image_id": int(r.image_id),
                    "category_id": int(dataset.category_ids[int(label)]),
                    "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": crowd,
                })
                ann_id += 1
    categories = [{"id": int(cid), "name": name} for cid, name in zip(dataset.category_ids, dataset.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detections_to_coco(dataset, detections: Detections) -> List[dict]:
    results = []
    for image_id, boxes in detections.boxes.items():
        scores, labels = detections.scores[image_id], detections.labels[image_id]
        for (x, y, w, h), s, label in zip(_xyxy_to_xywh(boxes), scores, labels):
            results.append({"image_id": int(image_id), "category_id": int(dataset.category_ids[int(label)]),
                            "bbox": [float(x), float(y), float(w), float(h)], "score": float(s)})
    return results


def _match_image(self, imgId, catId, aRng, maxDet):
    """``COCOeval.evaluateImg`` with the same greedy matching, in the same order, but visiting for
    each IoU threshold only the detections whose best IoU with any ground truth reaches it (the
    others cannot match and stay as they were): with 300 mostly unmatched boxes an image, the
    stock loop over every threshold, detection and ground truth is most of an evaluation.
    ``tests/test_evaluation.py`` checks the result is identical to pycocotools'."""
    p = self.params
    if p.useCats:
        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
    else:
        gt = [g for c in p.catIds for g in self._gts[imgId, c]]
        dt = [d for c in p.catIds for d in self._dts[imgId, c]]
    if len(gt) == 0 and len(dt) == 0:
        return None
    for g in gt:
        g["_ignore"] = 1 if (g["ignore"] or g["area"] < aRng[0] or g["area"] > aRng[1]) else 0
    gtind = np.argsort([g["_ignore"] for g in gt], kind="mergesort")
    gt = [gt[i] for i in gtind]
    dtind = np.argsort([-d["score"] for d in dt], kind="mergesort")
    dt = [dt[i] for i in dtind[0:maxDet]]
    iscrowd = [int(o["iscrowd"]) for o in gt]
    ious = self.ious[imgId, catId][:, gtind] if len(self.ious[imgId, catId]) > 0 else self.ious[imgId, catId]
    T, G, D = len(p.iouThrs), len(gt), len(dt)
    gtm = np.zeros((T, G))
    dtm = np.zeros((T, D))
    gtIg = np.array([g["_ignore"] for g in gt])
    dtIg = np.zeros((T, D))
    if len(ious) != 0:
        ious = np.asarray(ious)[:D]
        best = ious.max(axis=1)
        gt_ids = [g["id"] for g in gt]
        for tind, t in enumerate(p.iouThrs):
            start = min(t, 1 - 1e-10)
            for dind in np.nonzero(best >= start)[0]:
                row = ious[dind]
                iou, m = start, -1
                for gind in range(G):
                    if gtm[tind, gind] > 0 and not iscrowd[gind]:
                        continue
                    if m > -1 and gtIg[m] == 0 and gtIg[gind] == 1:
                        break
                    if row[gind] < iou:
                        continue
                    iou, m = row[gind], gind
                if m == -1:
                    continue
                dtIg[tind, dind] = gtIg[m]
                dtm[tind, dind] = gt_ids[m]
                gtm[tind, m] = dt[dind]["id"]
    a = np.array([d["area"] < aRng[0] or d["area"] > aRng[1] for d in dt]).reshape((1, len(dt)))
    dtIg = np.logical_or(dtIg, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
    return {
        "image_id": imgId, "category_id": catId, "aRng": aRng, "maxDet": maxDet,
        "dtIds": [d["id"] for d in dt], "gtIds": [g["id"] for g in gt],
        "dtMatches": dtm, "gtMatches": gtm, "dtScores": [d["score"] for d in dt],
        "gtIgnore": gtIg, "dtIgnore": dtIg,
    }


def make_cocoeval(gt, dt):
    """``COCOeval(gt, dt, "bbox")`` whose per-image matching is :func:`_match_image`."""
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluateImg = _match_image.__get__(ev)
    return ev


def _results_to_coco(gt, results: List[dict]):
    """The COCO object ``gt.loadRes(results)`` builds for bbox results (area ``w * h``, ids from 1,
    ``iscrowd`` 0), without the per-box segmentation polygon it adds and COCOeval's bbox mode never
    reads: half the time of an evaluation with 300 boxes an image."""
    known = set(gt.getImgIds())
    unknown = {r["image_id"] for r in results} - known
    if unknown:
        raise ValueError(f"detections for image ids not in the ground truth: {sorted(unknown)[:5]}")
    anns = []
    for i, r in enumerate(results, start=1):
        ann = dict(r)
        ann["area"] = r["bbox"][2] * r["bbox"][3]
        ann["id"] = i
        ann["iscrowd"] = 0
        anns.append(ann)
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                  "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def evaluate_detections(dataset, detections: Detections) -> CocoResult:
    """Run COCOeval (bbox) and return the 12 metrics, the verbatim summary and per-class APs.

    Images of the data set with no entry in ``detections`` count as images with no detections.
    """
    gt = COCO()
    gt.dataset = build_coco_ground_truth(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    results = detections_to_coco(dataset, detections)
    names = dict(zip(dataset.category_ids, dataset.class_names))
    if not results or not gt.dataset["annotations"]:
        # COCOeval cannot load an empty result list; nothing detected (or nothing to find) scores 0.
        empty = {k: (0.0 if gt.dataset["annotations"] else -1.0) for k in METRIC_NAMES}
        per_class = [{"class": names[c], "ap": 0.0, "ap50": 0.0, "ap75": 0.0,
                      "gts": _count_gts(gt, c), "dets": 0} for c in dataset.category_ids]
        summary = "no detections: every COCO metric is 0\n" if gt.dataset["annotations"] else "no ground truth\n"
        return CocoResult(empty, summary, per_class)
    dt = _results_to_coco(gt, results)
    ev = make_cocoeval(gt, dt)
    ev.params.imgIds = sorted(gt.getImgIds())
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    summary = "\n".join(line for line in buf.getvalue().splitlines() if line.startswith(" Average"))
    metrics = {k: float(v) for k, v in zip(METRIC_NAMES, ev.stats)}
    per_class = []
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    for k, cat_id in enumerate(ev.params.catIds):
        def ap(t_index=None):
            p = precision[:, :, k, 0, -1] if t_index is None else precision[t_index, :, k, 0, -1]
            p = p[p > -1]
            return float(p.mean()) if p.size else float("nan")

        per_class.append({
            "class": names.get(cat_id, str(cat_id)), "ap": ap(), "ap50": ap(0), "ap75": ap(5),
            "gts": _count_gts(gt, cat_id), "dets": sum(1 for d in results if d["category_id"] == cat_id),
        })
    return CocoResult(metrics, summary + "\n", per_class)


def _count_gts(gt, cat_id) -> int:
    return sum(1 for a in gt.dataset["annotations"] if a["category_id"] == cat_id and not a["iscrowd"])


def format_per_class_table(per_class: List[dict]) -> str:
    """A plain-text table: class, ground-truth boxes, detections, AP50:95, AP50, AP75."""
    width = max([len("class")] + [len(r["class"]) for r in per_class])
    head = f"{'class':<{width}}  {'gts':>6}  {'dets':>7}  {'AP50:95':>7}  {'AP50':>6}  {'AP75':>6}"
    rule = "-" * len(head)
    lines = [rule, head, rule]

    def fmt(v):
        return "   nan" if v != v else f"{v:6.3f}"

    for r in per_class:
        lines.append(f"{r['class']:<{width}}  {r['gts']:>6}  {r['dets']:>7}  {fmt(r['ap']):>7}  "
                     f"{fmt(r['ap50'])}  {fmt(r['ap75'])}")
    lines.append(rule)
    return "\n".join(lines) + "\n"


def format_comparison_table(rows: Dict[str, Dict[str, float]], keys=("bbox_mAP", "bbox_mAP_50")) -> str:
    """Rows of models (e.g. float Keras, int8 PTQ, int8 QAT) against a few metrics."""
    width = max([len("model")] + [len(n) for n in rows])
    labels = {"bbox_mAP": "AP50:95", "bbox_mAP_50": "AP50", "bbox_mAP_75": "AP75"}
    head = f"{'model':<{width}}" + "".join(f"  {labels.get(k, k):>8}" for k in keys)
    lines = ["-" * len(head), head, "-" * len(head)]
    for name, m in rows.items():
        lines.append(f"{name:<{width}}" + "".join(f"  {m.get(k, float('nan')):8.4f}" for k in keys))
    lines.append("-" * len(head))
    return "\n".join(lines) + "\n"

