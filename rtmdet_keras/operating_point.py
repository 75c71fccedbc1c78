"""Precision, recall, F1 and the confusion matrix at one score threshold: the numbers an MCU user
sets a detector's threshold by, next to COCO's threshold-free AP.

Matching is COCO's at IoU 0.5, done twice per image:

1. *class-aware*, exactly as ``COCOeval`` matches for AP50: per class, detections in falling score
   order each take the free ground truth of their class with the highest IoU >= 0.5 (a true
   positive); one that finds none but covers a crowd region of its class (intersection over the
   detection's area >= 0.5) is ignored, neither true nor false;
2. *across classes*, for the confusion matrix only: detections left unmatched, again in falling
   score order, take the free ground truth of any class with the highest IoU >= 0.5 and are counted
   as that confusion (predicted dog, true cat); the rest are background detections.

Ground truths still free after both passes are misses (predicted background). Running the
class-aware pass first means a wrong-class box scored above the right one cannot steal its ground
truth, so the matrix's diagonal is exactly the true positives COCO's AP50 counts (Ultralytics
matches across classes in one pass, so its diagonal can fall below its own TP count).

Boxes are xyxy pixels of the original image; labels are contiguous class indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

IOU_THR = 0.5
TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``float64 [len(a), len(b)]`` IoU of xyxy boxes (COCO's: no +1 on widths)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    inter = _intersection(a, b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def _crowd_overlap(dets: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Intersection over the detection's area: what COCO compares with the IoU threshold for a
    crowd region, since a detection of one object inside a crowd covers little of it."""
    dets = np.asarray(dets, np.float64).reshape(-1, 4)
    inter = _intersection(dets, np.asarray(crowd, np.float64).reshape(-1, 4))
    area = ((dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]))[:, None]
    return np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)


def _greedy(ious: np.ndarray, free: np.ndarray, iou_thr: float) -> np.ndarray:
    """For detections already in falling score order (rows of ``ious``), the ground truth (column)
    each takes, or -1; ``free`` (bool per column) is updated in place."""
    taken = np.full(len(ious), -1, np.int64)
    if ious.size == 0:
        return taken
    # Only detections that reach the threshold with some ground truth can match; with a few hundred
    # low-score boxes an image these are a handful, so the loop below stays short.
    for d in np.flatnonzero(ious.max(axis=1) >= iou_thr):
        row = np.where(free, ious[d], -1.0)
        best = row.max()
        if best < iou_thr:
            continue
        g = np.flatnonzero(row == best)[-1]  # COCOeval keeps the later ground truth on an exact tie
        free[g] = False
        taken[d] = g
    return taken


def match_image(gt_boxes, gt_labels, boxes, scores, labels, crowd_boxes=None, crowd_labels=None,
                iou_thr: float = IOU_THR, across_classes: bool = True):
    """Match one image's detections to its ground truth (both passes of the module docstring).

    Returns ``(same, ignored, other)``, one entry per detection in the given order: ``same`` the
    index of the ground truth of its own class it matched (a true positive) or -1; ``ignored`` True
    for a detection on a crowd region of its class; ``other`` (only with ``across_classes``) the
    index of the ground truth of another class it was counted against, or -1.
    """
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    crowd_boxes = np.zeros((0, 4), np.float32) if crowd_boxes is None else np.asarray(crowd_boxes).reshape(-1, 4)
    crowd_labels = np.zeros((0,), np.int64) if crowd_labels is None else np.asarray(crowd_labels).reshape(-1)
    n = len(boxes)
    same = np.full(n, -1, np.int64)
    other = np.full(n, -1, np.int64)
    ignored = np.zeros(n, bool)
    # Stable sort, as COCOeval's mergesort: equal scores keep the detections' own order.
    order = np.argsort(-scores, kind="mergesort")
    free = np.ones(len(gt_boxes), bool)
    for c in np.unique(labels):
        dets = order[labels[order] == c]
        gts = np.flatnonzero(gt_labels == c)
        class_free = free[gts].copy()
        taken = _greedy(box_iou(boxes[dets], gt_boxes[gts]), class_free, iou_thr)
        free[gts] = class_free
        same[dets[taken >= 0]] = gts[taken[taken >= 0]]
        crowd = crowd_boxes[crowd_labels == c]
        left = dets[taken < 0]
        if len(crowd) and len(left):
            ignored[left] = _crowd_overlap(boxes[left], crowd).max(axis=1) >= iou_thr
    if across_classes:
        rest = order[(same[order] < 0) & ~ignored[order]]
        taken = _greedy(box_iou(boxes[rest], gt_boxes), free, iou_thr)
        other[rest[taken >= 0]] = taken[taken >= 0]
    return same, ignored, other


@dataclass
class MatchedDetections:
    """Every detection of a data set with its class-aware outcome (pass 1), flattened over images."""

    labels: np.ndarray  # int64 [K]
    scores: np.ndarray  # float32 [K]
    outcome: np.ndarray  # int8 [K]: TRUE_POSITIVE, FALSE_POSITIVE or IGNORED
    num_gts: np.ndarray  # int64 [C]: ground-truth boxes per class, crowd regions not counted


def match_detections(dataset, detections, iou_thr: float = IOU_THR) -> MatchedDetections:
    """Class-aware matching of all ``detections`` (:class:`~rtmdet_keras.evaluation.Detections`) against
    ``dataset``'s records. A detection's outcome depends only on higher-scored ones, so these
    outcomes hold at every score threshold: one matching gives the whole PR curve."""
    labels, scores, outcome = [], [], []
    num_gts = np.zeros(len(dataset.class_names), np.int64)
    for r in dataset.records:
        num_gts += np.bincount(np.asarray(r.labels, np.int64), minlength=len(num_gts))[:len(num_gts)]
        if r.image_id not in detections.boxes:
            continue
        s, lab = detections.scores[r.image_id], detections.labels[r.image_id]
        same, ignored, _ = match_image(r.boxes, r.labels, detections.boxes[r.image_id], s, lab,
                                       r.crowd_boxes, r.crowd_labels, iou_thr, across_classes=False)
        labels.append(np.asarray(lab, np.int64))
        scores.append(np.asarray(s, np.float32))
        outcome.append(np.where(ignored, IGNORED, np.where(same >= 0, TRUE_POSITIVE, FALSE_POSITIVE)).astype(np.int8))
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    return MatchedDetections(cat(labels, np.int64), cat(scores, np.float32), cat(outcome, np.int8), num_gts)


def f1_curve(matched: MatchedDetections):
    """``(thresholds, f1)``: F1 over all classes at each distinct detection score (falling), counting
    the detections with score >= that threshold. F1 is taken on the summed counts (2 TP / (2 TP +
    FP + FN)) so every box weighs the same; a mean of per-class F1 (Ultralytics) would let a class
    with three boxes move the threshold as far as one with three thousand."""
    keep = matched.outcome != IGNORED
    scores, tp = matched.scores[keep], matched.outcome[keep] == TRUE_POSITIVE
    order = np.argsort(-scores, kind="mergesort")
    scores, tp = scores[order], tp[order]
    if not len(scores):
        return np.zeros(0, np.float32), np.zeros(0)
    # The last detection of each run of equal scores: a threshold admits all of a tie or none.
    ends = np.append(np.flatnonzero(scores[1:] != scores[:-1]), len(scores) - 1)
    cum_tp = np.cumsum(tp)[ends]
    cum_fp = ends + 1 - cum_tp
    fn = int(matched.num_gts.sum()) - cum_tp
    f1 = 2 * cum_tp / np.maximum(2 * cum_tp + cum_fp + fn, 1)
    return scores[ends], f1


def f1_optimal_threshold(matched: MatchedDetections) -> Optional[float]:
    """The score threshold with the highest F1 over all classes (:func:`f1_curve`); of equal F1 the
    highest threshold (fewer boxes for the same F1). None when there is no detection."""
    thresholds, f1 = f1_curve(matched)
    if not len(thresholds):
        return None
    return float(thresholds[int(np.argmax(f1))])  # argmax takes the first, thresholds fall


def pr_curve(matched: MatchedDetections, label: int):
    """``(scores, precision, recall)`` of one class, one point per detection in falling score order."""
    sel = (matched.labels == label) & (matched.outcome != IGNORED)
    order = np.argsort(-matched.scores[sel], kind="mergesort")
    tp = (matched.outcome[sel] == TRUE_POSITIVE)[order]
    cum_tp = np.cumsum(tp)
    precision = cum_tp / np.arange(1, len(tp) + 1)
    recall = cum_tp / max(int(matched.num_gts[label]), 1)
    return matched.scores[sel][order], precision, recall


def confusion_matrix(dataset, detections, score_thr: float, iou_thr: float = IOU_THR) -> np.ndarray:
    """``int64 [C + 1, C + 1]`` counts, rows the predicted class, columns the true class (Ultralytics'
    layout), index C background, of the detections with score >= ``score_thr``.

    ``[p, t]`` (p, t < C): detections of class p matched to a ground truth of class t (the diagonal:
    true positives); ``[p, C]``: detections of class p that match nothing (background); ``[C, t]``:
    ground truths of class t that no detection matched (misses). Detections on a crowd region of
    their class are left out, as COCO leaves them out. Column t sums to the ground truths of class t,
    row p to the counted detections of class p.
    """
    c = len(dataset.class_names)
    matrix = np.zeros((c + 1, c + 1), np.int64)
    for r in dataset.records:
        gt_labels = np.asarray(r.labels, np.int64)
        if r.image_id in detections.boxes:
            keep = detections.scores[r.image_id] >= np.float32(score_thr)  # compared as the scores are stored
            boxes = detections.boxes[r.image_id][keep]
            scores = detections.scores[r.image_id][keep]
            labels = np.asarray(detections.labels[r.image_id], np.int64)[keep]
        else:
            boxes, scores, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        same, ignored, other = match_image(r.boxes, gt_labels, boxes, scores, labels, r.crowd_boxes,
                                           r.crowd_labels, iou_thr)
        matched_gt = np.where(same >= 0, same, other)
        counted = ~ignored
        hit = counted & (matched_gt >= 0)
        np.add.at(matrix, (labels[hit], gt_labels[matched_gt[hit]]), 1)
        np.add.at(matrix, (labels[counted & (matched_gt < 0)], c), 1)
        missed = np.ones(len(gt_labels), bool)
        missed[matched_gt[hit]] = False
        np.add.at(matrix, (c, gt_labels[missed]), 1)
    return matrix


def _ratio(a, b) -> float:
    """a / b, 0 when b is 0 (no detections: precision 0; no ground truth: recall 0), as scikit-learn's
    ``zero_division=0``: a count a reader can print and JSON can hold, where NaN could not."""
    return float(a) / float(b) if b else 0.0


def _scores(tp, fp, fn) -> dict:
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn), "precision": p, "recall": r,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


@dataclass
class OperatingPoint:
    """Detection quality at one score threshold: the confusion matrix, per-class counts and P/R/F1,
    and (for the PR curves) every detection's class-aware outcome."""

    class_names: List[str]
    score_thr: float
    chosen_by: str  # "F1-optimal", "given" or "no detections"
    iou_thr: float
    confusion: np.ndarray  # int64 [C + 1, C + 1], see confusion_matrix
    matched: MatchedDetections

    def per_class(self) -> List[dict]:
        """One dict a class: ``class, gts, dets`` (counted detections at the threshold), ``tp, fp, fn,
        precision, recall, f1``, all from the confusion matrix."""
        m = self.confusion
        rows = []
        for k, name in enumerate(self.class_names):
            tp = m[k, k]
            rows.append({"class": name, "gts": int(m[:, k].sum()), "dets": int(m[k, :].sum()),
                         **_scores(tp, m[k, :].sum() - tp, m[:, k].sum() - tp)})
        return rows

    def overall(self) -> dict:
        """The same figures for all classes together (summed counts)."""
        m, c = self.confusion, len(self.class_names)
        tp = int(np.trace(m[:c, :c]))
        return {"class": "all", "gts": int(m[:, :c].sum()), "dets": int(m[:c, :].sum()),
                **_scores(tp, m[:c, :].sum() - tp, m[:, :c].sum() - tp)}

    def table(self) -> str:
        """Plain-text table: class, gts, dets, TP, FP, FN, precision, recall, F1; a last row for all."""
        rows = self.per_class() + [self.overall()]
        width = max(len(r["class"]) for r in rows + [{"class": "class"}])
        head = (f"{'class':<{width}}  {'gts':>6}  {'dets':>6}  {'TP':>6}  {'FP':>6}  {'FN':>6}  "
                f"{'precision':>9}  {'recall':>6}  {'F1':>6}")
        rule = "-" * len(head)
        title = (f"At score >= {self.score_thr:.4g} ({self.chosen_by}), IoU >= {self.iou_thr:g}; "
                 f"FP counts wrong-class and duplicate boxes too:")
        lines = [title, rule, head, rule]
        for r in rows:
            if r["class"] == "all":
                lines.append(rule)
            lines.append(f"{r['class']:<{width}}  {r['gts']:>6}  {r['dets']:>6}  {r['tp']:>6}  {r['fp']:>6}  "
                         f"{r['fn']:>6}  {r['precision']:>9.3f}  {r['recall']:>6.3f}  {r['f1']:>6.3f}")
        lines.append(rule)
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        names = list(self.class_names) + ["background"]
        return {
            "score_thr": self.score_thr, "chosen_by": self.chosen_by, "iou_thr": self.iou_thr,
            "per_class": self.per_class(), "all": self.overall(),
            "confusion_matrix": {"rows": "predicted", "columns": "true", "labels": names,
                                 "counts": self.confusion.tolist()},
        }


def operating_point(dataset, detections, score_thr: Optional[float] = None,
                    iou_thr: float = IOU_THR) -> OperatingPoint:
    """The :class:`OperatingPoint` of ``detections`` on ``dataset`` at ``score_thr`` (default: the
    F1-optimal threshold over all classes, :func:`f1_optimal_threshold`; 0.5 when nothing was
    detected, where every threshold gives the same counts)."""
    matched = match_detections(dataset, detections, iou_thr)
    if score_thr is not None:
        chosen_by = "given"
    else:
        score_thr = f1_optimal_threshold(matched)
        chosen_by = "F1-optimal over all classes"
        if score_thr is None:
            score_thr, chosen_by = 0.5, "no detections"
    return OperatingPoint(list(dataset.class_names), float(score_thr), chosen_by, float(iou_thr),
                          confusion_matrix(dataset, detections, score_thr, iou_thr), matched)


def pr_curves(point: OperatingPoint) -> Dict[str, tuple]:
    """Class name -> ``(scores, precision, recall)`` (:func:`pr_curve`) for every class."""
    return {name: pr_curve(point.matched, k) for k, name in enumerate(point.class_names)}
