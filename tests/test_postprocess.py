"""Decode + NMS on hand-made network outputs."""

import numpy as np
import pytest
import tensorflow as tf

from rtmdet_keras.config import load_config
from rtmdet_keras.postprocess import decode_and_nms


def _outputs(h, w, num_classes, strides=(8, 16, 32)):
    out = {}
    for s, name in zip(strides, ("p3", "p4", "p5")):
        out[f"cls_{name}"] = np.full((1, h // s, w // s, num_classes), -20.0, np.float32)
        out[f"reg_{name}"] = np.ones((1, h // s, w // s, 4), np.float32)
    return out


def test_decode_nms_by_hand():
    cfg = load_config("nano", ["num_classes=2", "imgsz=64"])
    out = _outputs(64, 64, 2)
    # P3 prior at grid (y=2, x=3) is the point (24, 16); distances (1,1,1,1) stride 8 -> box (16, 8, 32, 24).
    out["cls_p3"][0, 2, 3, 0] = 3.0
    # Its neighbour (32, 16) gives box (24, 8, 40, 24): IoU 1/3 with the first -> kept at iou_thr 0.65.
    out["cls_p3"][0, 2, 4, 0] = 2.0
    out["cls_p3"][0, 2, 3, 1] = 1.0  # same place, other class: class-aware NMS keeps it
    out["reg_p4"][0, 1, 1] = [1.5, 1.5, 0.5, 0.5]  # point (16, 16), stride 16 -> box (-8, -8, 24, 24)
    out["cls_p4"][0, 1, 1, 0] = 0.0  # score 0.5, IoU with first box 256/1024 = 0.25 -> kept
    boxes, scores, labels, valid = (np.asarray(t) for t in decode_and_nms(out, cfg))
    n = int(valid[0])
    got = sorted(zip(np.round(scores[0, :n], 4), labels[0, :n], map(tuple, boxes[0, :n])), reverse=True)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    assert [(round(float(s), 4), int(l)) for s, l, _ in got] == [
        (round(sig(3.0), 4), 0), (round(sig(2.0), 4), 0), (round(sig(1.0), 4), 1), (0.5, 0)]
    assert got[0][2] == pytest.approx((16, 8, 32, 24))
    assert got[1][2] == pytest.approx((24, 8, 40, 24))
    assert got[3][2] == pytest.approx((-8, -8, 24, 24))  # not clipped: mapping back clips to the image


def test_overlapping_boxes_of_one_class_are_suppressed_and_exp_on_reg():
    cfg = load_config("m", ["num_classes=1", "imgsz=64"])  # exp_on_reg: distance = exp(reg) * stride
    out = _outputs(64, 64, 1)
    out["reg_p3"][:] = 0.0  # exp(0) * 8 = 8 px each side
    out["cls_p3"][0, 4, 4, 0] = 2.0  # point (32, 32): box (24, 24, 40, 40)
    out["cls_p3"][0, 4, 5, 0] = 1.0  # point (40, 32): IoU 8*16 / (2*256 - 128) = 1/3 -> kept
    out["reg_p3"][0, 5, 4] = [-0.1, -0.1, -0.1, -0.1]  # point (32, 40), 7.24 px: IoU with the first 0.29
    out["cls_p3"][0, 5, 4, 0] = 1.5
    boxes, scores, labels, valid = (np.asarray(t) for t in decode_and_nms(out, cfg))
    assert int(valid[0]) == 3
    assert boxes[0, 0] == pytest.approx((24, 24, 40, 40))
    # Now put a near-duplicate of the first box: IoU (7.24*2)^2 / 256 = 0.82 > 0.65 -> suppressed.
    out["reg_p3"][0, 4, 4] = [0, 0, 0, 0]
    out["cls_p3"][0, 5, 4, 0] = -20.0
    out["cls_p3"][0, 4, 3, 0] = 1.8
    out["reg_p3"][0, 4, 3] = [np.log(0.1), 0.0, np.log(2.0), 0.0]  # point (24, 32): box (23.2, 24, 40, 40)
    boxes, scores, labels, valid = (np.asarray(t) for t in decode_and_nms(out, cfg))
    assert int(valid[0]) == 2  # the first and its neighbour at (40, 32); the near-duplicate is gone


def test_nms_pre_keeps_only_the_best_candidates():
    cfg = load_config("nano", ["num_classes=1", "imgsz=64", "test.nms_pre=2", "test.score_thr=0.0"])
    out = _outputs(64, 64, 1)
    for i, x in enumerate(range(0, 8, 2)):  # 4 far-apart candidates with rising scores
        out["cls_p3"][0, 0, x, 0] = float(i)
        out["reg_p3"][0, 0, x] = [0.1, 0.1, 0.1, 0.1]
    boxes, scores, labels, valid = (np.asarray(t) for t in decode_and_nms(out, cfg))
    n = int(valid[0])
    kept = sorted(np.round(scores[0, :n], 3))
    assert kept[-2:] == pytest.approx([1 / (1 + np.exp(-2)), 1 / (1 + np.exp(-3))], abs=1e-3)
    assert n == 2


def test_works_inside_tf_function_with_unknown_batch():
    import tensorflow as tf

    cfg = load_config("nano", ["num_classes=2", "imgsz=64"])
    out = _outputs(64, 64, 2)
    out["cls_p3"][0, 2, 3, 0] = 3.0
    spec = {k: tf.TensorSpec([None, *v.shape[1:]], tf.float32) for k, v in out.items()}
    fn = tf.function(lambda o: decode_and_nms(o, cfg), input_signature=[spec])
    boxes, scores, labels, valid = (np.asarray(t) for t in fn(out))
    assert int(valid[0]) == 1 and boxes[0, 0] == pytest.approx((16, 8, 32, 24))


def test_eval_batch_cache_keeps_small_splits_and_gives_the_same_detections(demo_config):
    """Training's predictor decodes the validation split once and reuses it; the detections equal
    those of the streaming pipeline, and a split over the memory budget streams instead."""
    from rtmdet_keras.data import load_split
    from rtmdet_keras.data.pipeline import build_eval_pipeline
    from rtmdet_keras.models import build_model
    from rtmdet_keras.postprocess import EvalBatchCache, detections_for_dataset, make_dataset_predictor

    demo_config.imgsz = (64, 64)
    val = load_split(demo_config, "val")
    cache = EvalBatchCache(demo_config, batch_size=3)
    first = cache(val)
    assert first is not None and cache(val) is first  # decoded once
    streamed = list(build_eval_pipeline(val, demo_config, 3))
    assert len(first) == len(streamed) == 3  # 8 images: 3 + 3 + 2
    for (img_c, meta_c), (img_s, meta_s) in zip(first, streamed):
        np.testing.assert_array_equal(img_c, img_s.numpy())
        np.testing.assert_array_equal(meta_c["image_id"], meta_s["image_id"].numpy())
    assert EvalBatchCache(demo_config, batch_size=3, max_bytes=8 * 64 * 64 * 3 - 1)(val) is None

    network = build_model(demo_config)
    predict = make_dataset_predictor(network, demo_config, batch_size=3)
    step = tf.function(lambda images: decode_and_nms(network(tf.cast(images, tf.float32), training=False),
                                                     demo_config))
    cached, plain = predict(val), detections_for_dataset(step, val, demo_config, 3)
    assert sorted(cached.boxes) == sorted(plain.boxes) == sorted(r.image_id for r in val.records)
    for image_id in plain.boxes:
        np.testing.assert_allclose(cached.boxes[image_id], plain.boxes[image_id], atol=1e-4)
        np.testing.assert_allclose(cached.scores[image_id], plain.scores[image_id], atol=1e-6)
