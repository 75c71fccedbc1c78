"""The trainable detector: the functional network plus RTMDet's assigner and losses in ``compute_loss``.

``model.fit`` is not replaced: Keras calls the network, then ``compute_loss`` decodes the outputs,
runs :class:`DynamicSoftLabelAssigner` and the losses (:func:`~rtmdet_keras.training.losses.detection_losses`,
the wiring QAT's detector shares), and reports ``loss_cls`` / ``loss_bbox`` next
to ``loss`` in the progress bar.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from rtmdet_keras.boxes import make_priors
from rtmdet_keras.training.assigner import DynamicSoftLabelAssigner
from rtmdet_keras.training.losses import detection_losses


class RTMDetDetector(keras.Model):
    """Wraps a network built by :func:`rtmdet_keras.models.build_model` for training.

    Inputs: images ``uint8/float [B, H, W, 3]`` (raw RGB; the network normalises). Targets:
    ``{"boxes": float32 [B, N, 4] xyxy pixels, "labels": int32 [B, N]}`` padded with label -1.
    """

    def __init__(self, network, cfg, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self._cfg = cfg  # the loss settings detection_losses reads
        self.num_classes = int(cfg.num_classes)
        h, w = cfg.imgsz
        self.priors = make_priors(h, w, cfg.model.strides)
        self.assigner = DynamicSoftLabelAssigner(
            num_classes=self.num_classes, topk=cfg.assigner.topk, iou_weight=cfg.assigner.iou_weight,
            soft_center_radius=cfg.assigner.soft_center_radius, class_cost=cfg.assigner.class_cost,
        )
        self.cls_loss_tracker = keras.metrics.Mean(name="loss_cls")
        self.box_loss_tracker = keras.metrics.Mean(name="loss_bbox")
        self._step_hooks = []

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        # The optimiser's slots are made now, not by the first training step: variables created inside a
        # tf.function's first trace make TensorFlow trace it a second time, which took a third of the
        # first step (docs/benchmarks.md, "Whole runs"). Built as Keras' apply() would build them.
        optimizer = self.optimizer
        if optimizer is not None and not optimizer.built:
            with keras.name_scope(optimizer.name, caller=optimizer):
                optimizer.build(self.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy, Keras' fit builds the model from the first batch of its iterator: it draws that
        # batch (and so drops it from the stream) and averages it over the replicas, which
        # MultiWorkerMirroredStrategy cannot do for a nested batch (a PerReplica-to-Tensor error at the
        # first step). The network is built when it is made and the optimiser in compile(), so no batch
        # is needed: the wrapper is marked built and the iterator left alone.
        if self.network.built and (self.optimizer is None or self.optimizer.built):
            self.built = True
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def attach_step_hook(self, fn) -> None:
        """Run ``fn()`` (TensorFlow ops, e.g. an EMA update) inside every training step, after the
        optimiser has applied the gradients. Called from a callback's ``on_train_begin``, the training
        function ``fit`` has just made is rebuilt at once to include it."""
        if fn not in self._step_hooks:  # attached already (a second fit): keep the compiled step
            self._step_hooks.append(fn)
            if self.train_function is not None:
                self.make_train_function(force=True)

    def detach_step_hook(self, fn) -> None:
        if fn in self._step_hooks:
            self._step_hooks.remove(fn)
            self.train_function = None

    def train_step(self, data):
        logs = super().train_step(data)
        for hook in self._step_hooks:
            hook()
        if _multi_worker(self.distribute_strategy):
            # Keras averages each log over the workers with strategy.reduce("MEAN", value, axis=0), which
            # fails on a scalar; as a 1-vector per replica the same call gives the scalar mean.
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def call(self, images, training=False):
        return self.network(tf.cast(images, tf.float32), training=training)

    @property
    def metrics(self):
        return [m for m in super().metrics if m not in (self.cls_loss_tracker, self.box_loss_tracker)] + [
            self.cls_loss_tracker, self.box_loss_tracker]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss_cls, loss_box = detection_losses(y_pred, y, self.priors, self._cfg, assign=self.assigner)
        self.cls_loss_tracker.update_state(loss_cls)
        self.box_loss_tracker.update_state(loss_box)
        # Keras sums gradients over replicas: each replica contributes its share of the global mean.
        return keras.src.losses.loss.scale_loss_for_distribution(loss_cls + loss_box)


def _multi_worker(strategy) -> bool:
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def _is_no_decay(variable, layer) -> bool:
    name = variable.path.split("/")[-1]
    return isinstance(layer, keras.layers.BatchNormalization) or name in ("bias", "beta", "gamma")


def _handle(variable):
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="rtmdet_keras")
class FusedAdamW(keras.optimizers.AdamW):
    """Keras' AdamW, updated by one fused TensorFlow op per weight (``ResourceApplyAdam``) when no
    ``tf.distribute`` strategy is active; the arithmetic is Keras' own (decoupled decay ``w -= w * wd * lr``,
    then ``lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)``, ``w -= lr_t * m / (sqrt(v) + eps)``).

    Why: Keras builds each weight's update from about twenty small ops and evaluates the learning-rate
    schedule again for every weight's decay. For nano's 222 weights that made tracing the training step
    take about half a minute of a short run on 2 cores, and every step ran thousands of tiny ops.
    Under a strategy the stock Keras path runs (it handles replicas and cross-replica sums). Its rounding
    differs from the fused op's, which Adam amplifies (near-zero gradients become steps of +-lr): a short
    run under a strategy follows another path than the same run without one, as another seed would
    (docs/benchmarks.md, "Scale").
    """

    def _fused(self) -> bool:
        return not tf.distribute.has_strategy() and not self.amsgrad

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None or not self._fused():
            return super()._apply_weight_decay(variables)
        decay = tf.cast(self.learning_rate, tf.float32) * tf.cast(self.weight_decay, tf.float32)
        for variable in variables:
            if self._use_weight_decay(variable):
                variable.assign_sub(variable * tf.cast(decay, variable.dtype))

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self._fused():
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1, beta_2 = tf.cast(self.beta_1, tf.float32), tf.cast(self.beta_2, tf.float32)
        b1_power, b2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
        lr = tf.cast(learning_rate, tf.float32)
        epsilon = tf.cast(self.epsilon, tf.float32)
        for grad, variable in zip(grads, trainable_variables):
            if grad is None:
                continue
            index = self._get_variable_index(variable)
            dtype = variable.dtype
            tf.raw_ops.ResourceApplyAdam(
                var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
                beta1_power=tf.cast(b1_power, dtype), beta2_power=tf.cast(b2_power, dtype), lr=tf.cast(lr, dtype),
                beta1=tf.cast(beta_1, dtype), beta2=tf.cast(beta_2, dtype), epsilon=tf.cast(epsilon, dtype),
                grad=tf.cast(grad, dtype), use_locking=False)


def build_optimizer(cfg, learning_rate, network) -> keras.optimizers.Optimizer:
    """AdamW with weight decay ``cfg.weight_decay``, none on BatchNorm parameters and biases (as
    mmdetection's ``norm_decay_mult=0, bias_decay_mult=0``); :class:`FusedAdamW` on TensorFlow."""
    optimizer = FusedAdamW(learning_rate=learning_rate, weight_decay=cfg.weight_decay,
                           beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    no_decay = []
    for layer in network._flatten_layers(include_self=False):
        for v in layer._trainable_variables if hasattr(layer, "_trainable_variables") else layer.trainable_weights:
            if _is_no_decay(v, layer):
                no_decay.append(v)
    optimizer.exclude_from_weight_decay(var_list=no_decay)
    return optimizer
