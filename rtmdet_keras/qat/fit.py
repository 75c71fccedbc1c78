"""QAT fine-tuning in tf_keras: the detector (:class:`QATDetector`, RTMDet's losses through
:func:`~rtmdet_keras.training.losses.detection_losses` as in training), the optimiser
(:func:`build_qat_optimizer`), the callbacks that freeze ranges and BatchNorm statistics on schedule,
keep the best weights and run the package's Keras 3 callbacks, and the resumable state
(:func:`restore_qat_state`, written by :class:`~rtmdet_keras.training.checkpoint.CheckpointCallback`
in training's format).
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf
import tf_keras

from rtmdet_keras.boxes import make_priors
from rtmdet_keras.files import atomic_write
from rtmdet_keras.qat.configs import FROZEN, OBSERVE
from rtmdet_keras.qat.network import refresh_weight_ranges
from rtmdet_keras.qat.settings import QATError
from rtmdet_keras.training.checkpoint import load_training_state, restore_training_state
from rtmdet_keras.training.losses import detection_losses
from rtmdet_keras.training.schedule import qat_schedule


class QATDetector(tf_keras.Model):
    """The quantised network plus RTMDet's assigner and losses in ``train_step``.

    Inputs: images ``uint8/float [B, H, W, 3]`` raw RGB; targets ``{"boxes", "labels"}`` as the
    training pipeline yields them. Reports ``loss``, ``loss_cls`` and ``loss_bbox``.
    """

    def __init__(self, network, cfg, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self._cfg = cfg
        h, w = cfg.imgsz
        self._priors = make_priors(h, w, cfg.model.strides)
        self.loss_tracker = tf_keras.metrics.Mean(name="loss")
        self.cls_loss_tracker = tf_keras.metrics.Mean(name="loss_cls")
        self.box_loss_tracker = tf_keras.metrics.Mean(name="loss_bbox")

    def call(self, images, training=False):
        return self.network(tf.cast(images, tf.float32), training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.cls_loss_tracker, self.box_loss_tracker]

    def train_step(self, data):
        images, targets = data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            outputs = self(images, training=True)
            loss_cls, loss_box = detection_losses(outputs, targets, self._priors, self._cfg)
            loss = loss_cls + loss_box
            # Gradients are summed over replicas: each contributes its share of the mean.
            scaled = loss / replicas
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        self.loss_tracker.update_state(loss)
        self.cls_loss_tracker.update_state(loss_cls)
        self.box_loss_tracker.update_state(loss_box)
        return {m.name: m.result() for m in self.metrics}


class LearningRateSchedule(tf_keras.optimizers.schedules.LearningRateSchedule):
    """A Keras 3 schedule (:func:`~rtmdet_keras.training.schedule.qat_schedule`) for a tf_keras
    optimiser; the maths is plain TensorFlow ops either way."""

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, step):
        return tf.convert_to_tensor(self.schedule(step), tf.float32)

    def get_config(self):
        return self.schedule.get_config()


class _FromStep(tf_keras.callbacks.Callback):
    """Sets a switch from optimiser step ``at_step`` on (checked before every batch, so a resumed
    run lands in the right state)."""

    what = ""

    def __init__(self, control, at_step: int, print_fn=print):
        super().__init__()
        self.control, self.at_step, self.print_fn = control, int(at_step), print_fn
        self.state = None

    def _apply(self, on: bool):
        raise NotImplementedError

    def _check(self):
        on = int(self.model.optimizer.iterations.numpy()) >= self.at_step
        if on != self.state:
            self._apply(on)
            if on:
                self.print_fn(f"\n{self.what} frozen from step {self.at_step}")
            self.state = on

    def on_train_begin(self, logs=None):
        self.state = None
        self._check()

    def on_train_batch_begin(self, batch, logs=None):
        self._check()


class FreezeObservers(_FromStep):
    """From step ``at_step`` on, tfmot's activation ranges stop moving (the fake quant keeps
    using them). Kernel ranges are not observers: they follow the kernels at every step, as the
    converter quantises the final kernels."""

    what = "activation ranges (observers)"

    def _apply(self, on):
        self.control.observer_mode.assign(FROZEN if on else OBSERVE)


class FreezeBatchNorm(_FromStep):
    """From step ``at_step`` on, BatchNorms normalise with their moving statistics and stop
    updating them (gamma and beta keep training): the fake-quant graph is then the deployed one."""

    what = "BatchNorm statistics"

    def _apply(self, on):
        self.control.bn_frozen.assign(bool(on))


class RefreshWeightRanges(tf_keras.callbacks.Callback):
    """At each epoch end, kernel ranges from the current kernels (see :func:`refresh_weight_ranges`)."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def on_epoch_end(self, epoch, logs=None):
        refresh_weight_ranges(self.network)


class Keras3Callback(tf_keras.callbacks.Callback):
    """Runs one of the package's Keras 3 callbacks (``NanGuard``, ``CocoEvalCallback``,
    ``LearningRateLogger``) inside tf_keras' ``fit``, which expects tf_keras callbacks."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(model)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self.inner.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.inner.on_train_batch_end(batch, logs)


class KeepBestWeights(tf_keras.callbacks.Callback):
    """After the evaluation, ``save_weights`` the network to ``path`` (atomically, with a JSON of
    the metrics) when ``val_bbox_mAP`` beats the best so far."""

    def __init__(self, network, path, best_metric=-1.0, best_epoch=None, print_fn=print):
        super().__init__()
        self.network, self.path = network, Path(path)
        self.best_metric, self.best_epoch, self.print_fn = float(best_metric), best_epoch, print_fn

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get("val_bbox_mAP")
        if current is None or float(current) <= self.best_metric:
            return
        self.best_metric, self.best_epoch = float(current), epoch + 1
        # The temporary name keeps the ".weights.h5" ending: tf_keras picks the file format by it.
        atomic_write(self.path, lambda tmp: self.network.save_weights(str(tmp)), suffix=".weights.h5")
        info = {"epoch": epoch + 1, "val_bbox_mAP": float(current),
                "val_bbox_mAP_50": float(logs.get("val_bbox_mAP_50", float("nan")))}
        atomic_write(self.path.with_name(self.path.name + ".json"),
                     lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))
        self.print_fn(f"new best fake-quant bbox_mAP {current:.4f} at epoch {epoch + 1}: {self.path}")


def build_qat_optimizer(cfg, detector, steps_per_epoch: int):
    """tf_keras AdamW with :func:`~rtmdet_keras.training.schedule.qat_schedule`, weight decay
    ``cfg.weight_decay`` except on BatchNorm parameters and biases (as training)."""
    schedule = LearningRateSchedule(qat_schedule(cfg, steps_per_epoch))
    optimizer = tf_keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay, beta_1=0.9,
                                          beta_2=0.999, epsilon=1e-8)
    no_decay = [v for v in detector.network.trainable_variables
                if v.name.split("/")[-1].split(":")[0] in ("bias", "beta", "gamma")]
    optimizer.exclude_from_weight_decay(var_list=no_decay)
    return optimizer


def restore_qat_state(path, network, optimizer, trainable_variables) -> dict:
    """Load a QAT ``epoch_N.ckpt.npz`` into the network and the optimiser (built here); returns its meta."""
    try:
        state = load_training_state(path)
        if state["meta"].get("kind") != "qat":
            raise QATError(f"{path} is not a QAT checkpoint (a float training one?); resume from the qat/ folder")
        return restore_training_state(state, network, optimizer, source=str(path),
                                      trainable_variables=trainable_variables)
    except QATError:
        raise
    except RuntimeError as e:
        raise QATError(str(e)) from None


__all__ = [
    "QATDetector", "LearningRateSchedule", "FreezeObservers", "FreezeBatchNorm", "RefreshWeightRanges",
    "Keras3Callback", "KeepBestWeights", "build_qat_optimizer", "restore_qat_state",
]
