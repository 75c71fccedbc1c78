"""RTMDet's dynamic soft label assigner, batched and vectorised.

:func:`dynamic_soft_label_assign` is plain TensorFlow, so the Keras 3 detector (through the
:class:`DynamicSoftLabelAssigner` layer) and the tf_keras twin used for QAT share one
implementation. It follows mmdetection's ``DynamicSoftLabelAssigner`` (RTMDet's reference code):

1. *Candidates* are the priors whose point lies strictly inside at least one (real) GT box of the
   image. Every candidate is paired with every GT of the image, also GTs it is not inside (as
   mmdetection does); non-candidates never become positives.
2. Cost of a (prior, GT) pair, IoU between the prior's *decoded predicted* box and the GT:
   ``soft class cost + iou_weight * -log(iou + 1e-7) + 10 ** (dist / stride - soft_center_radius)``,
   where ``dist`` is the distance in pixels from the prior point to the GT centre. The class cost is
   ``BCE_with_logits(logit, target) * |target - sigmoid(logit)| ** 2`` with target ``iou`` for the
   GT's class; ``class_cost="all_classes"`` (mmdetection) also adds the same term for every other
   class with target 0, ``"gt_class"`` (mmyolo, SSCMA) uses the GT class only.
3. Dynamic k of a GT = ``max(int(sum of its topk largest IoUs over the candidates), 1)``; each GT
   takes its k cheapest candidates. A prior taken by several GTs goes to the GT of lowest cost
   among *all* the image's GTs (mmdetection's ``argmin`` over the whole cost row).
4. Positives get label = GT class, target score = the pair's IoU, target box = the GT box.

Background convention: ``assigned_labels == num_classes`` (as mmdetection's and mmyolo's RTMDet
heads), so ``tf.one_hot(assigned_labels, num_classes)`` is an all-zero row for background.

Deviations, none of which change a result in practice: non-candidates cost ``+inf`` instead of
mmyolo's ``1e8`` (mmdetection drops them; a far candidate's centre cost can exceed 1e8), and the
centre cost's exponent is capped at 30 to keep costs finite in float32. Ties between equal costs go
to the lower prior index (``tf.math.top_k``); PyTorch leaves their order unspecified.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from rtmdet_keras.boxes import pairwise_iou

IOU_COST_EPS = 1e-7  # inside -log(iou + eps), as mmdetection
MAX_CENTER_EXPONENT = 30.0  # 10 ** 30 is finite in float32 and far above any other cost term
CLASS_COSTS = ("all_classes", "gt_class")


def _class_cost(cls_logits, gt_labels, ious, class_cost):
    """Soft class cost ``[B, P, N]`` of every prior against every GT."""
    # Logit of the GT's class at every prior, [B, P, N]. A one-hot matmul is exact for finite
    # logits and 3-5x faster on CPU than tf.gather with batch_dims.
    onehot = tf.one_hot(tf.maximum(gt_labels, 0), cls_logits.shape[-1], dtype=cls_logits.dtype)
    logit = tf.einsum("bpc,bnc->bpn", cls_logits, onehot)
    prob = tf.sigmoid(logit)
    softplus = tf.math.softplus(logit)
    # BCE_with_logits(x, t) = softplus(x) - x * t.
    cost = (softplus - logit * ious) * tf.square(ious - prob)
    if class_cost == "all_classes":
        # Other classes have target 0: BCE(x, 0) = softplus(x), scale sigmoid(x)^2. Sum over all
        # classes once per prior, then swap the GT class's target-0 term for its target-iou term.
        neg = tf.math.softplus(cls_logits) * tf.square(tf.sigmoid(cls_logits))
        cost += tf.reduce_sum(neg, axis=-1, keepdims=True) - softplus * tf.square(prob)
    return cost


def _pair_costs(cls_logits, pred_boxes, priors, gt_boxes, gt_labels, gt_valid, iou_weight, soft_center_radius,
                class_cost):
    """Steps 1 and 2: ``(cost, ious, candidate, pair_ok)``, the cost ``[B, P, N]`` of every (prior, GT) pair
    (``+inf`` where the pair is not allowed), the IoUs of the predicted boxes with the GTs ``[B, P, N]``,
    whether each prior is a candidate ``[B, P]``, and which pairs are allowed ``[B, P, N]``."""
    px = priors[None, :, 0:1]  # [1, P, 1]
    py = priors[None, :, 1:2]
    stride = priors[None, :, 2:3]
    x1, y1, x2, y2 = (gt_boxes[:, None, :, i] for i in range(4))  # [B, 1, N]
    inside = tf.minimum(tf.minimum(px - x1, py - y1), tf.minimum(x2 - px, y2 - py)) > 0
    inside = tf.logical_and(inside, gt_valid[:, None, :])  # [B, P, N]
    candidate = tf.reduce_any(inside, axis=-1)  # [B, P]
    pair_ok = tf.logical_and(candidate[:, :, None], gt_valid[:, None, :])  # [B, P, N]

    ious = pairwise_iou(pred_boxes, gt_boxes)  # [B, P, N]

    dist = tf.sqrt(tf.square(px - (x1 + x2) * 0.5) + tf.square(py - (y1 + y2) * 0.5)) / stride
    # 10 ** x as exp(x ln 10): tf.pow is 4-5x slower on CPU.
    center_cost = tf.exp(tf.minimum(dist - soft_center_radius, MAX_CENTER_EXPONENT) * math.log(10.0))
    iou_cost = -tf.math.log(ious + IOU_COST_EPS) * iou_weight
    cost = _class_cost(cls_logits, gt_labels, ious, class_cost) + iou_cost + center_cost
    cost = tf.where(pair_ok, cost, float("inf"))
    return cost, ious, candidate, pair_ok


def _match(cost, pair_ok, dynamic_k, k_max, batch, num_gt):
    """Step 3: ``(fg_mask [B, P], gt_index [B, P])``, the priors some GT took and the GT each goes to."""
    # Every GT takes its k cheapest priors. k <= k_max (an IoU is at most 1), so the k_max cheapest
    # are enough; k <= number of candidates, so +inf (non-candidate) entries are never taken while
    # the image has a candidate, and pair_ok removes them when it has none.
    _, order = tf.math.top_k(-tf.transpose(cost, [0, 2, 1]), k=k_max)  # [B, N, K] cheapest first
    take = tf.range(k_max)[None, None, :] < dynamic_k[:, :, None]  # [B, N, K]
    shape = tf.shape(order)
    b_idx = tf.broadcast_to(tf.range(shape[0])[:, None, None], shape)
    n_idx = tf.broadcast_to(tf.range(shape[1])[None, :, None], shape)
    scatter_idx = tf.reshape(tf.stack([b_idx, n_idx, order], axis=-1), [-1, 3])
    matching = tf.scatter_nd(
        scatter_idx, tf.reshape(tf.cast(take, tf.int32), [-1]), tf.stack([batch, num_gt + 1, tf.shape(cost)[1]])
    )  # [B, N, P], 1 where GT n took prior p (top_k indices are distinct, so no sums)
    matching = tf.logical_and(tf.transpose(matching, [0, 2, 1]) > 0, pair_ok)  # [B, P, N]

    claims = tf.reduce_sum(tf.cast(matching, tf.int32), axis=-1)  # [B, P]
    fg_mask = claims > 0
    only_claimant = tf.argmax(tf.cast(matching, tf.int32), axis=-1, output_type=tf.int32)
    cheapest_gt = tf.argmin(cost, axis=-1, output_type=tf.int32)
    gt_index = tf.where(claims > 1, cheapest_gt, only_claimant)  # [B, P]
    return fg_mask, gt_index


def dynamic_soft_label_assign(
    cls_logits,
    pred_boxes,
    priors,
    gt_boxes,
    gt_labels,
    *,
    topk: int = 13,
    iou_weight: float = 3.0,
    soft_center_radius: float = 3.0,
    class_cost: str = "all_classes",
):
    """Assign ground truth to priors for a batch (no gradient flows through).

    Args:
        cls_logits: ``[B, P, C]`` class logits (before sigmoid).
        pred_boxes: ``[B, P, 4]`` decoded predicted boxes, xyxy pixels.
        priors: ``[P, 3]`` ``(x, y, stride)`` pixels, from :func:`rtmdet_keras.boxes.make_priors`.
        gt_boxes: ``float32 [B, N, 4]`` xyxy pixels; ``gt_labels``: ``int32 [B, N]``, -1 = padding
            (its box is ignored, whatever it holds). N may be 0.
        topk, iou_weight, soft_center_radius: the assigner settings (``cfg.assigner``).
        class_cost: ``"all_classes"`` (mmdetection) or ``"gt_class"`` (mmyolo / SSCMA).

    Returns:
        dict of tensors:
        ``assigned_labels int32 [B, P]``: GT class for positives, ``C`` (num_classes) for background;
        ``target_scores float32 [B, P]``: IoU of the positive's predicted box with its GT, 0 elsewhere;
        ``target_boxes float32 [B, P, 4]``: the matched GT box (xyxy pixels), zeros elsewhere;
        ``fg_mask bool [B, P]``;
        ``matched_gt_index int32 [B, P]``: index into the N GTs of the image, -1 for background;
        ``dynamic_k int32 [B, N]``: the number of priors each GT asked for (0 for padding), before
        conflicts between GTs are resolved.
    """
    if class_cost not in CLASS_COSTS:
        raise ValueError(f"class_cost must be one of {', '.join(CLASS_COSTS)}, got {class_cost!r}")
    cls_logits = tf.stop_gradient(tf.cast(cls_logits, tf.float32))
    pred_boxes = tf.stop_gradient(tf.cast(pred_boxes, tf.float32))
    priors = tf.stop_gradient(tf.cast(priors, tf.float32))
    gt_boxes = tf.stop_gradient(tf.cast(gt_boxes, tf.float32))
    gt_labels = tf.cast(gt_labels, tf.int32)
    num_classes = cls_logits.shape[-1]
    if num_classes is None:
        raise ValueError("dynamic_soft_label_assign: the class dimension of cls_logits must be static")
    batch = tf.shape(cls_logits)[0]
    num_gt = tf.shape(gt_labels)[1]

    # One extra padding GT makes N >= 1, so images without GT need no special path; it is never
    # matched (it is masked like any padding) and is dropped from the outputs.
    gt_boxes = tf.concat([gt_boxes, tf.zeros([batch, 1, 4], tf.float32)], axis=1)
    gt_labels = tf.concat([gt_labels, tf.fill([batch, 1], -1)], axis=1)
    gt_valid = gt_labels >= 0  # [B, N]

    cost, ious, candidate, pair_ok = _pair_costs(cls_logits, pred_boxes, priors, gt_boxes, gt_labels, gt_valid,
                                                 iou_weight, soft_center_radius, class_cost)
    # Dynamic k from the topk largest IoUs over the candidates (non-candidates count as IoU 0, which
    # equals mmdetection's topk over the candidates only: IoUs are >= 0).
    num_priors = priors.shape[0]
    k_max = min(int(topk), num_priors) if num_priors is not None else tf.minimum(int(topk), tf.shape(priors)[0])
    cand_ious_t = tf.transpose(tf.where(candidate[:, :, None], ious, 0.0), [0, 2, 1])  # [B, N, P]
    iou_sum = tf.reduce_sum(tf.math.top_k(cand_ious_t, k=k_max, sorted=False).values, axis=-1)
    dynamic_k = tf.maximum(tf.cast(iou_sum, tf.int32), 1)  # cast truncates, like torch's .int()
    dynamic_k = tf.where(gt_valid, dynamic_k, 0)  # [B, N]
    fg_mask, gt_index = _match(cost, pair_ok, dynamic_k, k_max, batch, num_gt)

    matched_iou = tf.gather(ious, gt_index[..., None], batch_dims=2)[..., 0]
    target_scores = tf.where(fg_mask, matched_iou, 0.0)
    assigned_labels = tf.where(fg_mask, tf.gather(gt_labels, gt_index, batch_dims=1), num_classes)
    target_boxes = tf.where(fg_mask[..., None], tf.gather(gt_boxes, gt_index, batch_dims=1), 0.0)
    return {
        "assigned_labels": tf.stop_gradient(assigned_labels),
        "target_scores": tf.stop_gradient(target_scores),
        "target_boxes": tf.stop_gradient(target_boxes),
        "fg_mask": fg_mask,
        "matched_gt_index": tf.where(fg_mask, gt_index, -1),
        "dynamic_k": dynamic_k[:, :-1],
    }


class DynamicSoftLabelAssigner(keras.layers.Layer):
    """Keras layer around :func:`dynamic_soft_label_assign` (no weights, no gradient).

    Call: ``assigner(cls_logits [B,P,C], pred_boxes [B,P,4], priors [P,3], gt_boxes [B,N,4],
    gt_labels [B,N])`` -> the dict documented in :func:`dynamic_soft_label_assign`; background
    label is ``num_classes``. Runs in float32 whatever the model's dtype policy.
    """

    def __init__(
        self,
        num_classes=None,
        topk: int = 13,
        iou_weight: float = 3.0,
        soft_center_radius: float = 3.0,
        class_cost: str = "all_classes",
        **kwargs,
    ):
        kwargs.setdefault("trainable", False)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if class_cost not in CLASS_COSTS:
            raise ValueError(f"class_cost must be one of {', '.join(CLASS_COSTS)}, got {class_cost!r}")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.topk = int(topk)
        self.iou_weight = float(iou_weight)
        self.soft_center_radius = float(soft_center_radius)
        self.class_cost = class_cost
        self.built = True

    def call(self, cls_logits, pred_boxes, priors, gt_boxes, gt_labels):
        if self.num_classes is not None and cls_logits.shape[-1] not in (None, self.num_classes):
            raise ValueError(
                f"{self.name}: cls_logits have {cls_logits.shape[-1]} classes, the assigner was built "
                f"for num_classes={self.num_classes}"
            )
        return dynamic_soft_label_assign(
            cls_logits, pred_boxes, priors, gt_boxes, gt_labels,
            topk=self.topk, iou_weight=self.iou_weight,
            soft_center_radius=self.soft_center_radius, class_cost=self.class_cost,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, topk=self.topk, iou_weight=self.iou_weight,
            soft_center_radius=self.soft_center_radius, class_cost=self.class_cost,
        )
        return config


__all__ = ["DynamicSoftLabelAssigner", "dynamic_soft_label_assign", "CLASS_COSTS"]
