"""CSPNeXt backbone, architecture "P5" (RTMDet).

Stem of three 3x3 ConvBNAct (``3 -> c/2`` stride 2, ``c/2 -> c/2``, ``c/2 -> c``, ``c = int(64 * widen)``),
then four stages, each a 3x3 stride-2 ConvBNAct (``stage{i}.0``), an SPP block in the last stage
(``stage4.1``) and a CSPLayer (``stage{i}.1``, ``stage4.2``). Stages 2, 3 and 4 are C3, C4, C5
(strides 8, 16, 32). Layer names follow mmdetection's ``backbone.*`` state_dict keys.
"""

from __future__ import annotations

from typing import List, Tuple

from rtmdet_keras.models.layers import BuildContext, conv_bn_act, csp_layer, spp_bottleneck

# (in, out, blocks, add_identity, spp) before widen/deepen, as mmdetection's CSPNeXt.arch_settings["P5"].
ARCH_P5 = (
    (64, 128, 3, True, False),
    (128, 256, 6, True, False),
    (256, 512, 6, True, False),
    (512, 1024, 3, False, True),
)


def cspnext_stage_plan(widen_factor: float, deepen_factor: float) -> Tuple[int, List[Tuple[int, int, bool, bool]]]:
    """Stem channels and per stage ``(out_channels, num_blocks, add_identity, spp)`` after scaling.

    Channels are ``int(c * widen)`` (the stem's first conv ``int(64 * widen // 2)``), blocks
    ``max(round(n * deepen), 1)`` with Python's round, as mmdetection.
    """
    stem = int(64 * widen_factor // 2)
    stages = [(int(cout * widen_factor), max(round(n * deepen_factor), 1), add, spp)
              for _, cout, n, add, spp in ARCH_P5]
    return stem, stages


def cspnext_out_channels(widen_factor: float) -> List[int]:
    """C3, C4, C5 channels of a P5 CSPNeXt."""
    return [int(c * widen_factor) for c in (256, 512, 1024)]


def cspnext_backbone(ctx: BuildContext, x, model_cfg) -> list:
    """Add a CSPNeXt-P5 backbone to the graph; returns ``[C3, C4, C5]`` (strides 8, 16, 32).

    Args:
        x: normalised NHWC input.
        model_cfg: ``cfg.model`` (uses widen/deepen factors, expand_ratio, channel_attention,
            spp_kernel_sizes, pool_chain_kernel).
    """
    m = model_cfg
    stem, stages = cspnext_stage_plan(m.widen_factor, m.deepen_factor)
    x = conv_bn_act(ctx, x, stem, 3, 2, name="backbone.stem.0")
    x = conv_bn_act(ctx, x, stem, 3, 1, name="backbone.stem.1")
    x = conv_bn_act(ctx, x, int(64 * m.widen_factor), 3, 1, name="backbone.stem.2")
    outs = []
    for i, (cout, blocks, add_identity, spp) in enumerate(stages, start=1):
        prefix = f"backbone.stage{i}"
        x = conv_bn_act(ctx, x, cout, 3, 2, name=f"{prefix}.0")
        j = 1
        if spp:
            x = spp_bottleneck(ctx, x, cout, m.spp_kernel_sizes, m.pool_chain_kernel, name=f"{prefix}.1")
            j = 2
        x = csp_layer(ctx, x, cout, blocks, add_identity, name=f"{prefix}.{j}", expand_ratio=m.expand_ratio,
                      use_channel_attention=m.channel_attention)
        if i >= 2:
            outs.append(x)
    return outs
