"""QFL, GIoU and the RTMDet normaliser against hand-computed values; the assigner and the losses
training a tiny model in a tf.function with Keras 3 (``fit``) and with tf_keras (the QAT twin)."""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from rtmdet_keras.boxes import decode_predictions, flatten_levels, make_priors
from rtmdet_keras.training.assigner import DynamicSoftLabelAssigner, dynamic_soft_label_assign
from rtmdet_keras.training.losses import (
    GIoULoss,
    QualityFocalLoss,
    giou_loss,
    loss_normalizer,
    qfl_targets,
    quality_focal_loss,
    rtmdet_loss,
)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def qfl_by_hand(x, t):
    # BCE written from its definition, -(t log p + (1 - t) log(1 - p)), times |t - p|^2.
    p = sigmoid(x)
    return -(t * math.log(p) + (1 - t) * math.log(1 - p)) * abs(t - p) ** 2


def test_qfl_single_values_by_hand():
    # x = 0, t = 0.5: sigmoid is exactly the target -> 0.
    # x = 0, t = 0: ln 2 * 0.25 = 0.17329.  x = 2, t = 1: log(1 + e^-2) * (1 - 0.880797)^2 = 0.0018035.
    # x = -1, t = 0: log(1 + e^-1) * 0.268941^2 = 0.022658.  x = 2, t = 0.9 and x = -3, t = 0.6 too.
    xs = [0.0, 0.0, 2.0, -1.0, 2.0, -3.0]
    ts = [0.5, 0.0, 1.0, 0.0, 0.9, 0.6]
    got = quality_focal_loss(tf.constant(xs), tf.constant(ts)).numpy()
    np.testing.assert_allclose(got[:4], [0.0, math.log(2) / 4, 0.0018035, 0.022658], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got, [qfl_by_hand(x, t) for x, t in zip(xs, ts)], rtol=1e-5, atol=1e-8)
    # beta = 1 uses |t - p| without the square.
    got1 = quality_focal_loss(tf.constant([-1.0]), tf.constant([0.0]), beta=1.0).numpy()
    np.testing.assert_allclose(got1, [math.log1p(math.exp(-1)) * sigmoid(-1)], rtol=1e-5)


def test_qfl_targets_one_hot_times_score_background_zero():
    labels = tf.constant([[0, 2, 1]])  # 2 = background with C = 2
    scores = tf.constant([[0.9, 0.0, 0.7]])
    np.testing.assert_allclose(qfl_targets(labels, scores, 2).numpy(), [[[0.9, 0], [0, 0], [0, 0.7]]])


def test_giou_loss_by_hand_and_batched():
    pred = tf.constant([[[0.0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 2, 2]],
                        [[5.0, 5, 9, 8], [10, 10, 12, 12], [0, 0, 2, 2]]])
    target = tf.constant([[[0.0, 0, 2, 2], [2, 0, 3, 1], [1, 1, 3, 3]],
                          [[5.0, 5, 9, 8], [0, 0, 2, 2], [0, 0, 2, 2]]])
    # identical -> 0 | disjoint: iou 0, hull 3, union 2 -> 1 + 1/3 | overlap: 1 - (1/7 - 2/9)
    # identical -> 0 | disjoint: hull 12x12 = 144, union 8 -> 1 + 136/144 | identical -> 0
    want = [[0.0, 4 / 3, 1 - (1 / 7 - 2 / 9)], [0.0, 1 + 136 / 144, 0.0]]
    np.testing.assert_allclose(giou_loss(pred, target).numpy(), want, rtol=1e-6, atol=1e-6)
    # Keras loss: sum of the IoU-weighted per-pair losses (keras-cv's GIoULoss gives 0.87 for
    # identical boxes on batched input; ours is per pair).
    weights = tf.constant([[1.0, 0.5, 0.25], [0.0, 2.0, 1.0]])
    got = GIoULoss()(target, pred, sample_weight=weights).numpy()
    assert got == pytest.approx(0.5 * 4 / 3 + 0.25 * (1 - (1 / 7 - 2 / 9)) + 2 * (1 + 136 / 144), rel=1e-6)
    assert GIoULoss()(target[:, :1], pred[:, :1]).numpy() == pytest.approx(0.0, abs=1e-7)


def test_normalizer_sums_iou_targets_and_clamps_at_one():
    assert loss_normalizer(tf.constant([[0.3, 0.0], [0.2, 0.0]])).numpy() == pytest.approx(1.0)
    assert loss_normalizer(tf.constant([[0.9, 0.8], [0.7, 0.0]])).numpy() == pytest.approx(2.4)
    assert loss_normalizer(tf.zeros([2, 5])).numpy() == 1.0


# A 3-prior, 2-class batch of one image worked out by hand.
LOGITS = [[[0.0, 0.0], [2.0, -1.0], [0.0, 1.0]]]
ASSIGNED = {
    "assigned_labels": tf.constant([[2, 0, 1]]),  # prior 0 background
    "target_scores": tf.constant([[0.0, 0.9, 0.7]]),
    "target_boxes": tf.constant([[[0.0, 0, 0, 0], [1, 1, 3, 3], [4, 4, 8, 8]]]),
}
PRED = [[[3.0, 3, 5, 6], [0, 0, 2, 2], [4, 4, 8, 8]]]
NORM = 0.9 + 0.7
QFL_SUM = (2 * math.log(2) / 4  # prior 0: both classes target 0 at x = 0
           + qfl_by_hand(2.0, 0.9) + qfl_by_hand(-1.0, 0.0)  # prior 1, class 0 positive
           + qfl_by_hand(0.0, 0.0) + qfl_by_hand(1.0, 0.7))  # prior 2, class 1 positive
GIOU_SUM = 0.9 * (1 - (1 / 7 - 2 / 9)) + 0.7 * 0.0  # prior 0 has weight 0


def test_rtmdet_loss_by_hand():
    loss_cls, loss_box = rtmdet_loss(tf.constant(LOGITS), tf.constant(PRED), ASSIGNED, num_classes=2)
    assert loss_cls.numpy() == pytest.approx(QFL_SUM / NORM, rel=1e-5)
    assert loss_box.numpy() == pytest.approx(GIOU_SUM / NORM, rel=1e-5)
    wc, wb = rtmdet_loss(tf.constant(LOGITS), tf.constant(PRED), ASSIGNED, cls_weight=1.0, box_weight=2.0)
    assert wc.numpy() + wb.numpy() == pytest.approx(QFL_SUM / NORM + 2 * GIOU_SUM / NORM, rel=1e-5)
    # The Keras loss classes give the same sums.
    targets = qfl_targets(ASSIGNED["assigned_labels"], ASSIGNED["target_scores"], 2)
    assert QualityFocalLoss()(targets, tf.constant(LOGITS)).numpy() == pytest.approx(QFL_SUM, rel=1e-5)
    giou = GIoULoss()(ASSIGNED["target_boxes"], tf.constant(PRED), sample_weight=ASSIGNED["target_scores"])
    assert giou.numpy() == pytest.approx(GIOU_SUM, rel=1e-5)
    assert QualityFocalLoss.from_config(QualityFocalLoss(beta=1.5).get_config()).beta == 1.5


def test_rtmdet_loss_gradients_are_finite_with_degenerate_predictions():
    pred = tf.Variable([[[3.0, 3, 3, 3], [0, 0, 0, 0], [8, 8, 4, 4]]])  # point, empty, inverted
    logits = tf.Variable(LOGITS)
    with tf.GradientTape() as tape:
        total = tf.add_n(rtmdet_loss(logits, pred, ASSIGNED))
    for g in tape.gradient(total, [logits, pred]):
        assert np.isfinite(g.numpy()).all()


def test_normalizer_is_averaged_across_replicas():
    # Two virtual CPUs must be configured before TensorFlow starts: run in a fresh interpreter.
    code = textwrap.dedent("""
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from rtmdet_keras.training.losses import loss_normalizer
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        per_replica = [tf.constant([0.5, 0.3]), tf.constant([2.0, 1.2])]  # sums 0.8 and 3.2
        values = strategy.experimental_distribute_values_from_function(lambda ctx: per_replica[ctx.replica_id_in_sync_group])
        out = strategy.run(loss_normalizer, args=(values,))
        print("NORM", json.dumps([float(v) for v in strategy.experimental_local_results(out)]))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("NORM")]
    assert line, res.stderr[-2000:]
    # mean(0.8, 3.2) = 2.0 on both replicas (not 0.8 clamped to 1 and 3.2).
    np.testing.assert_allclose(json.loads(line[0][5:]), [2.0, 2.0], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Training a tiny two-level model: Keras 3 through fit, tf_keras through a tf.function step.
# ---------------------------------------------------------------------------------------------
GT_BOXES = np.array([[[4.0, 4, 20, 20], [12, 4, 30, 20], [0, 0, 0, 0]],
                     [[0.0, 0, 0, 0], [16, 16, 31, 31], [0, 0, 0, 0]]], np.float32)
GT_LABELS = np.array([[0, 1, -1], [-1, 1, -1]], np.int32)
IMAGES = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
PRIORS = make_priors(32, 32, [8, 16])


def _tiny_network(lib):
    """Two levels (stride 8: 4x4, stride 16: 2x2) with RTMDet's output names; ``lib`` is keras or
    tf_keras."""
    layers = lib.layers
    inp = layers.Input((32, 32, 3))
    p3 = layers.Conv2D(8, 8, strides=8, activation="relu", name="p3")(inp)  # 4x4
    p4 = layers.Conv2D(8, 2, strides=2, activation="relu", name="p4")(p3)  # 2x2
    outputs = {}
    for name, feat in (("p3", p3), ("p4", p4)):
        outputs[f"cls_{name}"] = layers.Conv2D(  # prior probability 0.01, as RTMDet
            2, 1, bias_initializer=lib.initializers.Constant(-math.log(99.0)), name=f"cls_{name}")(feat)
        outputs[f"reg_{name}"] = layers.Conv2D(4, 1, bias_initializer="ones", name=f"reg_{name}")(feat)
    return lib.Model(inp, outputs)


def _losses(outputs, gt_boxes, gt_labels, assign):
    cls = flatten_levels(outputs, prefix="cls")
    boxes = decode_predictions(outputs, PRIORS)
    assigned = assign(cls, boxes, PRIORS, gt_boxes, gt_labels)
    loss_cls, loss_box = rtmdet_loss(cls, boxes, assigned, cls_weight=1.0, box_weight=2.0)
    return loss_cls + loss_box, assigned


class TinyDetector(keras.Model):
    def __init__(self, network, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.assigner = DynamicSoftLabelAssigner(num_classes=2)
        self.qfl = QualityFocalLoss()
        self.giou = GIoULoss()

    def call(self, images, training=False):
        return self.network(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        cls = flatten_levels(y_pred, prefix="cls")
        boxes = decode_predictions(y_pred, PRIORS)
        a = self.assigner(cls, boxes, PRIORS, y["boxes"], y["labels"])
        norm = loss_normalizer(a["target_scores"])
        qfl = self.qfl(qfl_targets(a["assigned_labels"], a["target_scores"], 2), cls)
        giou = self.giou(a["target_boxes"], boxes, sample_weight=a["target_scores"])
        return (qfl + 2.0 * giou) / norm


def test_keras3_fit_with_assigner_layer_and_loss_classes():
    keras.utils.set_random_seed(0)
    model = TinyDetector(_tiny_network(keras))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = (IMAGES, {"boxes": GT_BOXES, "labels": GT_LABELS})
    before = float(model.evaluate(*data, verbose=0))
    hist = model.fit(*data, batch_size=2, epochs=8, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert float(model.evaluate(*data, verbose=0)) < before
    # The class-based loss equals rtmdet_loss on the same outputs.
    outputs = model(IMAGES)
    want, _ = _losses(outputs, GT_BOXES, GT_LABELS, dynamic_soft_label_assign)
    got = model.compute_loss(y={"boxes": GT_BOXES, "labels": GT_LABELS}, y_pred=outputs)
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_tf_keras_twin_trains_with_the_same_functions():
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    network = _tiny_network(tf_keras)
    optimizer = tf_keras.optimizers.Adam(1e-2)

    @tf.function
    def step(images, gt_boxes, gt_labels):
        with tf.GradientTape() as tape:
            loss, assigned = _losses(network(images, training=True), gt_boxes, gt_labels,
                                     dynamic_soft_label_assign)
        grads = tape.gradient(loss, network.trainable_variables)
        optimizer.apply_gradients(zip(grads, network.trainable_variables))
        return loss, tf.reduce_sum(tf.cast(assigned["fg_mask"], tf.int32)), grads

    losses = []
    for _ in range(8):
        loss, num_fg, grads = step(IMAGES, GT_BOXES, GT_LABELS)
        losses.append(float(loss))
        assert all(np.isfinite(g.numpy()).all() for g in grads)
    assert int(num_fg) > 0
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
