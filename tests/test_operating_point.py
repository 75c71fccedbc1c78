"""Precision, recall and the confusion matrix at a score threshold, against counts worked out by
hand, and the class-aware matching against pycocotools' own at IoU 0.5."""

import numpy as np
import pytest

from rtmdet_keras.data.records import DetectionDataset, ImageRecord
from rtmdet_keras.evaluation import Detections
from rtmdet_keras.operating_point import (
    confusion_matrix, f1_curve, f1_optimal_threshold, match_detections, operating_point, pr_curve,
)

CAT, DOG, BG = 0, 1, 2


def _case():
    """Two images, classes cat and dog (COCO ids 1 and 2).

    image 1: ground truth A cat [10,10,60,60], B dog [100,20,150,70], C cat [150,60,190,95] (never found)
      d1 cat on A, 0.9             -> true positive
      d2 cat on A shifted 2 px, 0.8 -> duplicate (IoU 2400/2600 with A, which d1 took): background
      d3 cat exactly on B, 0.7      -> wrong class; B goes to d4 in the class-aware pass even though d3
                                       scores higher, so d3 finds nothing free: background
      d4 dog on B, 0.6              -> true positive
      d8 dog far from all, 0.3      -> below 0.5; a background detection at 0.1
    image 2: ground truth E cat [30,30,80,80]; a cat crowd region [100,0,200,100]
      d6 dog on E, 0.75             -> wrong-class hit: predicted dog, true cat (at 0.1 d7 takes E first)
      d7 cat on E, 0.2              -> below 0.5; a true positive at 0.1
      d9 cat inside the cat crowd, 0.95 -> ignored (covered by a crowd region of its class)
      d10 dog inside the cat crowd, 0.9 -> not its class's crowd: background
    """
    recs = [
        ImageRecord(1, "a.jpg", 200, 100, np.array([[10, 10, 60, 60], [100, 20, 150, 70], [150, 60, 190, 95]],
                                                   np.float32), np.array([CAT, DOG, CAT], np.int32)),
        ImageRecord(2, "b.jpg", 200, 100, np.array([[30, 30, 80, 80]], np.float32), np.array([CAT], np.int32),
                    crowd_boxes=np.array([[100, 0, 200, 100]], np.float32), crowd_labels=np.array([CAT], np.int32)),
    ]
    ds = DetectionDataset(recs, ["cat", "dog"], [1, 2], "mem")
    det = Detections()
    det.add(1, [[10, 10, 60, 60], [12, 10, 62, 60], [100, 20, 150, 70], [100, 20, 150, 70], [0, 80, 20, 100]],
            [0.9, 0.8, 0.7, 0.6, 0.3], [CAT, CAT, CAT, DOG, DOG])
    det.add(2, [[30, 30, 80, 80], [30, 30, 80, 80], [110, 10, 150, 50], [160, 10, 190, 40]],
            [0.75, 0.2, 0.95, 0.9], [DOG, CAT, CAT, DOG])
    return ds, det


def test_confusion_matrix_counts_worked_by_hand():
    ds, det = _case()
    # rows predicted (cat, dog, background), columns true (cat, dog, background)
    at_half = confusion_matrix(ds, det, 0.5)
    np.testing.assert_array_equal(at_half, [[1, 0, 2],   # d1 | d2, d3
                                            [1, 1, 1],   # d6 on E | d4 | d10
                                            [1, 0, 0]])  # C
    at_tenth = confusion_matrix(ds, det, 0.1)
    np.testing.assert_array_equal(at_tenth, [[2, 0, 2],   # d1, d7 | d2, d3
                                             [0, 1, 3],   # d4 | d6 (E taken by d7), d8, d10
                                             [1, 0, 0]])  # C


def test_per_class_precision_recall_at_the_threshold():
    ds, det = _case()
    point = operating_point(ds, det, score_thr=0.5)
    assert point.chosen_by == "given" and point.score_thr == 0.5
    cat, dog = point.per_class()
    assert (cat["gts"], cat["dets"], cat["tp"], cat["fp"], cat["fn"]) == (3, 3, 1, 2, 2)
    assert cat["precision"] == pytest.approx(1 / 3) and cat["recall"] == pytest.approx(1 / 3)
    assert cat["f1"] == pytest.approx(1 / 3)
    assert (dog["gts"], dog["dets"], dog["tp"], dog["fp"], dog["fn"]) == (1, 3, 1, 2, 0)
    assert dog["precision"] == pytest.approx(1 / 3) and dog["recall"] == 1.0 and dog["f1"] == pytest.approx(0.5)
    every = point.overall()
    assert (every["tp"], every["fp"], every["fn"]) == (2, 4, 2)
    assert every["f1"] == pytest.approx(4 / 10)
    table = point.table()
    assert "score >= 0.5 (given)" in table and "precision" in table and "cat" in table
    js = point.to_json()
    assert js["score_thr"] == 0.5 and js["confusion_matrix"]["labels"] == ["cat", "dog", "background"]
    assert js["per_class"][0]["recall"] == pytest.approx(1 / 3)


def test_class_aware_outcomes_and_pr_curve():
    ds, det = _case()
    m = match_detections(ds, det)
    assert list(m.num_gts) == [3, 1]
    # in the order added: d1 TP, d2 FP, d3 FP, d4 TP, d8 FP | d6 FP, d7 TP, d9 ignored, d10 FP
    assert list(m.outcome) == [1, 0, 0, 1, 0, 0, 1, -1, 0]
    scores, precision, recall = pr_curve(m, CAT)  # d1 .9 TP, d2 .8 FP, d3 .7 FP, d7 .2 TP (d9 left out)
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.7, 0.2])
    np.testing.assert_allclose(precision, [1, 1 / 2, 1 / 3, 2 / 4])
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 1 / 3, 2 / 3])


def _one_class(scores, hits, num_gts=2):
    """One image, ``num_gts`` cats side by side; detection i lies on cat i's box when ``hits[i]``
    is that index, far from every cat when it is None."""
    gts = np.array([[i * 40, 0, i * 40 + 30, 30] for i in range(num_gts)], np.float32)
    rec = ImageRecord(1, "a.jpg", 400, 100, gts, np.zeros(num_gts, np.int32))
    boxes = [gts[h] if h is not None else [300, 60, 330, 90] for h in hits]
    det = Detections()
    det.add(1, boxes, scores, np.zeros(len(scores), np.int32))
    return DetectionDataset([rec], ["cat"], [1], "mem"), det


def test_f1_optimal_threshold_worked_by_hand():
    # 2 cats; scores 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP, 0.5 FP. F1 = 2TP / (2TP + FP + FN):
    # >=0.9: 2/3; >=0.8: 2/4; >=0.7: 4/5 (best); >=0.6: 4/6; >=0.5: 4/7
    ds, det = _one_class([0.9, 0.8, 0.7, 0.6, 0.5], [0, None, 1, None, None])
    m = match_detections(ds, det)
    thresholds, f1 = f1_curve(m)
    np.testing.assert_allclose(thresholds, [0.9, 0.8, 0.7, 0.6, 0.5])
    np.testing.assert_allclose(f1, [2 / 3, 2 / 4, 4 / 5, 4 / 6, 4 / 7])
    assert f1_optimal_threshold(m) == pytest.approx(0.7)
    point = operating_point(ds, det)
    assert point.chosen_by.startswith("F1-optimal") and point.score_thr == pytest.approx(0.7)
    assert point.overall()["f1"] == pytest.approx(4 / 5)  # the matrix at the threshold agrees with the curve


def test_f1_threshold_admits_a_score_tie_whole_and_prefers_the_higher_threshold():
    # A false positive tied with the second hit at 0.7: a threshold keeps both or neither.
    # >=0.9: TP1 FP0 FN1 -> 2/3; >=0.7: TP2 FP1 -> 4/5; >=0.4: TP2 FP2 -> 4/6.
    ds, det = _one_class([0.9, 0.7, 0.7, 0.4], [0, None, 1, None])
    thresholds, f1 = f1_curve(match_detections(ds, det))
    np.testing.assert_allclose(thresholds, [0.9, 0.7, 0.4])
    np.testing.assert_allclose(f1, [2 / 3, 4 / 5, 4 / 6])
    # Equal F1 at 0.9 (TP1 FP0 FN1: 2/3) and 0.6 (TP2 FP2 FN0: 4/6), less between: the higher wins.
    ds, det = _one_class([0.9, 0.8, 0.7, 0.6], [0, None, None, 1])
    assert f1_optimal_threshold(match_detections(ds, det)) == pytest.approx(0.9)


def test_nothing_detected():
    ds, _ = _case()
    point = operating_point(ds, Detections())
    assert point.chosen_by == "no detections"
    np.testing.assert_array_equal(point.confusion, [[0, 0, 0], [0, 0, 0], [3, 1, 0]])
    assert point.overall()["recall"] == 0.0 and point.overall()["precision"] == 0.0


def cocoeval_counts(dataset, detections, score_thr):
    """Per class ``(tp, counted, gts)`` by stock pycocotools at IoU 0.5 (no cap on detections an
    image): detections with score >= ``score_thr`` it matches, those it does not ignore (crowd), and
    the ground truths it does not ignore."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from rtmdet_keras.evaluation import build_coco_ground_truth, detections_to_coco

    gt = COCO()
    gt.dataset = build_coco_ground_truth(dataset)
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(detections_to_coco(dataset, detections)), "bbox")
    ev.params.imgIds = sorted(gt.getImgIds())
    ev.params.maxDets = [1, 10, 10_000]  # no cap: the threshold alone decides what counts
    ev.evaluate()
    everything = [e for e in ev.evalImgs if e is not None and e["aRng"] == ev.params.areaRng[0]]
    counts = []
    for cat_id in dataset.category_ids:
        entries = [e for e in everything if e["category_id"] == cat_id]
        scores = np.concatenate([np.asarray(e["dtScores"]) for e in entries] + [np.zeros(0)])
        matched = np.concatenate([e["dtMatches"][0] > 0 for e in entries] + [np.zeros(0, bool)])
        ignored = np.concatenate([e["dtIgnore"][0].astype(bool) for e in entries] + [np.zeros(0, bool)])
        kept = (scores >= np.float32(score_thr)) & ~ignored
        counts.append((int((kept & matched).sum()), int(kept.sum()),
                       sum(int((e["gtIgnore"] == 0).sum()) for e in entries)))
    return counts


@pytest.mark.parametrize("seed", range(2))
def test_true_positives_are_pycocotools_matches_at_iou_half(seed):
    """On random images (crowd regions, IoU and score ties, hundreds of boxes), the diagonal of the
    matrix at several thresholds is the number of detections COCOeval matches at IoU 0.5, each row
    sums to the detections it does not ignore and each column to its ground truths."""
    from tests.test_evaluation import _random_case

    ds, det = _random_case(seed)
    total_tp = 0
    for thr in (0.05, 0.3, 0.62, 0.9):
        matrix = confusion_matrix(ds, det, thr)
        for k, (tp, counted, gts) in enumerate(cocoeval_counts(ds, det, thr)):
            assert matrix[k, k] == tp, (thr, k)
            assert matrix[k, :].sum() == counted, (thr, k)
            assert matrix[:, k].sum() == gts, (thr, k)
            total_tp += tp
    assert total_tp > 0  # a case with matches to compare
