"""Parameters, GFLOPs and output shapes of a built model, per part (``rtmdet models`` prints them).

Conventions (chosen to match mmdetection's published tables):

* **Parameters** are the trainable ones: conv kernels and biases, BatchNorm gamma and beta (not its
  running mean and variance), a conv shared across head levels once. This is what PyTorch's
  ``model.parameters()`` counts and it reproduces mmdetection's figures exactly (tiny 4,896,168).
* **GFLOPs** are multiply-accumulates (MACs) of conv and dense layers, in 1e9, counted from the
  built model's layer shapes: ``H_out * W_out * k_h * k_w * C_in / groups * C_out`` per call (a
  shared conv counts once per level). mmdetection's published "FLOPs" come from a counter that
  reports MACs, so these compare directly; multiply by 2 for floating-point operations.

  At 640x640 with 80 classes the conv MACs are tiny 8.036, s 14.761, m 39.066, l 79.899,
  x 141.190 G against the published 8.1, 14.8, 39.27, 80.23, 141.67: 0.3-0.8 % lower, because
  mmcv's counter also counts element-wise work. ``count_macs(model, "mmcv")`` adds those terms
  (conv bias and BatchNorm scale/shift per output element, activations, pooling, upsampling) and
  gives tiny 8.115, m 39.273, l 80.229, x 141.672: the published tiny, m, l and x to the digits
  given. It gives 14.871 for s, whose published 14.8 is closer to the conv-only 14.761; we found no
  single counting rule that gives all five, so the conv-only count stays the reported one.
"""

from __future__ import annotations

from typing import Dict

import keras
import numpy as np

PART_LABELS = {"backbone": "backbone", "neck": "neck", "bbox_head": "head"}


def _size(weights) -> int:
    return int(sum(int(np.prod(w.shape)) for w in weights))


def count_parameters(model) -> Dict[str, int]:
    """``{"backbone", "neck", "head", "total", "non_trainable"}`` trainable parameter counts by layer-name
    prefix (see the module docstring); ``non_trainable`` is the BatchNorm running statistics."""
    counts = {label: 0 for label in PART_LABELS.values()}
    other = 0
    for layer in model.layers:
        n = _size(layer.trainable_weights)
        prefix = layer.name.split(".")[0]
        if prefix in PART_LABELS:
            counts[PART_LABELS[prefix]] += n
        else:
            other += n
    counts["total"] = _size(model.trainable_weights)
    if other:
        counts["other"] = other
    counts["non_trainable"] = _size(model.non_trainable_weights)
    return counts


_MMCV_ELEMENTWISE = {  # per element of the call's input (in) or output (out), as mmcv's module hooks
    "BatchNormalization": ("out", 2),  # affine: scale and shift
    "ReLU": ("out", 1),
    "Activation": ("out", 1),
    "MaxPooling2D": ("in", 1),
    "GlobalAveragePooling2D": ("in", 1),
    "NearestUpsample": ("out", 1),
}


def _call_macs(layer, node, convention: str) -> int:
    # FusedBatchNormalization counts as the BatchNormalization it is.
    kind = "BatchNormalization" if isinstance(layer, keras.layers.BatchNormalization) else type(layer).__name__
    out_shape = tuple(node.output_tensors[0].shape)
    if any(d is None for d in out_shape[1:]):
        raise ValueError(f"{layer.name}: output shape {out_shape} is not static; build with a fixed imgsz")
    out_elements = int(np.prod(out_shape[1:]))
    if kind in ("Conv2D", "DepthwiseConv2D", "Dense"):
        # Kernel (kh, kw, cin, cout), depthwise (kh, kw, c, mult), dense (cin, cout): each kernel
        # entry is used once per output position.
        positions = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
        macs = positions * int(np.prod(layer.weights[0].shape))
        if convention == "mmcv" and getattr(layer, "use_bias", False):
            macs += out_elements
        return macs
    if convention == "mmcv" and kind in _MMCV_ELEMENTWISE:
        where, per = _MMCV_ELEMENTWISE[kind]
        if where == "in":
            return per * int(np.prod(tuple(node.input_tensors[0].shape)[1:]))
        return per * out_elements
    return 0


def count_macs(model, convention: str = "conv") -> Dict[str, int]:
    """Multiply-accumulates of one image through ``model``, by part and in total.

    Every call of a layer is counted with the sizes of that call (a head conv shared by three levels
    counts three times). Needs a model built with a static input size.

    Args:
        convention: ``"conv"``: conv and dense MACs only (the figure this package reports).
            ``"mmcv"``: also what mmcv's module-hook counter adds: conv bias 1 and BatchNorm 2 per
            output element, activations 1 per output element, max/average pooling 1 per input
            element, upsampling 1 per output element (element-wise adds and multiplies are not
            counted there either).
    """
    if convention not in ("conv", "mmcv"):
        raise ValueError(f"convention must be 'conv' or 'mmcv', got {convention!r}")
    macs = {label: 0 for label in PART_LABELS.values()}
    macs["total"] = 0
    for layer in model.layers:
        for node in layer._inbound_nodes:
            if not node.input_tensors:  # the input layer
                continue
            n = _call_macs(layer, node, convention)
            macs["total"] += n
            part = PART_LABELS.get(layer.name.split(".")[0])
            if part:
                macs[part] += n
    return macs


def output_shapes(model) -> Dict[str, tuple]:
    """``{"cls_p3": (None, 80, 80, 80), ...}``."""
    out = model.output
    if isinstance(out, dict):
        return {k: tuple(v.shape) for k, v in out.items()}
    return {t.name: tuple(t.shape) for t in (out if isinstance(out, (list, tuple)) else [out])}


def format_summary(model, cfg) -> str:
    """A table a person can read: parameters and GMACs per part, output shapes."""
    params = count_parameters(model)
    macs = count_macs(model)
    mmcv_total = count_macs(model, "mmcv")["total"]
    h, w = cfg.imgsz
    lines = [
        f"{model.name}  ({cfg.name}: backbone {cfg.model.backbone}, {cfg.num_classes} classes, input {h}x{w})",
        "",
        f"{'part':10s} {'parameters':>14s} {'GFLOPs':>9s}",
    ]
    for label in ("backbone", "neck", "head"):
        lines.append(f"{label:10s} {params[label]:>14,d} {macs[label] / 1e9:>9.3f}")
    if "other" in params:
        lines.append(f"{'other':10s} {params['other']:>14,d}")
    lines.append(f"{'total':10s} {params['total']:>14,d} {macs['total'] / 1e9:>9.3f}")
    lines += [
        "",
        f"parameters: trainable ({params['total'] / 1e6:.2f} M; BatchNorm running statistics add "
        f"{params['non_trainable']:,d} more).",
        f"GFLOPs: conv/dense multiply-accumulates in 1e9 at {h}x{w}, as mmdetection reports (x2 for "
        f"floating-point operations); {mmcv_total / 1e9:.3f} with mmcv's counter's element-wise terms.",
        "",
        "outputs:",
    ]
    for k, shape in output_shapes(model).items():
        lines.append(f"  {k:8s} {shape}")
    strides = ", ".join(str(s) for s in cfg.model.strides)
    decode = "exp(reg) * stride" if cfg.model.exp_on_reg else "reg * stride"
    lines.append(f"  strides {strides}; box distances ltrb = {decode}; class scores = sigmoid(cls)")
    return "\n".join(lines)
