"""COCO evaluation against hand-worked cases."""

import numpy as np
import pytest

from rtmdet_keras.data.records import DetectionDataset, ImageRecord
from rtmdet_keras.evaluation import Detections, evaluate_detections, format_comparison_table


def _dataset():
    recs = [
        ImageRecord(1, "a.jpg", 200, 100, np.array([[10, 10, 60, 60]], np.float32), np.array([0], np.int32)),
        ImageRecord(2, "b.jpg", 200, 100, np.array([[100, 20, 150, 70], [20, 20, 70, 70]], np.float32),
                    np.array([1, 0], np.int32)),
        ImageRecord(3, "c.jpg", 200, 100, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32)),
    ]
    # Roboflow style: category 0 is the unused super-category, labels map to ids 1 and 2.
    return DetectionDataset(recs, ["cat", "dog"], [1, 2], "mem")


def test_perfect_detections_score_one():
    ds = _dataset()
    det = Detections()
    for r in ds.records:
        det.add(r.image_id, r.boxes, np.full(len(r.boxes), 0.9), r.labels)
    res = evaluate_detections(ds, det)
    assert res.metrics["bbox_mAP"] == pytest.approx(1.0)
    assert res.metrics["bbox_mAP_50"] == pytest.approx(1.0)
    assert [row["class"] for row in res.per_class] == ["cat", "dog"]
    assert [row["gts"] for row in res.per_class] == [2, 1]
    # The summary is pycocotools' own 12 lines.
    lines = res.summary.rstrip("\n").splitlines()
    assert len(lines) == 12 and lines[0].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95")


def test_shifted_box_passes_only_low_iou_thresholds():
    # One GT 50x50 and one detection shifted by 9 px in x: IoU = 41*50 / (2*2500 - 41*50) = 2050/2950 = 0.695.
    # It matches at IoU thresholds 0.50..0.65 (4 of the 10), so AP50:95 = 0.4, AP50 = 1, AP75 = 0.
    rec = ImageRecord(1, "a.jpg", 200, 100, np.array([[10, 10, 60, 60]], np.float32), np.array([0], np.int32))
    ds = DetectionDataset([rec], ["cat"], [1], "mem")
    det = Detections()
    det.add(1, [[19, 10, 69, 60]], [0.8], [0])
    res = evaluate_detections(ds, det)
    assert res.metrics["bbox_mAP_50"] == pytest.approx(1.0)
    assert res.metrics["bbox_mAP_75"] == pytest.approx(0.0)
    assert res.metrics["bbox_mAP"] == pytest.approx(0.4)


def test_wrong_class_and_no_detections_score_zero():
    ds = _dataset()
    det = Detections()
    det.add(1, ds.records[0].boxes, [0.9], [1])  # right place, wrong class
    res = evaluate_detections(ds, det)
    assert res.metrics["bbox_mAP"] == pytest.approx(0.0)
    empty = evaluate_detections(ds, Detections())
    assert empty.metrics["bbox_mAP"] == 0.0 and "no detections" in empty.summary


def test_crowd_regions_do_not_count_as_misses_or_false_positives():
    rec = ImageRecord(1, "a.jpg", 200, 100, np.array([[10, 10, 60, 60]], np.float32), np.array([0], np.int32),
                      crowd_boxes=np.array([[100, 10, 190, 90]], np.float32), crowd_labels=np.array([0], np.int32))
    ds = DetectionDataset([rec], ["cat"], [1], "mem")
    det = Detections()
    det.add(1, [[10, 10, 60, 60], [110, 20, 180, 80]], [0.9, 0.95], [0, 0])
    res = evaluate_detections(ds, det)
    assert res.metrics["bbox_mAP"] == pytest.approx(1.0)


def test_tables_are_readable():
    ds = _dataset()
    det = Detections()
    det.add(1, ds.records[0].boxes, [0.9], [0])
    text = evaluate_detections(ds, det).report()
    assert "cat" in text and "AP50:95" in text
    table = format_comparison_table({"float": {"bbox_mAP": 0.5, "bbox_mAP_50": 0.9}, "int8": {"bbox_mAP": 0.49}})
    assert "float" in table and "0.5000" in table and "nan" in table


def test_crowd_region_only_ignores_detections_of_its_own_class():
    crowd = np.array([[100, 10, 190, 90]], np.float32)
    rec = ImageRecord(1, "a.jpg", 200, 100, np.array([[10, 10, 60, 60]], np.float32), np.array([0], np.int32),
                      crowd_boxes=crowd, crowd_labels=np.array([1], np.int32))
    ds = DetectionDataset([rec], ["cat", "dog"], [1, 2], "mem")
    # A "cat" detection inside the "dog" crowd region is a false positive ranked above the true one.
    det = Detections()
    det.add(1, [[10, 10, 60, 60], [110, 20, 180, 80]], [0.9, 0.95], [0, 0])
    res = evaluate_detections(ds, det)
    assert res.metrics["bbox_mAP"] == pytest.approx(0.5, abs=0.01)
    # The same detection labelled "dog" falls in its own class's crowd region and is ignored.
    det.add(1, [[10, 10, 60, 60], [110, 20, 180, 80]], [0.9, 0.95], [0, 1])
    assert evaluate_detections(ds, det).metrics["bbox_mAP"] == pytest.approx(1.0)


def _random_case(seed):
    """Several images with boxes of every COCO area range, crowd regions, exact IoU ties and many
    low-score detections near and far from the ground truth."""
    rng = np.random.default_rng(seed)
    recs, det = [], Detections()
    for image_id in range(1, 9):
        n = int(rng.integers(0, 7))
        xy = rng.uniform(0, 300, (n, 2))
        wh = (rng.choice([6.0, 20.0, 50.0, 120.0], n) * rng.uniform(0.8, 1.2, n))[:, None].repeat(2, 1)
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        labels = rng.integers(0, 2, n).astype(np.int32)
        crowd = np.array([[0, 0, 150, 150]], np.float32) if image_id % 3 == 0 else np.zeros((0, 4), np.float32)
        recs.append(ImageRecord(image_id, f"{image_id}.jpg", 420, 420, boxes, labels,
                                crowd, np.zeros((len(crowd),), np.int32)))
        if image_id == 8:
            continue  # an image with no detections at all
        k = int(rng.integers(0, 160))
        jitter = boxes[rng.integers(0, max(n, 1), k)] if n else rng.uniform(0, 300, (k, 4)).astype(np.float32)
        if n:
            jitter = jitter + rng.normal(0, rng.choice([1.0, 8.0, 40.0], (k, 1)), (k, 4))
        d_boxes = np.concatenate([np.minimum(jitter[:, :2], jitter[:, 2:]), np.maximum(jitter[:, :2], jitter[:, 2:])], 1)
        if n:
            d_boxes[:3] = boxes[0] + np.array([0, 0, 0.0, 0])  # duplicates: exact ties in IoU
        scores = np.round(rng.uniform(0.001, 1, k), 2)  # rounded: ties in score too
        det.add(image_id, d_boxes, scores, rng.integers(0, 2, k))
    return DetectionDataset(recs, ["a", "b"], [3, 7], "mem"), det


@pytest.mark.parametrize("seed", range(4))
def test_fast_matching_equals_pycocotools(seed):
    """The evaluation's own result object and per-image matching give pycocotools' exact numbers."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from rtmdet_keras.evaluation import build_coco_ground_truth, detections_to_coco

    ds, det = _random_case(seed)
    ours = evaluate_detections(ds, det)

    gt = COCO()
    gt.dataset = build_coco_ground_truth(ds)
    gt.createIndex()
    stock = COCOeval(gt, gt.loadRes(detections_to_coco(ds, det)), "bbox")
    stock.params.imgIds = sorted(gt.getImgIds())
    stock.evaluate()
    stock.accumulate()
    stock.summarize()
    assert [ours.metrics[k] for k in ours.metrics] == pytest.approx(list(stock.stats), abs=0, rel=0)
    assert 0 < ours.metrics["bbox_mAP"] < 1  # a case that exercises matches and misses
