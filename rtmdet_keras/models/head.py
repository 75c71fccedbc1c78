"""RTMDetSepBNHead: per-level classification and box towers, mmdetection's ``bbox_head.*`` names.

For each level ``l`` (P3, P4, P5): ``stacked_convs`` 3x3 ConvBNAct in a cls tower
(``bbox_head.cls_convs.{l}.{i}``) and a reg tower (``bbox_head.reg_convs.{l}.{i}``), then a 1x1 conv
with bias: ``bbox_head.rtm_cls.{l}`` (``num_classes`` logits) and ``bbox_head.rtm_reg.{l}`` (4 box
distances, ltrb).

``share_conv=True`` (mmdetection): one conv kernel per tower position, named after level 0
(``bbox_head.cls_convs.0.{i}.conv``), called on every level; each level keeps its own BatchNorm
(``bbox_head.cls_convs.{l}.{i}.bn``). The tf_keras twin un-shares them (tfmot cannot fold a BN into
a conv used by several inputs): it has ``bbox_head.cls_convs.{l}.{i}.conv`` for every level.

Init as mmdetection: conv weights normal(0, 0.01), BN gamma 1, cls bias ``-log((1 - p) / p)``
with ``p = cfg.model.prior_prob``, reg bias 0 (``cfg.model.reg_prior`` strides, or its log with
``exp_on_reg``, when set: every prior then starts as a box rather than a point).

Outputs are raw: ``reg`` is in stride units; ``d = reg * stride`` (``exp(reg) * stride`` when
``cfg.model.exp_on_reg``). Decoding happens outside the model (:mod:`rtmdet_keras.boxes`).
"""

from __future__ import annotations

import math
from typing import Dict

from rtmdet_keras.levels import level_name
from rtmdet_keras.models.layers import BuildContext, conv_bn_act, make_conv


def rtmdet_sep_bn_head(ctx: BuildContext, feats, model_cfg, num_classes: int, share_conv: bool) -> Dict[str, object]:
    """Add the head to the graph.

    Args:
        feats: ``[P3, P4, P5]`` from the neck (``feat_channels`` is ``cfg.model.feat_channels``).
        num_classes: logits per location.
        share_conv: share the tower conv kernels across levels (each level its own BN).

    Returns:
        ``{"cls_p3": [B, H/8, W/8, num_classes], "reg_p3": [B, H/8, W/8, 4], ...}`` keyed by the
        levels of ``cfg.model.strides``.
    """
    m = model_cfg
    if len(feats) != len(m.strides):
        raise ValueError(f"model.strides has {len(m.strides)} entries but the neck gives {len(feats)} levels")
    bias_cls = -math.log((1.0 - m.prior_prob) / m.prior_prob)
    reg_prior = float(m.reg_prior)
    if reg_prior < 0:
        raise ValueError(f"model.reg_prior must be 0 (mmdetection's init) or a positive number of strides, "
                         f"got {reg_prior}")
    bias_reg = (math.log(reg_prior) if m.exp_on_reg else reg_prior) if reg_prior else 0.0
    shared = {}
    outputs = {}
    for lvl, (x, stride) in enumerate(zip(feats, m.strides)):
        towers = {}
        for branch in ("cls", "reg"):
            y = x
            for i in range(m.stacked_convs):
                conv = None
                if share_conv:
                    key = (branch, i)
                    if key not in shared:
                        shared[key] = make_conv(ctx, m.feat_channels, 3, name=f"bbox_head.{branch}_convs.0.{i}.conv",
                                                kernel_initializer=ctx.normal_init(0.01))
                    conv = shared[key]
                y = conv_bn_act(ctx, y, m.feat_channels, 3, name=f"bbox_head.{branch}_convs.{lvl}.{i}", conv=conv,
                                kernel_initializer=ctx.normal_init(0.01))
            towers[branch] = y
        cls = ctx.layers.Conv2D(num_classes, 1, use_bias=True, name=f"bbox_head.rtm_cls.{lvl}",
                                kernel_initializer=ctx.normal_init(0.01),
                                bias_initializer=ctx.initializers.Constant(bias_cls))(towers["cls"])
        reg = ctx.layers.Conv2D(4, 1, use_bias=True, name=f"bbox_head.rtm_reg.{lvl}",
                                kernel_initializer=ctx.normal_init(0.01),
                                bias_initializer=ctx.initializers.Constant(bias_reg))(towers["reg"])
        level = level_name(stride)
        outputs[f"cls_{level}"] = cls
        outputs[f"reg_{level}"] = reg
    return outputs
