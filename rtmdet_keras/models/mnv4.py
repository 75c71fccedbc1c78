"""MobileNetV4-Conv-Small backbone (Qin et al. 2024, arXiv 2404.10518), written natively.

The block list is the published MNv4-Conv-S one (paper table; TensorFlow Model Garden's
``MNV4ConvSmall_BLOCK_SPECS``), up to the 1x1 conv to 960 channels; the classifier part (global
pool, 1x1 conv to 1280, fully connected) is dropped. Features for the neck:

=========  ========  ==========
 tensor     stride    channels
=========  ========  ==========
 layer2        8          64
 layer3       16          96
 layer5       32         960
=========  ========  ==========

Universal Inverted Bottleneck (UIB): optional k x k depthwise ``start_dw`` (BN, no activation),
1x1 ``expand_conv`` to ``make_divisible(in * ratio, 8)`` (BN + act), optional depthwise
``middle_dw`` (BN + act; it takes the stride when present), 1x1 ``proj_conv`` (BN, no activation),
plus the input when stride 1 and in == out channels.

Differences from the published network, on purpose: the activation is ``cfg.model.act`` (the
paper uses ReLU; ``model.act=relu`` restores it), BatchNorm uses ``cfg.model.bn_eps/bn_momentum``
and strided convs pad PyTorch-style (k//2 each side) like the rest of this package. No pretrained
weights are loaded.
"""

from __future__ import annotations

from rtmdet_keras.models.layers import BuildContext, conv_bn_act

# ("conv", out, kernel, stride) or ("uib", out, start_dw_kernel, middle_dw_kernel, stride, expand_ratio);
# kernel 0 = that depthwise conv is absent.
MNV4_CONV_SMALL = (
    ("conv0", (("conv", 32, 3, 2),)),
    ("layer1", (("conv", 32, 3, 2), ("conv", 32, 1, 1))),
    ("layer2", (("conv", 96, 3, 2), ("conv", 64, 1, 1))),
    ("layer3", (
        ("uib", 96, 5, 5, 2, 3.0),
        ("uib", 96, 0, 3, 1, 2.0),
        ("uib", 96, 0, 3, 1, 2.0),
        ("uib", 96, 0, 3, 1, 2.0),
        ("uib", 96, 0, 3, 1, 2.0),
        ("uib", 96, 3, 0, 1, 4.0),
    )),
    ("layer4", (
        ("uib", 128, 3, 3, 2, 6.0),
        ("uib", 128, 5, 5, 1, 4.0),
        ("uib", 128, 0, 5, 1, 4.0),
        ("uib", 128, 0, 5, 1, 3.0),
        ("uib", 128, 0, 3, 1, 4.0),
        ("uib", 128, 0, 3, 1, 4.0),
    )),
    ("layer5", (("conv", 960, 1, 1),)),
)
MNV4_FEATURE_LAYERS = ("layer2", "layer3", "layer5")
MNV4_OUT_CHANNELS = [64, 96, 960]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor``, never more than 10 % below ``value`` (MobileNet rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def universal_inverted_bottleneck(ctx: BuildContext, x, out_channels: int, start_dw: int, middle_dw: int,
                                  stride: int, expand_ratio: float, *, name: str):
    """One UIB block (see the module docstring); layers ``{name}.start_dw`` ... ``{name}.proj_conv``."""
    cin = x.shape[-1]
    shortcut = x
    if start_dw:
        x = conv_bn_act(ctx, x, cin, start_dw, 1 if middle_dw else stride, groups=cin, act=False,
                        name=f"{name}.start_dw")
    mid = make_divisible(cin * expand_ratio, 8)
    x = conv_bn_act(ctx, x, mid, 1, name=f"{name}.expand_conv")
    if middle_dw:
        x = conv_bn_act(ctx, x, mid, middle_dw, stride, groups=mid, name=f"{name}.middle_dw")
    x = conv_bn_act(ctx, x, out_channels, 1, act=False, name=f"{name}.proj_conv")
    if stride == 1 and cin == out_channels:
        x = ctx.layers.Add(name=f"{name}.add")([x, shortcut])
    return x


def mnv4_conv_small_backbone(ctx: BuildContext, x, model_cfg=None) -> list:
    """Add MobileNetV4-Conv-Small to the graph; returns ``[C3, C4, C5]`` with 64, 96, 960 channels
    at strides 8, 16, 32. Layer names ``backbone.{stage}.{i}.*``."""
    feats = []
    for stage, blocks in MNV4_CONV_SMALL:
        for i, spec in enumerate(blocks):
            name = f"backbone.{stage}.{i}"
            if spec[0] == "conv":
                _, cout, k, s = spec
                x = conv_bn_act(ctx, x, cout, k, s, name=name)
            else:
                _, cout, k_start, k_mid, s, ratio = spec
                x = universal_inverted_bottleneck(ctx, x, cout, k_start, k_mid, s, ratio, name=name)
        if stage in MNV4_FEATURE_LAYERS:
            feats.append(x)
    return feats
