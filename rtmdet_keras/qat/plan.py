"""What happens to every layer of a quantised network: :func:`quantization_plan`, its text table
(``quantization_plan.txt``) and :func:`unquantized_layers`.

The plan reads the layers' types and tfmot's wrapper attributes only; this module imports neither
TensorFlow nor tfmot.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

# Layers that only move or pick int8 values: their output is on their input's quantisation grid.
VALUE_PRESERVING = ("ZeroPadding2D", "MaxPooling2D", "NearestUpsample")
WRAPPER_TYPES = ("QuantizeWrapper", "QuantizeWrapperV2")


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
    if type(layer).__name__ not in WRAPPER_TYPES:
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
        if type(layer).__name__ not in WRAPPER_TYPES:
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


__all__ = ["quantization_plan", "unquantized_layers", "format_quantization_plan", "VALUE_PRESERVING", "WRAPPER_TYPES"]
