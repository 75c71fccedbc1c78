"""RTMDet's losses: Quality Focal Loss on the class logits, GIoU on the decoded boxes.

Both are *sums* (over priors and classes for QFL, over positives for GIoU, each positive weighted by
its IoU target) divided by one normaliser: the sum of the positives' IoU targets over the batch,
averaged across replicas under ``tf.distribute`` and clamped to at least 1 (mmdetection's
``RTMDetHead.loss_by_feat``; not the number of positives).

The functions are plain TensorFlow so the tf_keras twin trains with the same code; the
``keras.losses.Loss`` subclasses wrap them for Keras 3 (reduction ``"sum"`` by default, because the
normaliser is applied afterwards). keras-cv's ``GIoULoss`` is not used: it is wrong on batched input.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from rtmdet_keras.boxes import EPS, aligned_giou, decode_predictions, flatten_levels
from rtmdet_keras.training.assigner import dynamic_soft_label_assign


def quality_focal_loss(logits, soft_targets, beta: float = 2.0):
    """Element-wise QFL: ``BCE_with_logits(logit, t) * |t - sigmoid(logit)| ** beta``.

    Args:
        logits: ``[..., C]`` class logits. soft_targets: same shape, in ``[0, 1]`` (IoU at the
            positive's class, 0 elsewhere; see :func:`qfl_targets`).
    Returns: ``float32 [..., C]``, not reduced.
    """
    logits = tf.cast(logits, tf.float32)
    soft_targets = tf.cast(soft_targets, tf.float32)
    diff = soft_targets - tf.sigmoid(logits)
    scale = tf.square(diff) if beta == 2.0 else tf.pow(tf.abs(diff), beta)
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=soft_targets, logits=logits) * scale


def qfl_targets(assigned_labels, target_scores, num_classes: int):
    """Dense soft targets ``[B, P, C]``: ``target_scores`` at the assigned class, 0 elsewhere.
    Background (label ``num_classes``, or any label outside ``[0, C)``) gives an all-zero row."""
    onehot = tf.one_hot(tf.cast(assigned_labels, tf.int32), int(num_classes), dtype=tf.float32)
    return onehot * tf.cast(target_scores, tf.float32)[..., None]


def giou_loss(pred_boxes, target_boxes, eps: float = EPS):
    """``1 - GIoU`` of matched pairs (xyxy, same units): ``[..., 4]`` x ``[..., 4]`` -> ``[...]``,
    in ``[0, 2]``. Finite, with finite gradients, for degenerate boxes."""
    return 1.0 - aligned_giou(pred_boxes, target_boxes, eps=eps)


def loss_normalizer(target_scores):
    """Sum of the IoU targets over the batch (background contributes 0), averaged over the replicas
    when called in a replica context with more than one replica, then clamped to >= 1. No gradient."""
    total = tf.reduce_sum(tf.stop_gradient(tf.cast(target_scores, tf.float32)))
    ctx = tf.distribute.get_replica_context()  # None in a cross-replica context
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        total = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, total)
    return tf.maximum(total, 1.0)


def rtmdet_loss(
    cls_logits,
    pred_boxes,
    assigned,
    num_classes=None,
    beta: float = 2.0,
    cls_weight: float = 1.0,
    box_weight: float = 1.0,
):
    """RTMDet's two loss terms for a batch.

    Args:
        cls_logits: ``[B, P, C]`` logits. pred_boxes: ``[B, P, 4]`` decoded boxes, xyxy pixels.
        assigned: the dict from the assigner (``assigned_labels``, ``target_scores``,
            ``target_boxes``; background label ``C``).
        num_classes: C (defaults to the static last dimension of ``cls_logits``).
        beta: QFL exponent. cls_weight, box_weight: multipliers (``cfg.loss``; the defaults leave
            the terms unweighted).
    Returns:
        ``(loss_cls, loss_box)``: ``cls_weight * sum(QFL) / norm`` and
        ``box_weight * sum(target_score * (1 - GIoU)) / norm`` with ``norm`` from
        :func:`loss_normalizer`. Their sum is the training loss.
    """
    num_classes = int(num_classes if num_classes is not None else cls_logits.shape[-1])
    scores = tf.cast(assigned["target_scores"], tf.float32)
    norm = loss_normalizer(scores)
    targets = qfl_targets(assigned["assigned_labels"], scores, num_classes)
    loss_cls = tf.reduce_sum(quality_focal_loss(cls_logits, targets, beta)) / norm
    # Background rows have weight 0 (their target box is a dummy zero box; the GIoU stays finite).
    loss_box = tf.reduce_sum(giou_loss(pred_boxes, assigned["target_boxes"]) * scores) / norm
    return cls_weight * loss_cls, box_weight * loss_box


def detection_losses(outputs, targets, priors, cfg, assign=None):
    """RTMDet's weighted ``(loss_cls, loss_box)`` for a batch: the one loss wiring of both detectors
    (:class:`~rtmdet_keras.training.detector.RTMDetDetector` and QAT's tf_keras ``QATDetector``).

    Flattens the class logits, decodes the boxes, runs the assigner (no gradient) and
    :func:`rtmdet_loss` with the ``cfg.loss`` weights, in plain TensorFlow.

    Args:
        outputs: the network's dict ``{"cls_pX": [B, h, w, C], "reg_pX": [B, h, w, 4]}``.
        targets: ``{"boxes": float32 [B, N, 4] xyxy pixels, "labels": int32 [B, N]}``, label -1 = padding.
        priors: ``[P, 3]`` from :func:`rtmdet_keras.boxes.make_priors`.
        assign: ``assign(cls_logits, pred_boxes, priors, gt_boxes, gt_labels) -> dict`` (e.g. a
            :class:`~rtmdet_keras.training.assigner.DynamicSoftLabelAssigner` layer); default
            :func:`~rtmdet_keras.training.assigner.dynamic_soft_label_assign` with ``cfg.assigner``'s settings.
    """
    if assign is None:
        a = cfg.assigner
        assign = functools.partial(dynamic_soft_label_assign, topk=a.topk, iou_weight=a.iou_weight,
                                   soft_center_radius=a.soft_center_radius, class_cost=a.class_cost)
    cls_logits = tf.cast(flatten_levels(outputs, prefix="cls"), tf.float32)
    pred_boxes = decode_predictions(outputs, priors, cfg.model.exp_on_reg)
    assigned = assign(cls_logits, pred_boxes, priors, tf.cast(targets["boxes"], tf.float32),
                      tf.cast(targets["labels"], tf.int32))
    return rtmdet_loss(cls_logits, pred_boxes, assigned, num_classes=int(cfg.num_classes), beta=cfg.loss.qfl_beta,
                       cls_weight=cfg.loss.cls_weight, box_weight=cfg.loss.box_weight)


class QualityFocalLoss(keras.losses.Loss):
    """QFL as a Keras loss. ``y_true``: soft targets ``[B, P, C]`` (:func:`qfl_targets`);
    ``y_pred``: logits ``[B, P, C]``. ``call`` returns the per-prior sum over classes ``[B, P]``;
    the default reduction ``"sum"`` then sums over priors and images (divide by
    :func:`loss_normalizer` afterwards)."""

    def __init__(self, beta: float = 2.0, reduction="sum", name="quality_focal_loss", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)
        self.beta = float(beta)

    def call(self, y_true, y_pred):
        return tf.reduce_sum(quality_focal_loss(y_pred, y_true, self.beta), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(beta=self.beta)
        return config


class GIoULoss(keras.losses.Loss):
    """``1 - GIoU`` per box pair as a Keras loss. ``y_true``: target boxes ``[B, P, 4]``;
    ``y_pred``: predicted boxes ``[B, P, 4]`` (xyxy, same units). Pass the IoU targets as
    ``sample_weight`` (0 for background) to get RTMDet's weighted sum with the default reduction
    ``"sum"``."""

    def __init__(self, reduction="sum", name="giou_loss", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return giou_loss(y_pred, y_true)


__all__ = [
    "quality_focal_loss",
    "qfl_targets",
    "giou_loss",
    "loss_normalizer",
    "rtmdet_loss",
    "detection_losses",
    "QualityFocalLoss",
    "GIoULoss",
]
