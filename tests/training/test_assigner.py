"""DynamicSoftLabelAssigner: a hand-worked assignment, and random batches against a plain NumPy loop
re-implementation of mmdetection's algorithm (``reference_assign`` below, written from the paper and
mmdetection's description, not from the TensorFlow code)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from rtmdet_keras.boxes import make_priors
from rtmdet_keras.training.assigner import DynamicSoftLabelAssigner, dynamic_soft_label_assign


# ---------------------------------------------------------------------------------------------
# NumPy loop reference (float64, one image at a time, one pair at a time).
# ---------------------------------------------------------------------------------------------
def _iou(a, b):
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    area = lambda r: max(r[2] - r[0], 0.0) * max(r[3] - r[1], 0.0)  # noqa: E731
    return inter / max(area(a) + area(b) - inter, 1e-6)


def _bce(x, t):
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


def reference_assign(logits, pred, priors, gt, labels, topk=13, iou_weight=3.0, radius=3.0,
                     class_cost="all_classes"):
    """One image. Returns (labels [P], scores [P], gt index [P] (-1 bg), dynamic k per GT, info)."""
    logits = np.asarray(logits, np.float64)
    num_p, num_c = logits.shape
    out_labels = np.full(num_p, num_c)
    out_scores = np.zeros(num_p)
    out_index = np.full(num_p, -1)
    real = [j for j in range(len(labels)) if labels[j] >= 0]
    dyn_k = {}
    info = {"conflicts": 0, "min_k_margin": np.inf, "min_cost_gap": np.inf}
    valid = [p for p in range(num_p)
             if any(min(priors[p][0] - gt[j][0], priors[p][1] - gt[j][1],
                        gt[j][2] - priors[p][0], gt[j][3] - priors[p][1]) > 0 for j in real)]
    if not real or not valid:
        return out_labels, out_scores, out_index, dyn_k, info
    iou = np.zeros((len(valid), len(real)))
    cost = np.zeros((len(valid), len(real)))
    for i, p in enumerate(valid):
        x, y, s = priors[p]
        for jj, j in enumerate(real):
            u = _iou(pred[p], gt[j])
            cx, cy = (gt[j][0] + gt[j][2]) / 2, (gt[j][1] + gt[j][3]) / 2
            dist = math.hypot(x - cx, y - cy) / s
            cls = 0.0
            for c in range(num_c):
                if c != labels[j] and class_cost == "gt_class":
                    continue
                t = u if c == labels[j] else 0.0
                sig = 1.0 / (1.0 + math.exp(-logits[p, c]))
                cls += _bce(logits[p, c], t) * abs(t - sig) ** 2
            iou[i, jj] = u
            cost[i, jj] = cls - math.log(u + 1e-7) * iou_weight + 10.0 ** (dist - radius)
    match = np.zeros_like(iou, bool)
    for jj, j in enumerate(real):
        top = sorted(iou[:, jj], reverse=True)[:topk]
        k = max(int(sum(top)), 1)
        dyn_k[j] = k
        info["min_k_margin"] = min(info["min_k_margin"], abs(sum(top) - round(sum(top))))
        order = np.argsort(cost[:, jj], kind="stable")
        if k < len(order):
            info["min_cost_gap"] = min(info["min_cost_gap"], cost[order[k], jj] - cost[order[k - 1], jj])
        match[order[:k], jj] = True
    for i in range(len(valid)):
        if match[i].sum() > 1:
            info["conflicts"] += 1
            jj = int(np.argmin(cost[i]))
            match[i] = False
            match[i, jj] = True
        if match[i].any():
            jj = int(np.argmax(match[i]))
            p = valid[i]
            out_labels[p] = labels[real[jj]]
            out_scores[p] = iou[i, jj]
            out_index[p] = real[jj]
    return out_labels, out_scores, out_index, dyn_k, info


# ---------------------------------------------------------------------------------------------
# Hand-worked case: 32x32 input, strides 8 and 16 -> 16 P3 priors (4x4) + 4 P4 priors (2x2).
# ---------------------------------------------------------------------------------------------
# Priors (index: point): P3 row-major 0:(0,0) 1:(8,0) .. 5:(8,8) 6:(16,8) 7:(24,8) 9:(8,16)
# 10:(16,16) 11:(24,16); P4 16:(0,0) 17:(16,0) 18:(0,16) 19:(16,16).
GT0 = [4.0, 4, 20, 20]  # class 0, area 256, centre (12, 12); priors inside: 5, 6, 9, 10, 19
GT1 = [12.0, 4, 30, 20]  # class 1, area 288, centre (21, 12); priors inside: 6, 7, 10, 11, 19
# Candidates (inside some GT): 5, 6, 7, 9, 10, 11, 19.
PRED = {
    5: [4, 4, 20, 20],  # = GT0: IoU0 1;            IoU1 128/416
    6: [12, 4, 30, 20],  # = GT1: IoU0 128/416;      IoU1 1
    7: [12, 4, 21, 20],  # IoU0 128/272 = 0.4706;    IoU1 144/288 = 0.5
    9: [4, 4, 20, 14],  # IoU0 160/256 = 0.625;      IoU1 80/368 = 0.2174
    10: [8, 4, 26, 20],  # IoU0 192/352 = 0.5455;    IoU1 224/352 = 0.6364
    19: [12, 4, 30, 12],  # IoU0 64/336 = 0.1905;    IoU1 144/288 = 0.5
}  # every other prior predicts an empty box at its own point (IoU 0 with everything)
# Logits all 0: the class cost is ln2 * (iou - 0.5)^2 (+ ln2/4 for the other class), so the IoU
# cost -3 log(iou) orders the priors; the centre cost only breaks exact IoU ties.
# dynamic k: GT0: 1 + .3077 + .4706 + .625 + .5455 + 0 + .1905 = 3.14 -> 3 (priors 5, 9, 10)
#            GT1: .3077 + 1 + .5 + .2174 + .6364 + 0 + .5 = 3.16 -> 3 (priors 6, 10, then 19 or 7:
#            both IoU 0.5; centre distance 6.40 px / stride 16 = 0.40 for prior 19 beats
#            5 px / stride 8 = 0.625 for prior 7 -- in pixels prior 7 would win).
# Prior 10 is claimed by both GTs; its IoU with GT1 (0.636) beats GT0 (0.545), so GT1 keeps it and
# GT0 ends with priors 5 and 9 only.
WANT_INDEX = {5: 0, 9: 0, 6: 1, 10: 1, 19: 1}
WANT_SCORE = {5: 1.0, 9: 0.625, 6: 1.0, 10: 224 / 352, 19: 0.5}


def _hand_inputs():
    priors = make_priors(32, 32, [8, 16])
    pts = priors.numpy()
    pred = np.concatenate([pts[:, :2], pts[:, :2]], -1)
    for p, box in PRED.items():
        pred[p] = box
    logits = np.zeros((len(pts), 2), np.float32)
    return priors, pred.astype(np.float32), logits


def _check_hand_result(out, b, gt_index_of):
    labels = out["assigned_labels"].numpy()[b]
    scores = out["target_scores"].numpy()[b]
    index = out["matched_gt_index"].numpy()[b]
    boxes = out["target_boxes"].numpy()[b]
    fg = out["fg_mask"].numpy()[b]
    assert sorted(np.nonzero(fg)[0].tolist()) == sorted(WANT_INDEX)
    for p in range(20):
        if p in WANT_INDEX:
            g = WANT_INDEX[p]
            assert index[p] == gt_index_of[g]
            assert labels[p] == g  # GT0 is class 0, GT1 class 1
            assert scores[p] == pytest.approx(WANT_SCORE[p], rel=1e-6)
            np.testing.assert_array_equal(boxes[p], (GT0, GT1)[g])
        else:
            assert index[p] == -1 and labels[p] == 2 and scores[p] == 0.0  # background = num_classes
            np.testing.assert_array_equal(boxes[p], 0.0)


@pytest.mark.parametrize("class_cost", ["all_classes", "gt_class"])
def test_hand_worked_assignment(class_cost):
    priors, pred, logits = _hand_inputs()
    out = dynamic_soft_label_assign(
        logits[None], pred[None], priors, np.array([[GT0, GT1]], np.float32), np.array([[0, 1]], np.int32),
        class_cost=class_cost,
    )
    np.testing.assert_array_equal(out["dynamic_k"].numpy(), [[3, 3]])
    _check_hand_result(out, 0, {0: 0, 1: 1})
    assert out["assigned_labels"].dtype == tf.int32 and out["fg_mask"].dtype == tf.bool


def test_hand_case_agrees_with_numpy_reference():
    priors, pred, logits = _hand_inputs()
    labels, scores, index, dyn_k, info = reference_assign(
        logits, pred, priors.numpy(), [GT0, GT1], [0, 1])
    assert dyn_k == {0: 3, 1: 3} and info["conflicts"] == 1
    assert {p: int(index[p]) for p in np.nonzero(index >= 0)[0]} == WANT_INDEX


def test_padding_is_ignored_and_images_are_independent():
    priors, pred, logits = _hand_inputs()
    big = [0.0, 0, 32, 32]  # a padding box that covers every prior: must change nothing
    gt = np.array([[GT0, big, GT1, big],  # padding in the middle and at the end
                   [big, big, big, big],  # no GT at all
                   [GT1, GT0, big, big]], np.float32)  # the same GTs in the other order
    labels = np.array([[0, -1, 1, -1], [-1, -1, -1, -1], [1, 0, -1, -1]], np.int32)
    logits_b = np.stack([logits] * 3)
    # Image 2 keeps the GT classes tied to their boxes: GT1 is class 1 at index 0.
    out = dynamic_soft_label_assign(logits_b, np.stack([pred] * 3), priors, gt, labels)
    _check_hand_result(out, 0, {0: 0, 1: 2})
    _check_hand_result(out, 2, {0: 1, 1: 0})
    np.testing.assert_array_equal(out["dynamic_k"].numpy(), [[3, 0, 3, 0], [0, 0, 0, 0], [3, 3, 0, 0]])
    assert not out["fg_mask"].numpy()[1].any()
    np.testing.assert_array_equal(out["assigned_labels"].numpy()[1], 2)
    np.testing.assert_array_equal(out["target_scores"].numpy()[1], 0.0)
    np.testing.assert_array_equal(out["matched_gt_index"].numpy()[1], -1)


def test_no_gt_at_all():
    priors, pred, logits = _hand_inputs()
    out = dynamic_soft_label_assign(logits[None], pred[None], priors, np.zeros((1, 0, 4), np.float32),
                                    np.zeros((1, 0), np.int32))
    assert not out["fg_mask"].numpy().any()
    np.testing.assert_array_equal(out["assigned_labels"].numpy(), 2)
    assert out["dynamic_k"].shape == (1, 0)


def test_gt_with_no_prior_inside_takes_the_cheapest_candidate():
    # mmdetection pairs every candidate with every GT: a tiny GT between grid points (no prior
    # inside it) still takes k = 1 prior among those inside the other GT.
    priors, pred, logits = _hand_inputs()
    tiny = [25.0, 25, 27, 27]  # between priors (24, 24) and (32, 32)
    gt = np.array([[GT0, tiny]], np.float32)
    out = dynamic_soft_label_assign(logits[None], pred[None], priors, gt, np.array([[0, 1]], np.int32))
    ref_labels, ref_scores, ref_index, dyn_k, _ = reference_assign(logits, pred, priors.numpy(), gt[0], [0, 1])
    assert dyn_k[1] == 1 and (ref_index == 1).sum() == 1
    np.testing.assert_array_equal(out["matched_gt_index"].numpy()[0], ref_index)
    # Without any candidate in the image, nothing is assigned.
    out = dynamic_soft_label_assign(logits[None], pred[None], priors, np.array([[tiny]], np.float32),
                                    np.array([[0]], np.int32))
    assert not out["fg_mask"].numpy().any()


def test_class_cost_modes_differ_on_other_class_logits():
    # One GT (class 0) on a 32x32 grid at stride 8; priors 5 (8, 8) and 6 (16, 8) are inside it and
    # predict the same box (IoU 0.6 each -> k = int(1.2) = 1). Prior 5 is nearer the GT centre
    # (11.5, 8) but has a confident class-1 logit. "gt_class" ignores that logit and the centre
    # cost picks prior 5; "all_classes" adds softplus(3) * sigmoid(3)^2 = 2.77 to prior 5's cost
    # (0.17 to prior 6's), so prior 6 wins.
    priors = make_priors(32, 32, [8])
    pts = priors.numpy()
    pred = np.concatenate([pts[:, :2], pts[:, :2]], -1)
    gt = [2.0, 2, 21, 14]  # area 228; the predicted box below has area 136.8 inside it: IoU 0.6
    pred[5] = pred[6] = [2, 2, 13.4, 14]
    logits = np.zeros((16, 2), np.float32)
    logits[5, 1] = 3.0
    args = (logits[None], pred[None].astype(np.float32), priors, np.array([[gt]], np.float32),
            np.array([[0]], np.int32))
    for mode, winner in (("gt_class", 5), ("all_classes", 6)):
        out = dynamic_soft_label_assign(*args, class_cost=mode)
        assert np.nonzero(out["fg_mask"].numpy()[0])[0].tolist() == [winner], mode
        assert out["target_scores"].numpy()[0, winner] == pytest.approx(0.6, rel=1e-5)
        _, _, ref_index, _, _ = reference_assign(logits, pred, pts, [gt], [0], class_cost=mode)
        assert np.nonzero(ref_index >= 0)[0].tolist() == [winner]


# ---------------------------------------------------------------------------------------------
# Random batches against the reference.
# ---------------------------------------------------------------------------------------------
def _random_batch(rng, batch, height, width, strides, num_gt, num_classes):
    priors = make_priors(height, width, strides)
    pts = priors.numpy()
    num_p = len(pts)
    ltrb = rng.uniform(0.3, 3.0, (batch, num_p, 4)) * pts[None, :, 2:3]  # around each prior
    pred = np.concatenate([pts[None, :, :2] - ltrb[..., :2], pts[None, :, :2] + ltrb[..., 2:]], -1)
    logits = rng.normal(0.0, 2.0, (batch, num_p, num_classes))
    xy = rng.uniform(0, [width - 8, height - 8], (batch, num_gt, 2))
    wh = rng.uniform(6, 48, (batch, num_gt, 2))
    gt = np.concatenate([xy, np.minimum(xy + wh, [width, height])], -1)
    labels = rng.integers(0, num_classes, (batch, num_gt))
    return priors, pred.astype(np.float32), logits.astype(np.float32), gt.astype(np.float32), labels.astype(np.int32)


@pytest.mark.parametrize("class_cost", ["all_classes", "gt_class"])
def test_random_batch_matches_reference(class_cost):
    rng = np.random.default_rng(7)
    priors, pred, logits, gt, labels = _random_batch(rng, 3, 64, 96, [8, 16, 32], 7, 3)
    labels[1, [2, 5, 6]] = -1  # padding inside and at the end
    labels[2, 3:] = -1
    out = dynamic_soft_label_assign(logits, pred, priors, gt, labels, class_cost=class_cost)
    conflicts = 0
    for b in range(3):
        ref_labels, ref_scores, ref_index, dyn_k, info = reference_assign(
            logits[b], pred[b], priors.numpy(), gt[b], labels[b], class_cost=class_cost)
        # The case must not sit on a knife edge between float32 and float64.
        assert info["min_k_margin"] > 1e-3 and info["min_cost_gap"] > 1e-3, info
        conflicts += info["conflicts"]
        np.testing.assert_array_equal(out["matched_gt_index"].numpy()[b], ref_index)
        np.testing.assert_array_equal(out["assigned_labels"].numpy()[b], ref_labels)
        np.testing.assert_allclose(out["target_scores"].numpy()[b], ref_scores, rtol=1e-5, atol=1e-6)
        want_k = [dyn_k.get(j, 0) for j in range(gt.shape[1])]
        np.testing.assert_array_equal(out["dynamic_k"].numpy()[b], want_k)
        fg = ref_index >= 0
        np.testing.assert_array_equal(out["target_boxes"].numpy()[b][fg], gt[b][ref_index[fg]])
    assert conflicts > 0  # the case exercises the several-GTs-claim-one-prior rule
    assert out["fg_mask"].numpy().sum() > 10


def test_layer_config_graph_and_no_gradient():
    rng = np.random.default_rng(1)
    priors, pred, logits, gt, labels = _random_batch(rng, 2, 64, 64, [8, 16, 32], 5, 2)
    layer = DynamicSoftLabelAssigner(num_classes=2, topk=9, iou_weight=2.5, soft_center_radius=2.0,
                                     class_cost="gt_class", name="assigner")
    config = layer.get_config()
    clone = DynamicSoftLabelAssigner.from_config(config)
    assert (clone.topk, clone.iou_weight, clone.soft_center_radius, clone.class_cost, clone.num_classes) == (
        9, 2.5, 2.0, "gt_class", 2)
    eager = dynamic_soft_label_assign(logits, pred, priors, gt, labels, topk=9, iou_weight=2.5,
                                      soft_center_radius=2.0, class_cost="gt_class")
    # Graph mode with unknown batch size and GT count.
    spec = [tf.TensorSpec([None, None, 2]), tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, 3]),
            tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None], tf.int32)]
    graph = tf.function(lambda *a: clone(*a), input_signature=spec)(logits, pred, priors, gt, labels)
    for key in eager:
        np.testing.assert_array_equal(graph[key].numpy(), eager[key].numpy())
    logits_v = tf.Variable(logits)
    pred_v = tf.Variable(pred)
    with tf.GradientTape() as tape:
        out = layer(logits_v, pred_v, priors, gt, labels)
        total = tf.reduce_sum(out["target_scores"]) + tf.reduce_sum(out["target_boxes"])
    assert all(g is None for g in tape.gradient(total, [logits_v, pred_v]))
    with pytest.raises(ValueError, match="num_classes=3"):
        DynamicSoftLabelAssigner(num_classes=3)(logits, pred, priors, gt, labels)
    with pytest.raises(ValueError, match="class_cost"):
        DynamicSoftLabelAssigner(class_cost="mmdet")


def test_shared_prior_goes_to_cheapest_gt_of_the_whole_row():
    # mmdetection resolves a prior claimed by several GTs with argmin over *all* the image's GTs,
    # not only the claimants. Here priors 5 (8, 8) and 9 (8, 16) are candidates (6 too, predicting
    # an empty box); class_cost="gt_class", logits 0 except prior 9's class-0 logit of -10.
    #   A = (0, 0, 10, 20) class 0, B = (0, 0, 20, 10) class 0, C = (0, 0, 10, 12.5) class 1.
    #   prior 5 predicts (0, 0, 10, 10): IoU A 100/200 = .5, B .5, C 100/125 = .8
    #   prior 9 predicts (0, 0, 10, 11.25): IoU A .5625, B 100/212.5 = .47, C .9
    # Every k is 1 (IoU sums 1.06, 0.97, 1.7). A and B both take prior 5: its cost is
    # -3 ln .5 = 2.08 against about 3.5 and 3.3 for prior 9, whose -10 logit costs it
    # (10 t) t^2 more. C takes prior 9 (0.43 against 0.73 for prior 5). Prior 5 is shared by A and
    # B, but its cheapest GT overall is C: it goes to C, and A and B end with no prior.
    priors = make_priors(32, 32, [8, 16])
    pts = priors.numpy()
    pred = np.concatenate([pts[:, :2], pts[:, :2]], -1)
    pred[5] = [0, 0, 10, 10]
    pred[9] = [0, 0, 10, 11.25]
    logits = np.zeros((len(pts), 2), np.float32)
    logits[9, 0] = -10.0
    gt = np.array([[[0, 0, 10, 20], [0, 0, 20, 10], [0, 0, 10, 12.5]]], np.float32)
    labels = np.array([[0, 0, 1]], np.int32)
    out = dynamic_soft_label_assign(logits[None], pred[None].astype(np.float32), priors, gt, labels,
                                    class_cost="gt_class")
    np.testing.assert_array_equal(out["dynamic_k"].numpy(), [[1, 1, 1]])
    index = out["matched_gt_index"].numpy()[0]
    assert {int(p): int(index[p]) for p in np.nonzero(index >= 0)[0]} == {5: 2, 9: 2}
    np.testing.assert_allclose(out["target_scores"].numpy()[0, [5, 9]], [0.8, 0.9], rtol=1e-6)
    np.testing.assert_array_equal(out["assigned_labels"].numpy()[0, [5, 9]], [1, 1])
    _, _, ref_index, _, info = reference_assign(logits, pred, pts, gt[0], labels[0], class_cost="gt_class")
    np.testing.assert_array_equal(index, ref_index)
    assert info["conflicts"] == 1
