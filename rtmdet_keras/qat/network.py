"""The quantised network: the tf_keras twin of a trained model under tfmot's 8-bit scheme
(:func:`quantize_network`, :func:`build_qat_network`, :func:`load_qat_network`), its activation-range
warm-up (:func:`calibrate_ranges`) and kernel-range refresh (:func:`refresh_weight_ranges`).

Importing this module imports tensorflow_model_optimization (see :mod:`rtmdet_keras.qat.configs`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from rtmdet_keras.runtime.loading import ModelLoadError, load_network
from rtmdet_keras.models import build_twin
from rtmdet_keras.qat import configs as qc
from rtmdet_keras.qat.plan import WRAPPER_TYPES
from rtmdet_keras.qat.settings import QATError
from rtmdet_keras.training.checkpoint import assign_weights, load_training_state

qk = tfmot.quantization.keras


def quantize_network(twin):
    """Annotate every layer of a tf_keras twin and apply tfmot's default 8-bit scheme.

    Weights are kept. Every activation-range quantiser is put under one
    :class:`~rtmdet_keras.qat.configs.RangeControl` (observe / frozen / calibrate), the input image
    range is fixed to 0..255 and every BatchNorm made freezable.

    Returns:
        ``(model, control)``: the quantised tf_keras model (same inputs and output dict as the twin)
        and its :class:`~rtmdet_keras.qat.configs.RangeControl`.
    Raises:
        QATError: a layer that neither tfmot's registry nor :mod:`rtmdet_keras.qat.configs` covers.
    """
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
                       f"rtmdet_keras/qat/configs.py (custom_quantize_config).") from None

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
        elif kind in WRAPPER_TYPES:
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
    if source is not None and not hasattr(source, "layers"):
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
        try:
            assign_weights(model.weights, load_training_state(path)["model"], str(path))
        except RuntimeError as e:
            raise QATError(str(e)) from None
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


__all__ = ["quantize_network", "build_qat_network", "load_qat_network", "refresh_weight_ranges", "calibrate_ranges"]
