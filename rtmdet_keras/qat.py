"""Quantization-aware training (QAT) with tfmot, then full-int8 TFLite export and a float/PTQ/QAT comparison.

``python -m rtmdet_keras.qat configs/nano.yaml work_dirs/nano/best_coco_bbox_mAP.keras``
``--cfg-options data_root=... imgsz='(192,192)' max_epochs=5``

Steps (each a function of this module, :func:`qat` runs them all):

1. **Twin and quantisation.** The trained Keras 3 network (``best_coco_bbox_mAP.keras``, or the EMA
   weights of an ``epoch_N.ckpt.npz``) is rebuilt as its tf_keras twin (tfmot 0.8.1 refuses Keras 3
   models), the weights are copied by layer name, every layer is annotated and
   ``tfmot.quantization.keras.quantize_apply`` applies tfmot's default 8-bit scheme with the configs
   of :mod:`rtmdet_keras.qat_configs` for what the scheme does not cover (:func:`quantize_network`;
   :func:`quantization_plan` lists what happens to every layer and why).
2. **Range warm-up.** tfmot's activation ranges start at +-6 and follow a 0.999 moving average:
   :func:`calibrate_ranges` first sets each to the mean of its per-batch ranges over the export's
   calibration images (``cfg.export.calib_images`` training images through the evaluation
   letterbox, the same images the PTQ export calibrates on), with BatchNorm in inference mode.
3. **Fine-tuning** through ``fit`` on a tf_keras model (:class:`QATDetector` from
   :func:`qat_classes`) whose ``train_step`` uses the same pipeline (stage ``cfg.qat.stage``),
   assigner and losses as training (:func:`detection_losses`), AdamW without decay on BatchNorm and
   biases, and :func:`~rtmdet_keras.training.schedule.qat_schedule` (power warm-up, cosine, constant
   tail). Callbacks freeze the activation ranges after ``cfg.qat.freeze_observer_ratio`` of the steps
   (``FreezeObservers``) and the BatchNorm statistics after ``cfg.qat.freeze_bn_ratio``
   (``FreezeBatchNorm``); the fake-quant model is evaluated on the validation split every epoch
   (:class:`~rtmdet_keras.training.callbacks.CocoEvalCallback`, TensorBoard), the best weights are
   kept, and a resumable checkpoint is written every epoch. No EMA: with lr 2e-5 over a few epochs
   RTMDet's EMA (weight of the new value close to 1 for the first ~2000 updates) would follow the
   weights anyway, and averaging quantiser ranges and frozen statistics has no meaning.
4. **Export** of the best fake-quant weights with :func:`rtmdet_keras.export.export_tflite` (full
   int8, same op checks, metadata JSON, op report and self-check against the fake-quant model), and
   evaluation of every model form with :func:`rtmdet_keras.evaluate.evaluate`.
5. A closing table: float Keras, int8 by post-training quantisation, the fake-quant Keras model and
   int8 by QAT, AP50:95 and AP50 on the validation split.

Files in ``work_dirs/<config>/qat/`` (or ``--work-dir``): ``config.yaml`` (resolved, with
``qat.epochs``), ``quantization_plan.txt``, ``epoch_N.ckpt.npz`` + ``last_checkpoint`` (whole
state: weights with quantiser ranges and BatchNorm statistics, optimiser, epoch; ``--resume``
continues from it), ``best_qat.weights.h5`` (+ ``.json``; tf_keras ``save_weights``: the QAT model
does not round-trip through ``.keras``, :func:`load_qat_network` rebuilds it and loads these),
``<config>_qat_int8.tflite`` (+ ``.json``, ``_ops.txt``), ``<config>_ptq_int8.tflite`` (the
baseline), ``tensorboard/`` and ``qat_summary.json``.

Epochs: ``cfg.qat.epochs`` (5 in the presets). On this command line ``max_epochs=N`` means the QAT
epochs (SSCMA's QAT configs call them so), ``qat.epochs=N`` works too; the training run's
``max_epochs`` is not used.

tensorflow_model_optimization is imported only inside the functions here (importing it sets
``TF_USE_LEGACY_KERAS=1``: ``tf.keras`` is tf_keras, not Keras 3, from then on in the process).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

import click
import numpy as np

from rtmdet_keras.cli import VariadicCfgCommand, config_options, run_standalone

BEST_WEIGHTS = "best_qat.weights.h5"
SUMMARY_NAME = "qat_summary.json"
PLAN_NAME = "quantization_plan.txt"
# Layers that only move or pick int8 values: their output is on their input's quantisation grid.
VALUE_PRESERVING = ("ZeroPadding2D", "MaxPooling2D", "NearestUpsample")
_WRAPPER_TYPES = ("QuantizeWrapper", "QuantizeWrapperV2")


class QATError(RuntimeError):
    """QAT cannot go on; the message says what was wrong and what to do."""


def default_qat_dir(cfg) -> Path:
    """``work_dirs/<config name>/qat`` (``cfg.work_dir/qat`` when the config sets one)."""
    return (Path(cfg.work_dir) if cfg.work_dir else Path("work_dirs") / cfg.name) / "qat"


# ---------------------------------------------------------------------------------------------
# Losses: the detector's maths as one pure function
# ---------------------------------------------------------------------------------------------


def detection_losses(outputs, targets, priors, cfg):
    """RTMDet's weighted ``(loss_cls, loss_box)`` for a batch, in plain TensorFlow.

    The same computation as :meth:`rtmdet_keras.training.detector.RTMDetDetector.compute_loss`:
    flatten the class logits, decode the boxes, run :func:`dynamic_soft_label_assign` (no gradient)
    and :func:`rtmdet_loss` with ``cfg.loss`` weights.

    Args:
        outputs: the network's dict ``{"cls_pX": [B, h, w, C], "reg_pX": [B, h, w, 4]}``.
        targets: ``{"boxes": float32 [B, N, 4] xyxy pixels, "labels": int32 [B, N]}``, label -1 = padding.
        priors: ``[P, 3]`` from :func:`rtmdet_keras.boxes.make_priors`.
    """
    import tensorflow as tf

    from rtmdet_keras.boxes import decode_predictions, flatten_levels
    from rtmdet_keras.training.assigner import dynamic_soft_label_assign
    from rtmdet_keras.training.losses import rtmdet_loss

    cls_logits = tf.cast(flatten_levels(outputs, prefix="cls"), tf.float32)
    pred_boxes = decode_predictions(outputs, priors, cfg.model.exp_on_reg)
    a = cfg.assigner
    assigned = dynamic_soft_label_assign(
        cls_logits, pred_boxes, priors, tf.cast(targets["boxes"], tf.float32), tf.cast(targets["labels"], tf.int32),
        topk=a.topk, iou_weight=a.iou_weight, soft_center_radius=a.soft_center_radius, class_cost=a.class_cost)
    return rtmdet_loss(cls_logits, pred_boxes, assigned, num_classes=int(cfg.num_classes), beta=cfg.loss.qfl_beta,
                       cls_weight=cfg.loss.cls_weight, box_weight=cfg.loss.box_weight)


# ---------------------------------------------------------------------------------------------
# The quantised network
# ---------------------------------------------------------------------------------------------


def quantize_network(twin):
    """Annotate every layer of a tf_keras twin and apply tfmot's default 8-bit scheme.

    Weights are kept. Every activation-range quantiser is put under one
    :class:`~rtmdet_keras.qat_configs.RangeControl` (observe / frozen / calibrate), the input image
    range is fixed to 0..255 and every BatchNorm made freezable.

    Returns:
        ``(model, control)``: the quantised tf_keras model (same inputs and output dict as the twin)
        and its :class:`~rtmdet_keras.qat_configs.RangeControl`.
    Raises:
        QATError: a layer that neither tfmot's registry nor :mod:`rtmdet_keras.qat_configs` covers.
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from rtmdet_keras import qat_configs as qc

    qk = tfmot.quantization.keras

    def annotate(layer):
        if isinstance(layer, tf_keras.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        # The annotation wraps this very layer object, so its weights travel with it.
        return qk.quantize_annotate_layer(layer, quantize_config=qc.custom_quantize_config(layer))

    annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
    try:
        with qk.quantize_scope(qc.quantize_scope_objects()):
            model = qk.quantize_apply(annotated, scheme=qc.RTMDetQuantizeScheme())
    except (RuntimeError, ValueError) as e:  # tfmot's "Layer X is not supported" and pattern errors
        raise QATError(f"tfmot cannot quantise the {twin.name} twin: {e}. Give the layer a QuantizeConfig in "
                       f"rtmdet_keras/qat_configs.py (custom_quantize_config).") from None

    control = qc.RangeControl()

    def controlled(quantizer, where):
        if isinstance(quantizer, qk.quantizers.MovingAverageQuantizer):
            return qc.ControlledRangeQuantizer(quantizer, control)
        raise QATError(f"{where}: unexpected activation quantizer {type(quantizer).__name__}")

    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "QuantizeLayer":
            layer.quantizer_vars["min_var"].assign(qc.IMAGE_RANGE[0])
            layer.quantizer_vars["max_var"].assign(qc.IMAGE_RANGE[1])
            layer.quantizer = qc.FixedRangeQuantizer(layer.quantizer)
        elif kind in _WRAPPER_TYPES:
            layer._output_quantizers = [controlled(q, layer.name) for q in layer._output_quantizers]
            for act in layer._quantize_activations:
                act.quantizer = controlled(act.quantizer, layer.name)
            if isinstance(layer.layer, tf_keras.layers.BatchNormalization):
                qc.make_batchnorm_freezable(layer.layer, control)
    return model, control


def build_qat_network(cfg, source=None):
    """The quantised tf_keras network of ``cfg``: ``(model, control)`` (see :func:`quantize_network`).

    Args:
        source: a Keras 3 network of the same config, a path (``.keras``, or ``epoch_N.ckpt.npz`` whose
            EMA weights are used) or None (fresh initial weights, e.g. to load QAT weights into).
    """
    from rtmdet_keras.models import build_twin

    if source is not None and not hasattr(source, "layers"):
        from rtmdet_keras.evaluate import ModelLoadError, load_network

        try:
            source = load_network(cfg, source)
        except ModelLoadError as e:
            raise QATError(str(e)) from None
    twin = build_twin(cfg, source)
    return quantize_network(twin)


def load_qat_network(cfg, weights_path):
    """Rebuild the quantised network of ``cfg`` and load QAT weights saved by ``save_weights``
    (``best_qat.weights.h5``) or held in a QAT ``epoch_N.ckpt.npz``. Returns ``(model, control)``."""
    model, control = build_qat_network(cfg)
    path = Path(weights_path)
    if path.name.endswith(".npz"):
        from rtmdet_keras.training.checkpoint import load_training_state

        _assign(model.weights, load_training_state(path)["model"], str(path))
    else:
        model.load_weights(str(path))
    return model, control


def refresh_weight_ranges(model) -> None:
    """Set every kernel's quantisation range to the kernel's current extremes (what tfmot's
    last-value quantiser does at each training step, *before* the optimiser moves the weights): call
    before evaluating or exporting so the fake-quant model and the converter see the same grid."""
    for layer in model.layers:
        for weight, quantizer, quantizer_vars in getattr(layer, "_weight_vars", ()):
            quantizer(weight, True, weights=quantizer_vars)


def calibrate_ranges(model, control, images, batch_size: int = 32) -> int:
    """Set every activation range to the mean of its per-batch ranges over ``images``
    (``uint8 [N, H, W, 3]`` letterboxed), BatchNorms in inference mode; leaves observers in
    *observe* mode. Only full batches are used (one partial batch when there is less than one).
    Returns the number of batches."""
    import tensorflow as tf

    from rtmdet_keras import qat_configs as qc

    images = np.asarray(images)
    n = len(images) // batch_size
    batches = [images[i * batch_size:(i + 1) * batch_size] for i in range(n)] or [images]
    step = tf.function(lambda x: model(tf.cast(x, tf.float32), training=True))
    control.calibration_batches.assign(0.0)
    control.observer_mode.assign(qc.CALIBRATE)
    control.bn_frozen.assign(True)
    try:
        for batch in batches:
            step(tf.constant(batch))
            control.calibration_batches.assign_add(1.0)
    finally:
        control.observer_mode.assign(qc.OBSERVE)
        control.bn_frozen.assign(False)
    return len(batches)


# ---------------------------------------------------------------------------------------------
# What happens to every layer
# ---------------------------------------------------------------------------------------------


def _inbound_layers(layer) -> list:
    nodes = layer._inbound_nodes
    if not nodes:
        return []
    inbound = nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _consumers(layer) -> list:
    return [node.outbound_layer for node in layer._outbound_nodes]


def _inner_type(layer) -> str:
    return type(getattr(layer, "layer", layer)).__name__


def _quantizes_output(layer) -> bool:
    if type(layer).__name__ == "QuantizeLayer":
        return True
    if type(layer).__name__ not in _WRAPPER_TYPES:
        return False
    if layer._output_quantizers:
        return True
    return any(act._should_post_quantize() for act in layer._quantize_activations)


def quantization_plan(model) -> List[dict]:
    """What happens to every layer of a quantised network, in graph order.

    Each row: ``{"layer", "type", "weights", "output", "ok"}``. ``weights`` names the fake-quantised
    kernels and their ranges (per channel or per tensor); ``output`` says how the layer's output
    reaches int8: fake-quantised here, kept on its input's grid (value-preserving layers), folded
    into the conv at conversion (BatchNorm, the conv under it) or quantised by the Concatenate that
    reads it. ``ok`` is False for a layer whose output would stay float with no such reason, for a
    conv whose kernel is not quantised, and for a depthwise kernel with one range for all channels.
    """
    rows, on_grid = [], {}
    outputs = set(model.output_names)
    for layer in model.layers:
        kind = _inner_type(layer)
        row = {"layer": layer.name, "type": kind, "weights": "", "output": "", "ok": True}
        if type(layer).__name__ == "InputLayer":
            row["output"] = "float32 image 0-255, quantised by the next layer"
            on_grid[layer.name] = False
            rows.append(row)
            continue
        if type(layer).__name__ == "QuantizeLayer":
            row["output"] = "input image, fixed range 0..255 (int8 scale 1, lossless)"
            on_grid[layer.name] = True
            rows.append(row)
            continue
        if type(layer).__name__ not in _WRAPPER_TYPES:
            row.update(output="not wrapped by tfmot: stays float", ok=False)
            on_grid[layer.name] = False
            rows.append(row)
            continue
        weights = []
        for weight, _, qvars in layer._weight_vars:
            size = int(np.prod(qvars["min_var"].shape)) if qvars["min_var"].shape.rank else 1
            channels = int(weight.shape[-1]) * (int(weight.shape[-2]) if kind == "DepthwiseConv2D" else 1)
            per = f"per channel ({size})" if size == channels and size > 1 else f"per tensor ({size} range)"
            weights.append(f"{weight.name.split('/')[-1].split(':')[0]} int8 {per}")
            if kind == "DepthwiseConv2D" and size != channels:
                row["ok"] = False
        row["weights"] = ", ".join(weights)
        if kind in ("Conv2D", "DepthwiseConv2D") and not weights:
            row["ok"] = False
            row["weights"] = "kernel NOT quantised"
        consumers = _consumers(layer)
        ctypes = [_inner_type(c) for c in consumers]
        if _quantizes_output(layer):
            row["output"] = "int8: fake-quantised here"
            on_grid[layer.name] = True
        elif kind in VALUE_PRESERVING and all(on_grid.get(i.name, False) for i in _inbound_layers(layer)):
            row["output"] = "int8: keeps its input's values and scale"
            on_grid[layer.name] = True
        else:
            on_grid[layer.name] = False
            if kind in ("Conv2D", "DepthwiseConv2D") and ctypes == ["BatchNormalization"]:
                row["output"] = "folded: the BatchNorm after it is folded into this conv at conversion"
            elif kind == "BatchNormalization" and len(consumers) == 1 and ctypes[0] in ("ReLU", "Activation"):
                row["output"] = "folded into the conv; the activation after it is fused and quantised"
            elif consumers and all(t == "Concatenate" and _quantizes_output(c) for t, c in zip(ctypes, consumers)):
                row["output"] = "int8: quantised by the Concatenate that reads it (same scale in TFLite)"
            else:
                row["output"] = "FLOAT: no quantizer and no fusion covers it"
                row["ok"] = False
        if layer.name in outputs and not on_grid[layer.name]:
            row["ok"] = False
            row["output"] += "; a model output that is not quantised"
        rows.append(row)
    return rows


def unquantized_layers(model) -> List[str]:
    """Names of the layers :func:`quantization_plan` marks as not ok (empty when all is int8)."""
    return [r["layer"] for r in quantization_plan(model) if not r["ok"]]


def format_quantization_plan(rows) -> str:
    """The plan as a plain-text table, with a count per kind of treatment at the end."""
    w_layer = max(len("layer"), *(len(r["layer"]) for r in rows))
    w_type = max(len("type"), *(len(r["type"]) for r in rows))
    w_weights = max(len("weights"), *(len(r["weights"]) for r in rows))
    head = f"{'layer':<{w_layer}}  {'type':<{w_type}}  {'weights':<{w_weights}}  output"
    lines = [head, "-" * len(head)]
    for r in rows:
        flag = "" if r["ok"] else "   <-- PROBLEM"
        lines.append(f"{r['layer']:<{w_layer}}  {r['type']:<{w_type}}  {r['weights']:<{w_weights}}  "
                     f"{r['output']}{flag}")
    counts: Dict[str, int] = {}
    for r in rows:
        key = r["output"].split(":")[0] if r["ok"] else "PROBLEM"
        counts[key] = counts.get(key, 0) + 1
    lines.append("-" * len(head))
    lines.append(", ".join(f"{k}: {v}" for k, v in counts.items()))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# tf_keras training classes (tf_keras is imported only when QAT runs)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def qat_classes():
    """The tf_keras classes of QAT training, as a namespace: ``QATDetector``, ``FreezeObservers``,
    ``FreezeBatchNorm``, ``RefreshWeightRanges``, ``Keras3Callback``, ``QATCheckpoint``,
    ``KeepBestWeights`` and ``LearningRateSchedule``."""
    from types import SimpleNamespace

    import tensorflow as tf
    import tf_keras

    from rtmdet_keras.boxes import make_priors

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
            from rtmdet_keras.qat_configs import FROZEN, OBSERVE

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
            from rtmdet_keras.training.checkpoint import atomic_write

            self.best_metric, self.best_epoch = float(current), epoch + 1
            # The temporary name keeps the ".weights.h5" ending: tf_keras picks the file format by it.
            atomic_write(self.path, lambda tmp: self.network.save_weights(str(tmp)), suffix=".weights.h5")
            info = {"epoch": epoch + 1, "val_bbox_mAP": float(current),
                    "val_bbox_mAP_50": float(logs.get("val_bbox_mAP_50", float("nan")))}
            atomic_write(self.path.with_name(self.path.name + ".json"),
                         lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))
            self.print_fn(f"new best fake-quant bbox_mAP {current:.4f} at epoch {epoch + 1}: {self.path}")

    class QATCheckpoint(tf_keras.callbacks.Callback):
        """``epoch_N.ckpt.npz`` after every epoch (network weights with quantiser ranges and BatchNorm
        statistics, optimiser variables, epoch, best metric), ``last_checkpoint`` pointing at it, the
        newest ``max_keep`` kept. Same file layout as training's checkpoints."""

        def __init__(self, work_dir, network, max_keep=3, state_fn=None):
            super().__init__()
            self.work_dir, self.network = Path(work_dir), network
            self.max_keep, self.state_fn = int(max_keep), state_fn

        def on_epoch_end(self, epoch, logs=None):
            from rtmdet_keras.training.checkpoint import LAST_POINTER, atomic_write, epoch_checkpoints

            done = epoch + 1
            optimizer = self.model.optimizer
            meta = {"epoch": done, "iterations": int(optimizer.iterations.numpy()), "kind": "qat"}
            if self.state_fn is not None:
                meta.update(self.state_fn())
            name = f"epoch_{done}.ckpt.npz"
            save_qat_state(self.work_dir / name, self.network, optimizer, meta)
            atomic_write(self.work_dir / LAST_POINTER, lambda tmp: Path(tmp).write_text(name + "\n"))
            if self.max_keep > 0:
                for _, old in epoch_checkpoints(self.work_dir)[: -self.max_keep]:
                    old.unlink(missing_ok=True)

    return SimpleNamespace(
        QATDetector=QATDetector, LearningRateSchedule=LearningRateSchedule, FreezeObservers=FreezeObservers,
        FreezeBatchNorm=FreezeBatchNorm, RefreshWeightRanges=RefreshWeightRanges, Keras3Callback=Keras3Callback,
        KeepBestWeights=KeepBestWeights, QATCheckpoint=QATCheckpoint)


def build_qat_optimizer(cfg, detector, steps_per_epoch: int):
    """tf_keras AdamW with :func:`~rtmdet_keras.training.schedule.qat_schedule`, weight decay
    ``cfg.weight_decay`` except on BatchNorm parameters and biases (as training)."""
    import tf_keras

    from rtmdet_keras.training.schedule import qat_schedule

    schedule = qat_classes().LearningRateSchedule(qat_schedule(cfg, steps_per_epoch))
    optimizer = tf_keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay, beta_1=0.9,
                                          beta_2=0.999, epsilon=1e-8)
    no_decay = [v for v in detector.network.trainable_variables
                if v.name.split("/")[-1].split(":")[0] in ("bias", "beta", "gamma")]
    optimizer.exclude_from_weight_decay(var_list=no_decay)
    return optimizer


# ---------------------------------------------------------------------------------------------
# Checkpoints (training.checkpoint's file layout, tf_keras variables)
# ---------------------------------------------------------------------------------------------


def save_qat_state(path, network, optimizer, meta: dict) -> None:
    """Write network weights, optimiser variables and ``meta`` to ``path`` (``.npz``) atomically, in
    the layout :func:`rtmdet_keras.training.checkpoint.load_training_state` reads."""
    from rtmdet_keras.training.checkpoint import atomic_write

    arrays = {f"model/{i:05d}": np.asarray(v) for i, v in enumerate(network.weights)}
    arrays.update({f"optimizer/{i:05d}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    meta = dict(meta, num_model_weights=len(network.weights), model_weight_names=[v.name for v in network.weights])
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def _assign(variables, values, source) -> None:
    if len(variables) != len(values):
        raise QATError(f"{source}: {len(values)} tensors for {len(variables)} variables; was it written for "
                       f"another config?")
    for v, w in zip(variables, values):
        if tuple(v.shape) != tuple(np.shape(w)):
            raise QATError(f"{source}: {v.name} is {tuple(np.shape(w))} in the file but {tuple(v.shape)} here; "
                           f"was it written for another config?")
        v.assign(w)


def restore_qat_state(path, network, optimizer, trainable_variables) -> dict:
    """Load a QAT ``epoch_N.ckpt.npz`` into the network and the optimiser (built here); returns its meta."""
    from rtmdet_keras.training.checkpoint import load_training_state

    state = load_training_state(path)
    if state["meta"].get("kind") != "qat":
        raise QATError(f"{path} is not a QAT checkpoint (a float training one?); resume from the qat/ folder")
    _assign(network.weights, state["model"], str(path))
    if len(optimizer.variables) < len(state["optimizer"]):
        optimizer.build(trainable_variables)
    _assign(optimizer.variables, state["optimizer"], f"{path} (optimiser)")
    return state["meta"]


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------


def _evaluate_network(network, cfg, dataset):
    from rtmdet_keras.evaluation import evaluate_detections
    from rtmdet_keras.training.detector import make_dataset_predictor

    return evaluate_detections(dataset, make_dataset_predictor(network, cfg)(dataset))


def qat(cfg, checkpoint, work_dir=None, resume: bool = False, baselines: bool = True, export: bool = True,
        export_weights: str = "best", verbose: int = 1, print_fn=print) -> dict:
    """Quantization-aware fine-tuning of the trained network ``checkpoint``, int8 export and the
    comparison table (see the module docstring for the steps and files).

    Args:
        cfg: the training config, ``cfg.qat`` holding the recipe (``epochs``...).
        checkpoint: the float model: ``best_coco_bbox_mAP.keras`` or ``epoch_N.ckpt.npz`` (EMA weights).
        work_dir: default ``work_dirs/<config>/qat``.
        resume: continue from the newest ``epoch_N.ckpt.npz`` in ``work_dir``.
        baselines: also evaluate the float model and a post-training-quantised int8 export of it.
        export: export and evaluate the int8 QAT model (off: fine-tune only).
        export_weights: ``"best"`` (the epoch with the best fake-quant validation mAP, as training's
            ``best_coco_bbox_mAP.keras``) or ``"last"`` (the final epoch, all freezes applied).
    Returns:
        ``{"work_dir", "checkpoint", "epochs", "steps", "best_epoch", "weights" (which were exported),
        "metrics": {row: COCO metrics}, "table", "paths": {...}, "seconds"}`` (also written to
        ``qat_summary.json``).
    """
    import keras

    from rtmdet_keras.data import load_split
    from rtmdet_keras.data.pipeline import build_train_pipeline
    from rtmdet_keras.evaluate import ModelLoadError, evaluate, load_network
    from rtmdet_keras.evaluation import format_comparison_table
    from rtmdet_keras.export import calibration_images, export_tflite
    from rtmdet_keras.training.callbacks import CocoEvalCallback, LearningRateLogger, NanGuard, TensorBoardWriter
    from rtmdet_keras.training.checkpoint import latest_checkpoint

    start = time.time()
    q = cfg.qat
    if export_weights not in ("best", "last"):
        raise QATError(f"export_weights must be 'best' or 'last', got {export_weights!r}")
    if q.epochs < 1:
        raise QATError(f"qat.epochs must be at least 1, got {q.epochs}")
    if not (0.0 <= q.freeze_observer_ratio <= 1.0 and 0.0 <= q.freeze_bn_ratio <= 1.0):
        raise QATError(f"qat.freeze_observer_ratio and qat.freeze_bn_ratio must lie in [0, 1], got "
                       f"{q.freeze_observer_ratio} and {q.freeze_bn_ratio}")
    work_dir = Path(work_dir) if work_dir else default_qat_dir(cfg)
    work_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)

    train_set = load_split(cfg, "train")
    val_set = load_split(cfg, "val")
    cfg.class_names = list(train_set.class_names)
    cfg.save(work_dir / "config.yaml")
    checkpoint = Path(checkpoint)
    try:
        float_net = load_network(cfg, checkpoint)
    except ModelLoadError as e:
        raise QATError(str(e)) from None

    metrics: Dict[str, dict] = {}
    paths: Dict[str, str] = {}
    if baselines:
        print_fn(f"\n== float model {checkpoint}")
        metrics["float Keras"] = evaluate(cfg, checkpoint, dataset=val_set, print_fn=print_fn).metrics
        if export:
            print_fn("\n== post-training quantisation (the baseline)")
            ptq = export_tflite(float_net, cfg, work_dir, ("int8",), calib_dataset=train_set, name=f"{cfg.name}_ptq",
                                saved_model=False, check=False, print_fn=print_fn)["int8"]
            paths["ptq_int8"] = str(ptq)
            metrics["int8 PTQ"] = evaluate(cfg, ptq, dataset=val_set, print_fn=print_fn).metrics

    # --- the quantised network (tfmot is imported from here on) ---
    network, control = build_qat_network(cfg, float_net)
    plan = quantization_plan(network)
    (work_dir / PLAN_NAME).write_text(format_quantization_plan(plan))
    problems = [r["layer"] for r in plan if not r["ok"]]
    print_fn(f"\nquantised network: {len(plan)} layers, plan in {work_dir / PLAN_NAME}")
    if problems:
        raise QATError(f"layers that would stay float or are quantised wrongly: {problems}; see {work_dir / PLAN_NAME}")

    classes = qat_classes()
    pipeline = build_train_pipeline(train_set, cfg, stage=q.stage, seed=cfg.seed)
    steps = pipeline.steps_per_epoch
    total = q.epochs * steps
    detector = classes.QATDetector(network, cfg)
    optimizer = build_qat_optimizer(cfg, detector, steps)
    detector.compile(optimizer=optimizer, jit_compile=False)

    initial_epoch, best_metric, best_epoch = 0, -1.0, None
    ckpt = latest_checkpoint(work_dir) if resume else None
    if resume and ckpt is None:
        print_fn(f"--resume: no checkpoint in {work_dir}, starting from the float model")
    if ckpt is not None:
        meta = restore_qat_state(ckpt, network, optimizer, detector.trainable_variables)
        initial_epoch = int(meta["epoch"])
        best_metric, best_epoch = float(meta.get("best_metric", -1.0)), meta.get("best_epoch")
        print_fn(f"resumed from {ckpt}: epoch {initial_epoch}, step {int(optimizer.iterations.numpy())}")
    else:
        calib = calibration_images(cfg, train_set)
        n = calibrate_ranges(network, control, calib, batch_size=cfg.batch_size)
        print_fn(f"activation ranges calibrated on {len(calib)} training images ({n} batches, BatchNorm in "
                 f"inference mode)")

    observer_step = int(round(q.freeze_observer_ratio * total))
    bn_step = int(round(q.freeze_bn_ratio * total))
    evaluator = CocoEvalCallback(val_set, _predictor(network, cfg), network, interval=1, max_epochs=q.epochs,
                                 tensorboard=TensorBoardWriter(work_dir / "tensorboard", val_set, cfg.class_names),
                                 print_fn=print_fn)
    keep_best = classes.KeepBestWeights(network, work_dir / BEST_WEIGHTS, best_metric, best_epoch, print_fn=print_fn)
    saver = classes.QATCheckpoint(work_dir, network, max_keep=cfg.max_keep_ckpts,
                                  state_fn=lambda: {"best_metric": keep_best.best_metric,
                                                    "best_epoch": keep_best.best_epoch})
    import tf_keras

    # Order: ranges and BN switched before each batch; kernel ranges refreshed before the evaluation,
    # whose metrics the best-weights keeper, the checkpoint and TensorBoard then read.
    callbacks = [classes.FreezeObservers(control, observer_step, print_fn),
                 classes.FreezeBatchNorm(control, bn_step, print_fn),
                 classes.Keras3Callback(NanGuard()), classes.RefreshWeightRanges(network),
                 classes.Keras3Callback(evaluator), keep_best, saver, classes.Keras3Callback(LearningRateLogger()),
                 tf_keras.callbacks.TensorBoard(str(work_dir / "tensorboard"), update_freq="epoch", write_graph=False)]
    if initial_epoch < q.epochs:
        print_fn(f"\nQAT: epochs {initial_epoch + 1}-{q.epochs}, {steps} steps each (stage {q.stage} pipeline), lr "
                 f"{q.lr:g}; activation ranges frozen from step {observer_step}, BatchNorm from step {bn_step} "
                 f"of {total}")
        detector.fit(pipeline.dataset, epochs=q.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                     callbacks=callbacks, verbose=verbose)

    best = work_dir / BEST_WEIGHTS
    if export_weights == "best" and best.exists():
        network.load_weights(str(best))
        chosen = f"best (epoch {keep_best.best_epoch})"
        print_fn(f"\nbest fake-quant weights: epoch {keep_best.best_epoch} ({best})")
    else:
        chosen = f"last (epoch {q.epochs})"
        print_fn(f"\nweights of the last epoch ({q.epochs})")
    refresh_weight_ranges(network)
    metrics["QAT fake-quant Keras"] = _evaluate_network(network, cfg, val_set).metrics

    if export:
        print_fn("\n== int8 export of the QAT model")
        qat_tflite = export_tflite(network, cfg, work_dir, ("int8",), calib_dataset=train_set,
                                   name=f"{cfg.name}_qat", saved_model=False, check_dataset=val_set,
                                   print_fn=print_fn)["int8"]
        paths["qat_int8"] = str(qat_tflite)
        meta = json.loads(qat_tflite.with_suffix(".json").read_text())
        if meta.get("problems"):
            print_fn(f"WARNING: the QAT int8 graph has {len(meta['problems'])} problem(s) for MCU runtimes")
        metrics["int8 QAT"] = evaluate(cfg, qat_tflite, dataset=val_set, print_fn=print_fn).metrics

    table = format_comparison_table(metrics)
    print_fn(f"\nvalidation split {val_set.source} ({len(val_set)} images) at {cfg.imgsz[0]}x{cfg.imgsz[1]}:")
    print_fn(table.rstrip())
    summary = {"work_dir": str(work_dir), "checkpoint": str(checkpoint), "epochs": q.epochs, "steps": total,
               "best_epoch": keep_best.best_epoch, "weights": chosen, "metrics": metrics, "table": table,
               "paths": paths, "seconds": round(time.time() - start, 1)}
    (work_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _predictor(network, cfg):
    from rtmdet_keras.training.detector import make_dataset_predictor

    return make_dataset_predictor(network, cfg)


# ---------------------------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------------------------


def _qat_epochs_from_options(cfg, cfg_options) -> None:
    """``max_epochs=N`` (or its alias ``epochs=N``) on the QAT command line means the QAT epochs."""
    from rtmdet_keras.config import parse_overrides

    given = parse_overrides(list(cfg_options or ()))
    if ("max_epochs" in given or "epochs" in given) and not ("qat" in given and "epochs" in given["qat"]):
        cfg.qat.epochs = int(cfg.max_epochs)


@click.command("qat", cls=VariadicCfgCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, metavar="[CONFIG] CHECKPOINT")
@config_options()
@click.option("--checkpoint", default=None,
              help="The trained float model: best_coco_bbox_mAP.keras, epoch_N.ckpt.npz, or an "
                   "mmdetection/SSCMA .pth or its converted .npz.")
@click.option("--work-dir", default=None, help="Output folder (default work_dirs/<config name>/qat).")
@click.option("--resume", is_flag=True, help="Continue from the newest QAT checkpoint in the work dir.")
@click.option("--no-baselines", is_flag=True, help="Skip evaluating the float model and its PTQ int8 export.")
@click.option("--export-weights", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Export the epoch with the best fake-quant validation mAP, or the last epoch.")
@click.option("--verbose", type=int, default=1, help="Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")
def qat_command(args, config, cfg_options, checkpoint, work_dir, resume, no_baselines, export_weights, verbose):
    """Quantization-aware fine-tuning of a trained model, then full-int8 export and a float / PTQ / QAT table.

    \b
    python -m rtmdet_keras.qat configs/nano.yaml work_dirs/nano/best_coco_bbox_mAP.keras \\
        --cfg-options imgsz='(192,192)' max_epochs=5
    rtmdet qat --config nano --checkpoint work_dirs/nano/epoch_300.ckpt.npz

    The QAT recipe is the config's qat section; max_epochs=N on this command line sets the QAT epochs
    (as qat.epochs=N does).
    """
    from rtmdet_keras.evaluate import command_config_and_model

    cfg, model_path = command_config_and_model(args, config, cfg_options, checkpoint=checkpoint)
    _qat_epochs_from_options(cfg, cfg_options)
    if model_path.suffix == ".tflite" or model_path.is_dir():
        raise click.ClickException(f"{model_path}: QAT starts from a Keras model (.keras or "
                                 "epoch_N.ckpt.npz) or an mmdetection/SSCMA checkpoint (.pth or converted .npz)")
    from rtmdet_keras.data import DatasetError, ImageReadError
    from rtmdet_keras.export import ExportError
    from rtmdet_keras.training.callbacks import TrainingDiverged

    try:
        qat(cfg, model_path, work_dir=work_dir, resume=resume, baselines=not no_baselines,
            export_weights=export_weights, verbose=verbose, print_fn=click.echo)
    except (QATError, DatasetError, ImageReadError, ExportError, TrainingDiverged) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted: resume with the same command and --resume", err=True)
        sys.exit(130)


__all__ = [
    "qat", "qat_command", "quantize_network", "build_qat_network", "load_qat_network", "calibrate_ranges",
    "refresh_weight_ranges", "quantization_plan", "unquantized_layers", "format_quantization_plan",
    "detection_losses", "qat_classes", "build_qat_optimizer", "save_qat_state", "restore_qat_state",
    "default_qat_dir", "QATError",
]

if __name__ == "__main__":
    run_standalone(qat_command, "python -m rtmdet_keras.qat")
