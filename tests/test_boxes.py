"""Box ops: priors, flattening, decoding, IoU and GIoU against values worked out by hand."""

import numpy as np
import pytest
import tensorflow as tf

from rtmdet_keras.levels import level_names
from rtmdet_keras.boxes import (
    aligned_giou,
    aligned_iou,
    decode_predictions,
    distances_to_boxes,
    flatten_levels,
    make_priors,
    pairwise_iou,
)


def test_priors_grid_points_level_by_level_row_major():
    priors = make_priors(32, 32, [8, 16]).numpy()
    p3 = [(x, y, 8) for y in (0, 8, 16, 24) for x in (0, 8, 16, 24)]
    p4 = [(0, 0, 16), (16, 0, 16), (0, 16, 16), (16, 16, 16)]
    assert priors.dtype == np.float32
    np.testing.assert_array_equal(priors, np.array(p3 + p4, np.float32))


def test_prior_count_matches_rtmdet_sizes():
    assert make_priors(192, 192, [8, 16, 32]).shape == (576 + 144 + 36, 3)  # 756
    assert make_priors(640, 640, [8, 16, 32]).shape == (8400, 3)
    # Non-square: 64 high, 96 wide at stride 32 is 2 rows x 3 columns.
    p = make_priors(64, 96, [32]).numpy()
    np.testing.assert_array_equal(p[:, :2], [[0, 0], [32, 0], [64, 0], [0, 32], [32, 32], [64, 32]])


def test_level_names():
    assert level_names([8, 16, 32]) == ["p3", "p4", "p5"]
    with pytest.raises(ValueError):
        level_names([8, 12])


def test_flatten_levels_follows_prior_order():
    # Level maps whose value is the prior's own (x, y): flattening must reproduce make_priors.
    priors = make_priors(32, 64, [8, 16]).numpy()
    outputs = {}
    for s, name in ((8, "p3"), (16, "p4")):
        ys, xs = np.meshgrid(np.arange(32 // s), np.arange(64 // s), indexing="ij")
        m = np.stack([xs * s, ys * s], -1).astype(np.float32)[None]
        outputs[f"reg_{name}"] = np.concatenate([m, m + 1000], 0)  # batch of 2
        outputs[f"cls_{name}"] = m[..., :1]
    # Dict order must not matter: the level number decides.
    shuffled = {k: outputs[k] for k in ("reg_p4", "cls_p4", "reg_p3", "cls_p3")}
    flat = flatten_levels(shuffled, prefix="reg").numpy()
    assert flat.shape == (2, len(priors), 2)
    np.testing.assert_array_equal(flat[0], priors[:, :2])
    np.testing.assert_array_equal(flat[1], priors[:, :2] + 1000)
    as_list = flatten_levels([outputs["reg_p3"], outputs["reg_p4"]]).numpy()
    np.testing.assert_array_equal(as_list, flat)
    assert flatten_levels(outputs, prefix="cls").shape == (1, len(priors), 1)
    with pytest.raises(KeyError):
        flatten_levels(outputs, prefix="box")


def test_distances_to_boxes_and_decode():
    priors = tf.constant([[8.0, 16.0, 8.0], [32.0, 0.0, 16.0]])
    reg = tf.constant([[[1.0, 2.0, 3.0, 4.0], [0.5, 0.0, 1.0, 2.0]]])  # stride units
    # (x - l*s, y - t*s, x + r*s, y + b*s)
    want = [[[0, 0, 32, 48], [24, 0, 48, 32]]]
    np.testing.assert_allclose(decode_predictions(reg, priors).numpy(), want)
    np.testing.assert_allclose(distances_to_boxes(priors, reg * 8.0).numpy()[0, 0], [0, 0, 32, 48])
    # exp_on_reg: reg = log(2) is two strides.
    log2 = np.log(2.0)
    got = decode_predictions(tf.fill([1, 2, 4], log2), priors, exp_on_reg=True).numpy()
    np.testing.assert_allclose(got, [[[-8, 0, 24, 32], [0, -32, 64, 32]]], atol=1e-5)


def test_decode_accepts_output_dict():
    priors = make_priors(16, 16, [8, 16])  # 4 + 1 priors
    outputs = {"reg_p3": tf.ones([1, 2, 2, 4]), "reg_p4": tf.ones([1, 1, 1, 4]) * 2}
    got = decode_predictions(outputs, priors).numpy()[0]
    np.testing.assert_allclose(got[0], [-8, -8, 8, 8])
    np.testing.assert_allclose(got[3], [0, 0, 16, 16])
    np.testing.assert_allclose(got[4], [-32, -32, 32, 32])


def test_pairwise_iou_by_hand():
    a = tf.constant([[0.0, 0, 2, 2], [0, 0, 4, 4]])
    b = tf.constant([[1.0, 1, 3, 3], [0, 0, 2, 2], [10, 10, 11, 11]])
    # inter 1, union 4 + 4 - 1 = 7 | identical | disjoint
    # inter 4, union 16 + 4 - 4 = 16 | 4 / 16 | disjoint
    want = [[1 / 7, 1.0, 0.0], [4 / 16, 4 / 16, 0.0]]
    np.testing.assert_allclose(pairwise_iou(a, b).numpy(), want, rtol=1e-6)
    # Batched: [B, N, 4] x [B, M, 4] -> [B, N, M], each image on its own.
    got = pairwise_iou(tf.stack([a, a[::-1]]), tf.stack([b, b])).numpy()
    np.testing.assert_allclose(got[0], want, rtol=1e-6)
    np.testing.assert_allclose(got[1], want[::-1], rtol=1e-6)


def test_iou_of_degenerate_boxes_is_finite():
    point = tf.constant([[5.0, 5, 5, 5]])
    inverted = tf.constant([[6.0, 6, 2, 2]])
    zeros = tf.zeros([1, 4])
    for x in (point, inverted, zeros):
        for y in (point, inverted, zeros, tf.constant([[0.0, 0, 10, 10]])):
            assert np.isfinite(pairwise_iou(x, y).numpy()).all()
            assert np.isfinite(aligned_giou(x, y).numpy()).all()
    assert pairwise_iou(point, point).numpy()[0, 0] == 0.0
    # An inverted box has no area (mmdetection's formula would give it a positive one).
    assert aligned_iou(inverted[0], tf.constant([2.0, 2, 6, 6])).numpy() == 0.0


def test_aligned_iou_and_giou_by_hand():
    a = tf.constant([[[0.0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 2, 2]],
                     [[3.0, 3, 7, 9], [0, 0, 1, 1], [0, 0, 2, 2]]])
    b = tf.constant([[[0.0, 0, 2, 2], [2, 0, 3, 1], [1, 1, 3, 3]],
                     [[3.0, 3, 7, 9], [0, 3, 1, 4], [0, 0, 1, 1]]])
    # identical -> 1 | disjoint side by side: union 2, hull 3x1 -> 0 - 1/3 | overlap: 1/7 - (9-7)/9
    # identical -> 1 | disjoint, hull 1x4: 0 - 2/4 | b inside a: iou 1/4, hull = a -> 1/4
    want_iou = [[1.0, 0.0, 1 / 7], [1.0, 0.0, 0.25]]
    want_giou = [[1.0, -1 / 3, 1 / 7 - 2 / 9], [1.0, -0.5, 0.25]]
    np.testing.assert_allclose(aligned_iou(a, b).numpy(), want_iou, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(aligned_giou(a, b).numpy(), want_giou, rtol=1e-6, atol=1e-7)


def test_giou_gradient_is_finite_for_degenerate_prediction():
    pred = tf.Variable([[4.0, 4, 4, 4], [0, 0, 0, 0]])
    target = tf.constant([[0.0, 0, 8, 8], [0, 0, 0, 0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(1.0 - aligned_giou(pred, target))
    grad = tape.gradient(loss, pred).numpy()
    assert np.isfinite(grad).all()
