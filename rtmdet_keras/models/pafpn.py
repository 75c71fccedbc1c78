"""CSPNeXtPAFPN neck (RTMDet), with mmdetection's module names (``neck.reduce_layers.*`` ...).

Inputs C3, C4, C5 with ``in_channels = cfg.model.neck_in_channels``; outputs P3, P4, P5 with
``cfg.model.neck_out_channels`` each.

Top-down:  ``C5' = reduce_layers.0(C5)`` (1x1 to C4 channels); ``T4 = top_down_blocks.0(cat(up(C5'), C4))``;
           ``T4' = reduce_layers.1(T4)`` (1x1 to C3 channels); ``N3 = top_down_blocks.1(cat(up(T4'), C3))``.
Bottom-up: ``N4 = bottom_up_blocks.0(cat(downsamples.0(N3), T4'))``;
           ``N5 = bottom_up_blocks.1(cat(downsamples.1(N4), C5'))``.
Out convs: 3x3 ``out_convs.{i}`` on N3, N4, N5.
The CSPLayers have ``cfg.model.neck_csp_blocks`` blocks, no identity add, no channel attention.
"""

from __future__ import annotations

from rtmdet_keras.models.layers import BuildContext, conv_bn_act, csp_layer, upsample


def cspnext_pafpn(ctx: BuildContext, feats, model_cfg) -> list:
    """Add the neck to the graph; ``feats`` = ``[C3, C4, C5]`` -> ``[P3, P4, P5]``."""
    m = model_cfg
    c3, c4, c5 = feats
    ch = list(m.neck_in_channels)
    got = [int(f.shape[-1]) for f in feats]
    if got != ch:
        raise ValueError(
            f"model.neck_in_channels is {ch} but the backbone gives {got} channels (C3, C4, C5); "
            f"set --cfg-options model.neck_in_channels='[{got[0]},{got[1]},{got[2]}]'")
    n = m.neck_csp_blocks

    def block(x, cout, name):
        return csp_layer(ctx, x, cout, n, False, name=name, expand_ratio=m.expand_ratio)

    def cat(tensors, name):
        return ctx.layers.Concatenate(axis=-1, name=name)(tensors)

    c5r = conv_bn_act(ctx, c5, ch[1], 1, name="neck.reduce_layers.0")
    t4 = block(cat([upsample(ctx, c5r, name="neck.upsample.0"), c4], "neck.top_down_blocks.0.input"),
               ch[1], "neck.top_down_blocks.0")
    t4r = conv_bn_act(ctx, t4, ch[0], 1, name="neck.reduce_layers.1")
    n3 = block(cat([upsample(ctx, t4r, name="neck.upsample.1"), c3], "neck.top_down_blocks.1.input"),
               ch[0], "neck.top_down_blocks.1")
    d3 = conv_bn_act(ctx, n3, ch[0], 3, 2, name="neck.downsamples.0")
    n4 = block(cat([d3, t4r], "neck.bottom_up_blocks.0.input"), ch[1], "neck.bottom_up_blocks.0")
    d4 = conv_bn_act(ctx, n4, ch[1], 3, 2, name="neck.downsamples.1")
    n5 = block(cat([d4, c5r], "neck.bottom_up_blocks.1.input"), ch[2], "neck.bottom_up_blocks.1")
    return [conv_bn_act(ctx, x, m.neck_out_channels, 3, name=f"neck.out_convs.{i}")
            for i, x in enumerate((n3, n4, n5))]
