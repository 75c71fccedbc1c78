"""The RTMDet network: input normalisation, backbone, CSPNeXtPAFPN, RTMDetSepBNHead.

:func:`build_model` makes a functional model from ``cfg`` (every architecture number is in
``cfg.model``), in Keras 3 or, for QAT with tfmot, in tf_keras from the same builder code.

Input contract: ``[B, H, W, 3]`` float32 raw RGB in 0-255 at ``cfg.imgsz`` (H, W); the model
reorders channels and normalises inside (``cfg.model.channel_order``, ``mean``, ``std``).

Output contract: a dict with, per stride ``s`` in ``cfg.model.strides`` (level ``pN``, ``s = 2**N``):
``cls_pN`` class logits ``[B, H/s, W/s, num_classes]`` (sigmoid outside) and ``reg_pN`` box
distances ``[B, H/s, W/s, 4]`` (left, top, right, bottom) in stride units: a prior at grid point
``(x*s, y*s)`` predicts the box ``(px - l*s, py - t*s, px + r*s, py + b*s)``, with ``exp`` applied to
the distances first when ``cfg.model.exp_on_reg``. The model does not decode; decode code reads
``strides`` and ``exp_on_reg`` from the config (:func:`model_metadata` gathers them).

Layer names are mmdetection's ``state_dict`` keys without the parameter suffix, so a checkpoint maps
by name: Keras ``X.conv`` (Conv2D kernel ``[kh, kw, in, out]``, DepthwiseConv2D ``[kh, kw, c, 1]``)
is PyTorch ``X.conv.weight`` (``[out, in, kh, kw]`` / ``[c, 1, kh, kw]``); Keras ``X.bn`` weights
(gamma, beta, moving mean, moving variance) are ``X.bn.{weight, bias, running_mean, running_var}``;
``*.attention.fc``, ``bbox_head.rtm_cls.{l}`` and ``bbox_head.rtm_reg.{l}`` are ``.weight``/``.bias``
1x1 convs. A shared head conv exists once, as ``bbox_head.{cls,reg}_convs.0.{i}.conv``
(mmdetection's state_dict repeats the same tensor under levels 1 and 2). The MobileNetV4 backbone
(``backbone.layer{n}.{i}.*``) has no mmdetection counterpart.
"""

from __future__ import annotations

from typing import Optional

from rtmdet_keras.models.cspnext import cspnext_backbone
from rtmdet_keras.levels import level_name
from rtmdet_keras.models.head import rtmdet_sep_bn_head
from rtmdet_keras.models.layers import ACTIVATIONS, BuildContext, keras3_context
from rtmdet_keras.models.mnv4 import mnv4_conv_small_backbone
from rtmdet_keras.models.pafpn import cspnext_pafpn
from rtmdet_keras.models.twin import tf_keras_context, transfer_weights

BACKBONES = {"cspnext": cspnext_backbone, "mnv4": mnv4_conv_small_backbone}
FRAMEWORKS = ("keras", "tf_keras")
PARTS = ("backbone", "neck", "bbox_head")  # layer-name prefixes of the three parts


def make_context(framework: str, model_cfg) -> BuildContext:
    """The :class:`BuildContext` for ``framework`` (``"keras"`` or ``"tf_keras"``)."""
    m = model_cfg
    if m.act not in ACTIVATIONS:
        raise ValueError(f"model.act must be one of {', '.join(ACTIVATIONS)}, got {m.act!r}")
    if framework == "keras":
        return keras3_context(m.act, m.bn_eps, m.bn_momentum)
    if framework == "tf_keras":
        return tf_keras_context(m.act, m.bn_eps, m.bn_momentum)
    raise ValueError(f"framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")


def output_names(cfg) -> list:
    """``["cls_p3", "reg_p3", "cls_p4", ...]`` in level order."""
    return [f"{kind}_{level_name(s)}" for s in cfg.model.strides for kind in ("cls", "reg")]


def model_metadata(cfg) -> dict:
    """What a consumer of the raw outputs needs, all read from ``cfg`` (the single source)."""
    m = cfg.model
    return {
        "input": {"shape": [None, int(cfg.imgsz[0]), int(cfg.imgsz[1]), 3], "dtype": "float32",
                  "range": [0, 255], "channel_order_given": "rgb", "channel_order_used": m.channel_order,
                  "mean": list(m.mean), "std": list(m.std)},
        "outputs": output_names(cfg),
        "strides": list(m.strides),
        "exp_on_reg": bool(m.exp_on_reg),
        "num_classes": int(cfg.num_classes),
        "class_names": list(cfg.class_names) if cfg.class_names else None,
        "box_format": "ltrb distances in stride units from grid points (x*stride, y*stride)",
    }


def build_model(cfg, framework: str = "keras", share_head_convs: Optional[bool] = None, name: Optional[str] = None):
    """Build the RTMDet network described by ``cfg``.

    Args:
        cfg: a :class:`rtmdet_keras.config.Config` (uses ``imgsz``, ``num_classes``, ``model.*``).
        framework: ``"keras"`` for a Keras 3 model, ``"tf_keras"`` for the tf_keras (Keras 2) twin
            used by tfmot QAT. Same layers and layer names.
        share_head_convs: share head tower convs across levels; default ``cfg.model.share_conv`` in
            Keras 3 and False in tf_keras (tfmot folds BN only into a conv with a single input).
        name: model name; default ``rtmdet_{cfg.preset}``.

    Returns:
        A functional model: ``[B, H, W, 3]`` float32 RGB 0-255 -> ``{"cls_p3", "reg_p3", ...}``
        (see the module docstring for shapes and units).
    """
    m = cfg.model
    if m.backbone not in BACKBONES:
        raise ValueError(f"model.backbone must be one of {', '.join(BACKBONES)}, got {m.backbone!r}")
    ctx = make_context(framework, m)
    if share_head_convs is None:
        share_head_convs = bool(m.share_conv) and framework == "keras"
    h, w = int(cfg.imgsz[0]), int(cfg.imgsz[1])
    image = ctx.layers.Input(shape=(h, w, 3), dtype="float32", name="image")
    x = ctx.custom.InputNormalization(m.channel_order, m.mean, m.std, name="normalize")(image)
    feats = BACKBONES[m.backbone](ctx, x, m)
    feats = cspnext_pafpn(ctx, feats, m)
    outputs = rtmdet_sep_bn_head(ctx, feats, m, int(cfg.num_classes), share_head_convs)
    if framework == "keras":
        # Identity layers named after the keys make Keras 3's output_names (and exported
        # signatures) read cls_p3, reg_p3, ... instead of the head conv names. The twin skips them:
        # tfmot has no quantize config for Identity, and its dict keys are the same anyway.
        outputs = {k: ctx.layers.Identity(name=k)(v) for k, v in outputs.items()}
    return ctx.Model(image, outputs, name=name or f"rtmdet_{cfg.preset}")


def build_twin(cfg, src_model=None, name: Optional[str] = None):
    """The tf_keras twin of ``build_model(cfg)``, head convs un-shared; with ``src_model`` (a Keras 3
    model of the same cfg) its weights are copied in by :func:`rtmdet_keras.models.twin.transfer_weights`."""
    twin = build_model(cfg, framework="tf_keras", share_head_convs=False, name=name)
    if src_model is not None:
        transfer_weights(src_model, twin)
    return twin
