"""The trainable detector: the functional network plus RTMDet's assigner and losses in ``compute_loss``.

``model.fit`` is not replaced: Keras calls the network, then ``compute_loss`` decodes the outputs,
runs :class:`DynamicSoftLabelAssigner` and the losses, and reports ``loss_cls`` / ``loss_bbox`` next
to ``loss`` in the progress bar.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from rtmdet_keras.boxes import decode_predictions, flatten_levels, make_priors
from rtmdet_keras.postprocess import decode_and_nms, detections_for_dataset
from rtmdet_keras.training.assigner import DynamicSoftLabelAssigner
from rtmdet_keras.training.losses import rtmdet_loss


class RTMDetDetector(keras.Model):
    """Wraps a network built by :func:`rtmdet_keras.models.build_model` for training.

    Inputs: images ``uint8/float [B, H, W, 3]`` (raw RGB; the network normalises). Targets:
    ``{"boxes": float32 [B, N, 4] xyxy pixels, "labels": int32 [B, N]}`` padded with label -1.
    """

    def __init__(self, network, cfg, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.num_classes = int(cfg.num_classes)
        self.exp_on_reg = bool(cfg.model.exp_on_reg)
        self.cls_weight = float(cfg.loss.cls_weight)
        self.box_weight = float(cfg.loss.box_weight)
        self.qfl_beta = float(cfg.loss.qfl_beta)
        h, w = cfg.imgsz
        self.priors = make_priors(h, w, cfg.model.strides)
        self.assigner = DynamicSoftLabelAssigner(
            num_classes=self.num_classes, topk=cfg.assigner.topk, iou_weight=cfg.assigner.iou_weight,
            soft_center_radius=cfg.assigner.soft_center_radius, class_cost=cfg.assigner.class_cost,
        )
        self.cls_loss_tracker = keras.metrics.Mean(name="loss_cls")
        self.box_loss_tracker = keras.metrics.Mean(name="loss_bbox")
        self._step_hooks = []

    def attach_step_hook(self, fn) -> bool:
        """Run ``fn()`` (TensorFlow ops, e.g. an EMA update) inside every training step, after the
        optimiser has applied the gradients. Returns True. Called from a callback's ``on_train_begin``,
        the training function ``fit`` has just made is rebuilt at once to include it."""
        if fn not in self._step_hooks:
            self._step_hooks.append(fn)
            if self.train_function is not None:
                self.make_train_function(force=True)
        return True

    def detach_step_hook(self, fn) -> None:
        if fn in self._step_hooks:
            self._step_hooks.remove(fn)
            self.train_function = None

    def train_step(self, data):
        logs = super().train_step(data)
        for hook in self._step_hooks:
            hook()
        return logs

    def call(self, images, training=False):
        return self.network(tf.cast(images, tf.float32), training=training)

    @property
    def metrics(self):
        return [m for m in super().metrics if m not in (self.cls_loss_tracker, self.box_loss_tracker)] + [
            self.cls_loss_tracker, self.box_loss_tracker]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        cls_logits = tf.cast(flatten_levels(y_pred, prefix="cls"), tf.float32)
        pred_boxes = decode_predictions(y_pred, self.priors, self.exp_on_reg)
        gt_boxes = tf.cast(y["boxes"], tf.float32)
        gt_labels = tf.cast(y["labels"], tf.int32)
        assigned = self.assigner(cls_logits, pred_boxes, self.priors, gt_boxes, gt_labels)
        loss_cls, loss_box = rtmdet_loss(
            cls_logits, pred_boxes, assigned, num_classes=self.num_classes, beta=self.qfl_beta,
        )
        loss_cls = self.cls_weight * loss_cls
        loss_box = self.box_weight * loss_box
        self.cls_loss_tracker.update_state(loss_cls)
        self.box_loss_tracker.update_state(loss_box)
        # Keras sums gradients over replicas: each replica contributes its share of the global mean.
        return keras.src.losses.loss.scale_loss_for_distribution(loss_cls + loss_box)


def _is_no_decay(variable, layer) -> bool:
    name = variable.path.split("/")[-1]
    return isinstance(layer, keras.layers.BatchNormalization) or name in ("bias", "beta", "gamma")


def build_optimizer(cfg, learning_rate, network) -> keras.optimizers.Optimizer:
    """AdamW with weight decay ``cfg.weight_decay``, none on BatchNorm parameters and biases (as
    mmdetection's ``norm_decay_mult=0, bias_decay_mult=0``)."""
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=cfg.weight_decay,
                                       beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    no_decay = []
    for layer in network._flatten_layers(include_self=False):
        for v in layer._trainable_variables if hasattr(layer, "_trainable_variables") else layer.trainable_weights:
            if _is_no_decay(v, layer):
                no_decay.append(v)
    optimizer.exclude_from_weight_decay(var_list=no_decay)
    return optimizer


def make_dataset_predictor(network, cfg, batch_size: int = 16):
    """Returns ``predict(dataset) -> Detections`` (original-image pixels) using the evaluation
    transform, the network and :func:`decode_and_nms`."""

    @tf.function(reduce_retracing=True)
    def step(images):
        outputs = network(tf.cast(images, tf.float32), training=False)
        return decode_and_nms(outputs, cfg)

    return lambda dataset: detections_for_dataset(step, dataset, cfg, batch_size)
