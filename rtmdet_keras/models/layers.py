"""Building blocks of RTMDet: ConvBNAct, CSPNeXtBlock, CSPLayer, SPP, channel attention.

Every block is a small function that adds stock Keras layers to a functional graph and names them
after mmdetection's ``state_dict`` keys (``backbone.stage1.1.main_conv`` -> layers
``backbone.stage1.1.main_conv.conv`` / ``.bn`` / ``.act``): checkpoint conversion, the tf_keras twin
used for QAT and :func:`rtmdet_keras.models.twin.transfer_weights` all key on these names.

The functions take a :class:`BuildContext` first. It carries the layer namespace of the framework
being built (Keras 3's ``keras.layers`` or tf_keras' for the QAT twin), the three custom layers of
that framework and the settings every block shares (activation, BatchNorm eps/momentum), so one
builder code makes both models.

Padding follows PyTorch: a k x k conv pads k//2 on every side. Stride-1 convs use ``"same"``,
which pads symmetrically for odd k; stride-2 convs use an explicit symmetric ``ZeroPadding2D`` and a
``"valid"`` conv, because ``"same"`` would pad only bottom/right on even sizes and shift the
sampling grid by one pixel (a TFLite ``PAD`` op either way).

Tensors are NHWC float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Optional, Sequence

import keras
import tensorflow as tf
from keras import ops

PACKAGE = "rtmdet_keras"
ACTIVATIONS = ("relu", "relu6", "silu")


# --------------------------------------------------------------------------------------------
# Custom layers (Keras 3). Their tf_keras flavours live in twin.py and compute the same thing.
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class InputNormalization(keras.layers.Layer):
    """Raw image to network input: reorder channels, then ``(x - mean) / std`` per channel.

    Input ``[B, H, W, 3]`` RGB in 0-255. ``channel_order="bgr"`` reverses the channels first;
    ``mean`` and ``std`` are given in the order *after* reordering (as in the config). Computed as
    ``x * (1/std) + (-mean/std)``: one MUL and one ADD in TFLite (and a GATHER for "bgr", which the
    export folds into the first convolution: :mod:`rtmdet_keras.models.channel_fold`).
    """

    def __init__(self, channel_order="rgb", mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), **kwargs):
        super().__init__(**kwargs)
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.channel_order = channel_order
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]

    def call(self, x):
        x = ops.cast(x, "float32")
        if self.channel_order == "bgr":
            x = ops.take(x, [2, 1, 0], axis=-1)
        scale = [1.0 / s for s in self.std]
        offset = [-m / s for m, s in zip(self.mean, self.std)]
        return x * ops.convert_to_tensor(scale, "float32") + ops.convert_to_tensor(offset, "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "channel_order": self.channel_order, "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package=PACKAGE)
class NearestUpsample(keras.layers.Layer):
    """Nearest-neighbour upsampling by an integer factor: one ``RESIZE_NEAREST_NEIGHBOR`` op in TFLite.

    Output pixel ``i`` takes input pixel ``i // scale`` (as PyTorch's ``nn.Upsample(mode="nearest")``).
    Neither ``UpSampling2D`` (exports as SHAPE/TILE/RESHAPE...) nor ``keras.layers.Resizing`` (passes
    ``training=True`` on to later layers) is used (see the platform notes).
    """

    def __init__(self, scale=2, **kwargs):
        super().__init__(**kwargs)
        self.scale = int(scale)

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            shape = ops.shape(x)
            h, w = shape[1], shape[2]
        return ops.image.resize(x, (h * self.scale, w * self.scale), interpolation="nearest")

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * self.scale, None if w is None else w * self.scale, c)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package=PACKAGE)
class HardSigmoid(keras.layers.Layer):
    """PyTorch's ``nn.Hardsigmoid``: ``relu6(x + 3) / 6`` (tf_keras' ``hard_sigmoid`` is ``0.2x + 0.5``)."""

    def call(self, x):
        return ops.relu6(x + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):  # no settings of its own
        return super().get_config()


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' ``BatchNormalization`` that trains with TensorFlow's fused kernel (``FusedBatchNormV3``).

    Why: Keras 3 normalises in training mode with ``moments`` and ``batch_normalization``, about 60 graph
    ops a layer forward and backward where the fused kernel needs a few. For nano's 70 BatchNorms that was
    half the training step's graph, 40 % of its first call and a quarter of every step on 2 CPU cores
    (docs/benchmarks.md, "Training"). Inference (and so export) is Keras' own code, unchanged.

    Training mode normalises with the batch's mean and (biased) variance, as Keras does; the moving
    variance is updated with the unbiased batch variance, as PyTorch (and so mmdetection) and tf_keras'
    fused BatchNorm do, where Keras 3 uses the biased one. Masks, non-NHWC input, renorm, synchronised
    or half-precision statistics fall back to Keras' code.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and len(inputs.shape) == 4
                and self.axis in (-1, 3) and not self.renorm and not self.synchronized
                and self.scale and self.center and keras.backend.standardize_dtype(inputs.dtype) == "float32")

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        outputs, moving_mean, moving_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=self.gamma.value, offset=self.beta.value, mean=self.moving_mean.value,
            variance=self.moving_variance.value, epsilon=self.epsilon,
            exponential_avg_factor=1.0 - self.momentum, data_format="NHWC", is_training=True)
        # With exponential_avg_factor < 1 the kernel returns the updated moving statistics.
        self.moving_mean.assign(moving_mean)
        self.moving_variance.assign(moving_variance)
        return outputs


KERAS3_CUSTOM_LAYERS = SimpleNamespace(
    InputNormalization=InputNormalization, NearestUpsample=NearestUpsample, HardSigmoid=HardSigmoid,
    BatchNormalization=FusedBatchNormalization,
)


# --------------------------------------------------------------------------------------------
# Build context
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildContext:
    """What the block functions need besides tensors.

    Attributes:
        framework: ``"keras"`` (Keras 3) or ``"tf_keras"`` (Keras 2, for tfmot QAT).
        module: that framework's top-level module (``keras`` or ``tf_keras``); ``ctx.layers``,
            ``ctx.initializers`` and ``ctx.Model`` come from it.
        custom: its ``InputNormalization``, ``NearestUpsample`` and ``HardSigmoid`` classes (and Keras 3's
            ``FusedBatchNormalization``, see :attr:`batch_norm`).
        act: ``"relu"``, ``"relu6"`` or ``"silu"``.
        bn_eps, bn_momentum: BatchNorm settings in Keras terms (PyTorch momentum 0.1 is 0.9 here).
    """

    framework: str
    module: Any
    custom: Any
    act: str = "silu"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9

    @property
    def layers(self):
        return self.module.layers

    @property
    def batch_norm(self):
        """The BatchNormalization class: Keras 3's fused-training one, else the framework's own (tf_keras'
        trains fused already)."""
        return getattr(self.custom, "BatchNormalization", self.layers.BatchNormalization)

    @property
    def initializers(self):
        return self.module.initializers

    @property
    def Model(self):  # noqa: N802 (a class)
        return self.module.Model

    # PyTorch's default conv init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)) = VarianceScaling(1/3).
    def torch_default_init(self, depthwise_channels: Optional[int] = None):
        # Keras counts a depthwise kernel (k, k, c, 1) as fan_in = k*k*c; PyTorch's is k*k. Scale
        # by c to get PyTorch's bound.
        scale = (depthwise_channels or 1) / 3.0
        return self.initializers.VarianceScaling(scale=scale, mode="fan_in", distribution="uniform")

    def normal_init(self, std: float = 0.01):
        return self.initializers.RandomNormal(mean=0.0, stddev=std)


def keras3_context(act: str = "silu", bn_eps: float = 1e-5, bn_momentum: float = 0.9) -> BuildContext:
    """A :class:`BuildContext` that builds Keras 3 layers."""
    return BuildContext("keras", keras, KERAS3_CUSTOM_LAYERS, act, bn_eps, bn_momentum)


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


def activation(ctx: BuildContext, x, name: str, act: Optional[str] = None):
    """ReLU, ReLU6 or SiLU as a stock layer named ``name``."""
    act = act or ctx.act
    if act == "relu":
        return ctx.layers.ReLU(name=name)(x)
    if act == "relu6":
        return ctx.layers.ReLU(max_value=6.0, name=name)(x)
    if act == "silu":
        # tf_keras resolves "silu" to its swish, the same function x * sigmoid(x).
        return ctx.layers.Activation("silu", name=name)(x)
    raise ValueError(f"unknown activation {act!r}; model.act must be one of {', '.join(ACTIVATIONS)}")


def make_conv(ctx: BuildContext, filters: int, kernel: int, stride: int = 1, groups: int = 1,
              use_bias: bool = False, name: str = "conv", kernel_initializer=None, bias_initializer="zeros"):
    """A Conv2D (or DepthwiseConv2D when ``groups == filters``) layer, not yet called.

    ``padding`` is ``"same"`` for stride 1 (symmetric for odd kernels) and ``"valid"`` for stride 2,
    where the caller pads explicitly (:func:`conv_bn_act` does).
    """
    if kernel % 2 != 1:
        raise ValueError(f"{name}: kernel {kernel} must be odd for PyTorch-style k//2 padding")
    padding = "same" if stride == 1 else "valid"
    if groups == 1:
        return ctx.layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, use_bias=use_bias, name=name,
            kernel_initializer=kernel_initializer or ctx.torch_default_init(), bias_initializer=bias_initializer)
    if groups != filters:
        raise ValueError(f"{name}: only plain (groups=1) and depthwise (groups=filters) convs are supported")
    return ctx.layers.DepthwiseConv2D(
        kernel, strides=stride, padding=padding, use_bias=use_bias, name=name,
        depthwise_initializer=kernel_initializer or ctx.torch_default_init(depthwise_channels=filters),
        bias_initializer=bias_initializer)


def conv_bn_act(ctx: BuildContext, x, filters: int, kernel: int = 1, stride: int = 1, *, name: str,
                groups: int = 1, act: Any = True, conv=None, kernel_initializer=None):
    """mmcv's ``ConvModule``: conv (no bias) + BatchNorm + activation.

    Layers: ``{name}.pad`` (stride 2 only: symmetric zero pad of k//2), ``{name}.conv``, ``{name}.bn``,
    ``{name}.act``.

    Args:
        x: NHWC tensor.
        filters: output channels (for a depthwise conv, equal to the input channels).
        kernel, stride: square kernel size (odd) and stride (1 or 2).
        groups: 1, or ``filters`` for a depthwise conv.
        act: True for the context's activation, False for none, or an activation name.
        conv: an existing conv layer to call instead of making one (convs shared across head levels;
            its own name is kept, the BatchNorm is this call's own).
    """
    if stride not in (1, 2):
        raise ValueError(f"{name}: stride must be 1 or 2, got {stride}")
    if stride == 2 and kernel > 1:
        x = ctx.layers.ZeroPadding2D(padding=kernel // 2, name=f"{name}.pad")(x)
    if conv is None:
        conv = make_conv(ctx, filters, kernel, stride, groups, name=f"{name}.conv",
                         kernel_initializer=kernel_initializer)
    x = conv(x)
    x = ctx.batch_norm(epsilon=ctx.bn_eps, momentum=ctx.bn_momentum, name=f"{name}.bn")(x)
    if act:
        x = activation(ctx, x, f"{name}.act", act if isinstance(act, str) else None)
    return x


def depthwise_separable(ctx: BuildContext, x, filters: int, kernel: int, *, name: str):
    """mmcv's ``DepthwiseSeparableConvModule``: k x k depthwise ConvBNAct then 1x1 ConvBNAct."""
    channels = x.shape[-1]
    x = conv_bn_act(ctx, x, channels, kernel, groups=channels, name=f"{name}.depthwise_conv")
    return conv_bn_act(ctx, x, filters, 1, name=f"{name}.pointwise_conv")


def cspnext_block(ctx: BuildContext, x, channels: int, add_identity: bool, *, name: str, dw_kernel: int = 5):
    """CSPNeXtBlock: 3x3 ConvBNAct, then a 5x5 depthwise-separable unit; plus the input when
    ``add_identity``. Layers ``{name}.conv1.*``, ``{name}.conv2.{depthwise,pointwise}_conv.*``."""
    y = conv_bn_act(ctx, x, channels, 3, name=f"{name}.conv1")
    y = depthwise_separable(ctx, y, channels, dw_kernel, name=f"{name}.conv2")
    if add_identity:
        y = ctx.layers.Add(name=f"{name}.add")([y, x])
    return y


def channel_attention(ctx: BuildContext, x, *, name: str):
    """Global average pool -> 1x1 conv with bias -> hard sigmoid ``relu6(x+3)/6`` -> scale the input.
    Layers ``{name}.pool``, ``{name}.fc``, ``{name}.act``, ``{name}.mul``."""
    channels = x.shape[-1]
    w = ctx.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.pool")(x)
    # mmcv's kaiming_init on the fc: PyTorch-default weight bound, bias 0.
    w = ctx.layers.Conv2D(channels, 1, use_bias=True, name=f"{name}.fc",
                          kernel_initializer=ctx.torch_default_init())(w)
    w = ctx.custom.HardSigmoid(name=f"{name}.act")(w)
    return ctx.layers.Multiply(name=f"{name}.mul")([x, w])


def csp_layer(ctx: BuildContext, x, out_channels: int, num_blocks: int, add_identity: bool, *,
              name: str, expand_ratio: float = 0.5, use_channel_attention: bool = False):
    """CSPLayer with CSPNeXt blocks.

    ``mid = int(out * expand_ratio)``; main path 1x1 ``main_conv`` then ``num_blocks`` blocks
    (``blocks.{i}``); short path 1x1 ``short_conv``; concatenate (main first); optional
    ``attention``; 1x1 ``final_conv`` to ``out_channels``. ``num_blocks`` may be 0 (SSCMA nano neck).
    """
    mid = int(out_channels * expand_ratio)
    main = conv_bn_act(ctx, x, mid, 1, name=f"{name}.main_conv")
    for i in range(num_blocks):
        main = cspnext_block(ctx, main, mid, add_identity, name=f"{name}.blocks.{i}")
    short = conv_bn_act(ctx, x, mid, 1, name=f"{name}.short_conv")
    y = ctx.layers.Concatenate(axis=-1, name=f"{name}.concat")([main, short])
    if use_channel_attention:
        y = channel_attention(ctx, y, name=f"{name}.attention")
    return conv_bn_act(ctx, y, out_channels, 1, name=f"{name}.final_conv")


def spp_pool_chain(kernel_sizes: Sequence[int], chain_kernel: int) -> list:
    """How many stride-1 ``chain_kernel`` max pools in a chain give each SPP kernel size.

    Max pooling composes: two k x k stride-1 pools equal one (2k-1) x (2k-1) pool, so a pool of size
    K is ``(K - 1) / (chain_kernel - 1)`` chained pools. ``[5, 9, 13]`` with 5 -> ``[1, 2, 3]``,
    with 3 -> ``[2, 4, 6]``.
    """
    if chain_kernel < 3 or chain_kernel % 2 != 1:
        raise ValueError(f"model.pool_chain_kernel must be an odd number >= 3, got {chain_kernel}")
    counts = []
    for k in kernel_sizes:
        if k % 2 != 1 or (k - 1) % (chain_kernel - 1):
            raise ValueError(
                f"model.spp_kernel_sizes: pool size {k} is not a chain of {chain_kernel}x{chain_kernel} pools "
                f"(needs (k - 1) divisible by {chain_kernel - 1}); change model.pool_chain_kernel or the sizes")
        counts.append((k - 1) // (chain_kernel - 1))
    if counts != sorted(counts) or len(set(counts)) != len(counts):
        raise ValueError(f"model.spp_kernel_sizes must be increasing, got {list(kernel_sizes)}")
    return counts


def spp_bottleneck(ctx: BuildContext, x, out_channels: int, kernel_sizes: Sequence[int] = (5, 9, 13),
                   chain_kernel: int = 5, *, name: str):
    """SPP as in mmdetection's ``SPPBottleneck``, with the parallel pools realised as one chain.

    1x1 ``conv1`` to half the input channels; max pools of ``kernel_sizes`` (stride 1, padding
    k//2 with -inf, which is what ``"same"`` does for odd k); concatenate the input and the pooled
    maps; 1x1 ``conv2`` to ``out_channels``. Pool layers are ``{name}.pool.{j}`` along the chain.
    """
    counts = spp_pool_chain(kernel_sizes, chain_kernel)
    x = conv_bn_act(ctx, x, x.shape[-1] // 2, 1, name=f"{name}.conv1")
    pooled, y, done = [x], x, 0
    for count in counts:
        while done < count:
            y = ctx.layers.MaxPooling2D(chain_kernel, strides=1, padding="same", name=f"{name}.pool.{done}")(y)
            done += 1
        pooled.append(y)
    y = ctx.layers.Concatenate(axis=-1, name=f"{name}.concat")(pooled)
    return conv_bn_act(ctx, y, out_channels, 1, name=f"{name}.conv2")


def upsample(ctx: BuildContext, x, *, name: str, scale: int = 2):
    """Nearest x2 upsampling (a single RESIZE_NEAREST_NEIGHBOR in TFLite)."""
    return ctx.custom.NearestUpsample(scale=scale, name=name)(x)
