"""tfmot pieces for RTMDet's quantization-aware training: QuantizeConfigs, quantizers, range controls.

**Importing this module imports tensorflow_model_optimization**, which sets ``TF_USE_LEGACY_KERAS=1``
(``tf.keras`` is tf_keras, not Keras 3, for the rest of the process). Only the :mod:`rtmdet_keras.qat`
package imports it (and ``import rtmdet_keras.qat`` alone does not).

What tfmot 0.8.1's default 8-bit scheme does with the twin, and what this module adds
(see :func:`rtmdet_keras.qat.plan.quantization_plan` for the per-layer table of a built network):

* covered by the default registry and transforms: ``Conv2D`` (per-channel symmetric int8 kernel),
  ``Conv2D``/``DepthwiseConv2D`` + ``BatchNormalization`` (+ ``ReLU``/``relu6``/SiLU): no fake quant
  between them, the output quantised once after the activation; the converter folds the
  BatchNorm into the kernel and bias, which is exact for per-channel kernels (scaling channel ``c``
  by ``gamma_c / sqrt(var_c + eps)`` scales its quantisation grid by the same factor);
  ``Concatenate``, ``Add``, ``GlobalAveragePooling2D``, ``ReLU``, ``Activation("silu")`` (tf_keras
  resolves it to ``swish``) quantise their output; ``ZeroPadding2D`` and ``MaxPooling2D`` keep the
  int8 values of their input; the graph input gets a ``QuantizeLayer``.
* added here (:func:`custom_quantize_config` and :class:`RTMDetQuantizeRegistry`):

  - ``InputNormalization`` -> :class:`OutputQuantizeConfig`: MUL (+ ADD) of the raw image; the stem
    conv needs its int8 output.
  - ``HardSigmoid`` -> :class:`OutputQuantizeConfig`: channel attention's ``relu6(x + 3) / 6``.
  - ``Multiply`` -> :class:`OutputQuantizeConfig`: channel attention's scaling of the features.
  - ``NearestUpsample`` -> :class:`PassThroughQuantizeConfig`: it copies values, so its output stays
    on its (quantised) input's grid; TFLite's int8 RESIZE_NEAREST_NEIGHBOR keeps the input's scale.
  - ``DepthwiseConv2D`` -> :class:`DepthwiseConvQuantizeConfig`: one kernel range per channel.
    tfmot's default builds the per-axis range over the depth multiplier (size 1: one range for all
    channels, tfmot issue #808), while the converter quantises depthwise kernels per channel: with a
    per-tensor fake quant the converter would re-round the kernel onto a grid training never saw.

  Ops inside one custom layer (MUL then ADD of ``InputNormalization`` when the mean is not 0, the ADD
  (RELU6 fused) before the MUL of ``HardSigmoid``) have no fake quant of their own: the converter calibrates
  those intermediate tensors on the export's representative images.
* range controls (:class:`RangeControl`): every activation-range quantizer
  (``MovingAverageQuantizer``) is wrapped in a :class:`ControlledRangeQuantizer` that reads a shared
  mode variable: *observe* (tfmot's moving average, decay 0.999), *frozen* (ranges fixed: the
  SSCMA recipe freezes observers after a third of the steps) or *calibrate* (the range becomes the
  mean of the per-batch ranges seen since calibration began: tfmot's ranges start at +-6 and a 0.999
  moving average barely moves in a few batches). The input ``QuantizeLayer`` gets a fixed 0..255
  range (:class:`FixedRangeQuantizer`): scale 1, lossless for 8-bit pixels, as the PTQ export pins.
  BatchNorm layers read the control's ``bn_frozen`` flag (:func:`make_batchnorm_freezable`).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from rtmdet_keras.models.twin import tf_keras_custom_layers

_qk = tfmot.quantization.keras
QuantizeConfig = _qk.QuantizeConfig
Quantizer = _qk.quantizers.Quantizer

OBSERVE, FROZEN, CALIBRATE = 0, 1, 2
IMAGE_RANGE = (0.0, 255.0)  # the raw-image input contract


def activation_quantizer():
    """tfmot's default 8-bit activation quantizer: per tensor, asymmetric, moving-average range."""
    return _qk.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


# ---------------------------------------------------------------------------------------------
# QuantizeConfigs
# ---------------------------------------------------------------------------------------------


class OutputQuantizeConfig(QuantizeConfig):
    """Quantise only the layer's output (8-bit, per tensor, moving-average range); no weights.

    For layers that compute in int8 in TFLite but are not in tfmot's registry: their output tensor
    needs a scale and zero point, which this fake quant learns.
    """

    def __init__(self, quantize_output: bool = True):
        # tfmot's ConcatTransform switches the output quantizer off (``quantize_output``) when a
        # Concatenate quantises the same tensor right after.
        self.quantize_output = bool(quantize_output)

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [activation_quantizer()] if self.quantize_output else []

    def get_config(self):
        return {"quantize_output": self.quantize_output}


class PassThroughQuantizeConfig(OutputQuantizeConfig):
    """No quantizer: for value-preserving layers (nearest upsampling) whose output is the int8
    values of their (quantised) input; a second fake quant would only add a requantisation."""

    def __init__(self):
        super().__init__(quantize_output=False)

    def get_config(self):
        return {}


class DepthwisePerChannelWeightsQuantizer(_qk.quantizers.LastValueQuantizer):
    """Symmetric narrow-range int8 fake quant of a depthwise kernel ``[kh, kw, C, M]`` with one range
    per output channel (``C * M``, channel ``c * M + m`` as TensorFlow orders them), as TFLite's
    DEPTHWISE_CONV_2D stores it (quantized_dimension 3 of ``[1, kh, kw, C * M]``)."""

    def __init__(self):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
        min_var = layer.add_weight(name + "_min", shape=(channels,), trainable=False,
                                   initializer=tf_keras.initializers.Constant(-6.0))
        max_var = layer.add_weight(name + "_max", shape=(channels,), trainable=False,
                                   initializer=tf_keras.initializers.Constant(6.0))
        return {"min_var": min_var, "max_var": max_var}

    def __call__(self, inputs, training, weights, **kwargs):
        kh, kw, c, m = (int(v) for v in inputs.shape)
        flat = tf.reshape(inputs, [kh, kw, 1, c * m])  # per-axis fake quant works on the last axis
        out = super().__call__(flat, training, weights, **kwargs)
        return tf.reshape(out, [kh, kw, c, m])

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls()


class DepthwiseConvQuantizeConfig(QuantizeConfig):
    """``DepthwiseConv2D``: per-channel kernel (:class:`DepthwisePerChannelWeightsQuantizer`); the
    ``activation`` attribute handled as tfmot's default (``NoOpActivation`` when a BatchNorm follows,
    post-activation fake quant for ``linear``/``relu``)."""

    def __init__(self):
        self.weight_quantizer = DepthwisePerChannelWeightsQuantizer()
        self.activation_quantizer = activation_quantizer()

    def get_weights_and_quantizers(self, layer):
        return [(layer.depthwise_kernel, self.weight_quantizer)]

    def get_activations_and_quantizers(self, layer):
        return [(layer.activation, self.activation_quantizer)]

    def set_quantize_weights(self, layer, quantize_weights):
        (kernel,) = quantize_weights
        layer.depthwise_kernel = kernel

    def set_quantize_activations(self, layer, quantize_activations):
        (act,) = quantize_activations
        layer.activation = act

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


class RTMDetQuantizeRegistry(_qk.default_8bit.Default8BitQuantizeRegistry):
    """tfmot's default 8-bit registry with per-channel depthwise kernels."""

    def get_quantize_config(self, layer):
        if type(layer) is tf_keras.layers.DepthwiseConv2D:
            return DepthwiseConvQuantizeConfig()
        return super().get_quantize_config(layer)


class RTMDetQuantizeScheme(_qk.default_8bit.Default8BitQuantizeScheme):
    """tfmot's default 8-bit scheme (its layout transforms: Conv+BN(+ReLU) patterns, Concatenate
    ranges) with :class:`RTMDetQuantizeRegistry`."""

    def get_quantize_registry(self):
        return RTMDetQuantizeRegistry()


def custom_quantize_config(layer):
    """The QuantizeConfig this module gives ``layer``, or None when tfmot's registry handles it."""
    ns = tf_keras_custom_layers()
    if isinstance(layer, ns.NearestUpsample):
        return PassThroughQuantizeConfig()
    if isinstance(layer, (ns.InputNormalization, ns.HardSigmoid, tf_keras.layers.Multiply)):
        return OutputQuantizeConfig()
    return None


def quantize_scope_objects() -> dict:
    """``custom_objects`` for ``quantize_scope``: the twin's custom layers and this module's classes."""
    ns = tf_keras_custom_layers()
    objects = {cls.__name__: cls for cls in (OutputQuantizeConfig, PassThroughQuantizeConfig,
                                             DepthwiseConvQuantizeConfig, DepthwisePerChannelWeightsQuantizer)}
    for name, cls in vars(ns).items():
        objects[name] = cls
        objects[f"rtmdet_keras>{name}"] = cls
    return objects


# ---------------------------------------------------------------------------------------------
# Range and BatchNorm controls
# ---------------------------------------------------------------------------------------------


class RangeControl:
    """The switches one QAT network's quantizers and BatchNorms read while training.

    Attributes (``tf.Variable``, read inside the traced train step, so flipping them needs no
    retracing):
        observer_mode: ``OBSERVE`` (0), ``FROZEN`` (1) or ``CALIBRATE`` (2), for every activation range.
        calibration_batches: batches averaged so far in ``CALIBRATE`` mode (the driver counts).
        bn_frozen: when True, BatchNorms normalise with their moving statistics and stop updating
            them even in training mode (gamma and beta still train), as PyTorch's ``freeze_bn_stats``.
    """

    def __init__(self):
        with tf.init_scope():
            self.observer_mode = tf.Variable(OBSERVE, dtype=tf.int32, trainable=False, name="qat_observer_mode")
            self.calibration_batches = tf.Variable(0.0, dtype=tf.float32, trainable=False,
                                                   name="qat_calibration_batches")
            self.bn_frozen = tf.Variable(False, dtype=tf.bool, trainable=False, name="qat_bn_frozen")

    def state(self) -> dict:
        return {"observer_mode": int(self.observer_mode.numpy()), "bn_frozen": bool(self.bn_frozen.numpy())}


class ControlledRangeQuantizer(Quantizer):
    """Wraps tfmot's ``MovingAverageQuantizer`` (per tensor, asymmetric): in training mode the range
    update follows ``control.observer_mode``; in inference mode it is the wrapped quantizer's."""

    def __init__(self, inner, control: RangeControl):
        if inner.per_axis or inner.symmetric:
            raise ValueError("ControlledRangeQuantizer handles per-tensor asymmetric activation ranges only")
        self.inner = inner
        self.control = control

    def build(self, tensor_shape, name, layer):
        return self.inner.build(tensor_shape, name, layer)

    def __call__(self, inputs, training, weights, **kwargs):
        if not training:  # tfmot's wrappers pass Python booleans (one branch each of a smart_cond)
            return self.inner(inputs, False, weights, **kwargs)
        return tf.switch_case(self.control.observer_mode.read_value(), branch_fns=[
            lambda: self.inner(inputs, True, weights, **kwargs),   # OBSERVE: moving average
            lambda: self.inner(inputs, False, weights, **kwargs),  # FROZEN: use the range as it is
            lambda: self._calibrate(inputs, weights, **kwargs),    # CALIBRATE
        ])

    def _calibrate(self, inputs, weights, **kwargs):
        # Running mean of the per-batch ranges (min <= 0 <= max, as tfmot's moving average keeps them).
        n = self.control.calibration_batches
        lo = tf.minimum(tf.reduce_min(inputs), 0.0)
        hi = tf.maximum(tf.reduce_max(inputs), 0.0)
        min_var, max_var = weights["min_var"], weights["max_var"]
        updates = [min_var.assign((min_var * n + lo) / (n + 1.0)), max_var.assign((max_var * n + hi) / (n + 1.0))]
        with tf.control_dependencies(updates):
            return self.inner(tf.identity(inputs), False, weights, **kwargs)

    def get_config(self):
        return self.inner.get_config()


class FixedRangeQuantizer(Quantizer):
    """Fake quant with the range stored in the layer's min/max variables, never updated (the input
    image: :data:`IMAGE_RANGE`, set by :func:`rtmdet_keras.qat.network.quantize_network`)."""

    def __init__(self, inner):
        self.inner = inner

    def build(self, tensor_shape, name, layer):
        return self.inner.build(tensor_shape, name, layer)

    def __call__(self, inputs, training, weights, **kwargs):
        return self.inner(inputs, False, weights, **kwargs)

    def get_config(self):
        return self.inner.get_config()


def make_batchnorm_freezable(bn_layer, control: RangeControl) -> None:
    """Make a tf_keras ``BatchNormalization`` run in inference mode (moving statistics, no update)
    while ``control.bn_frozen`` is True, even when called with ``training=True``.

    tf_keras asks ``_get_training_value`` what mode to run in (that is how ``trainable=False`` turns a
    BatchNorm to inference mode); this instance's version returns the tensor ``training and not
    bn_frozen``, which tf_keras' BatchNorm handles with ``smart_cond`` (moving-average momentum 1
    when false). Unlike ``trainable=False`` it keeps gamma and beta training and needs no recompile.
    """
    original = getattr(bn_layer, "_get_training_value", None)
    if original is None:
        raise RuntimeError(f"{bn_layer.name}: this tf_keras BatchNormalization has no _get_training_value; "
                           "BatchNorm freezing needs tf_keras 2.x")

    def _get_training_value(training=None):
        training = original(training)
        if isinstance(training, bool) and not training:
            return training
        return tf.logical_and(tf.cast(training, tf.bool), tf.logical_not(control.bn_frozen))

    object.__setattr__(bn_layer, "_get_training_value", _get_training_value)
