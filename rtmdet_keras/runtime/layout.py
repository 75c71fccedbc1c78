"""The output-layout contract between the exporter and the runners: one module both sides import.

An exported model (SavedModel or ``.tflite``) takes ``images [B, H, W, 3]`` (:data:`INPUT_NAME`, raw
letterboxed RGB 0-255) and returns the tensors of one of :data:`OUTPUT_LAYOUTS` (see
:mod:`rtmdet_keras.export`): :func:`~rtmdet_keras.export.convert.export_outputs` builds them from the network's
outputs (TensorFlow, at export time), :func:`layout_to_network_outputs` turns them back into the network
contract ``{"cls_pX": logits, "reg_pX": raw distances}`` (NumPy, at run time), so
:func:`rtmdet_keras.postprocess.decode_and_nms` decodes every form of a model alike.
:func:`detect_layout`, :func:`layout_num_classes` and :func:`check_layout_shapes` read a model's
outputs whatever form it has.

No TensorFlow here: the TFLite runtime (:mod:`rtmdet_keras.runtime.tflite`) reads layouts without it.
The TensorFlow side of the contract, :func:`rtmdet_keras.export.convert.export_outputs`, is the
exporter's.
"""

from __future__ import annotations

import numpy as np

from rtmdet_keras.levels import level_names

OUTPUT_LAYOUTS = ("logits", "scores", "decoded")
DEFAULT_LAYOUT = "logits"
INPUT_NAME = "images"


class ExportError(RuntimeError):
    """The export cannot go on; the message says what was wrong and what to do."""


def _levels(cfg):
    return level_names(cfg.model.strides)


def detect_layout(output_names) -> str:
    """Tell the layout from the output names (a TFLite signature, a SavedModel signature or a dict)."""
    names = set(output_names)
    kinds = {n.rsplit("_p", 1)[0] for n in names if "_p" in n}
    if names and names <= {n for n in names if n.startswith(("cls_p", "reg_p"))} and kinds == {"cls", "reg"}:
        return "logits"
    if names and all(n.startswith(("scores_p", "reg_p")) for n in names) and kinds == {"scores", "reg"}:
        return "scores"
    if names == {"scores", "boxes"}:
        return "decoded"
    raise ValueError(f"outputs {sorted(names)} are not an RTMDet export layout (cls_pX/reg_pX, scores_pX/reg_pX "
                     f"or scores/boxes)")


def layout_num_classes(layout: str, shapes: dict) -> int:
    key = {"logits": "cls_p", "scores": "scores_p", "decoded": "scores"}[layout]
    return int(next(s for n, s in sorted(shapes.items()) if n.startswith(key))[-1])


def check_layout_shapes(layout: str, shapes: dict, cfg) -> None:
    """Raise ValueError when output shapes do not fit ``cfg`` (imgsz, strides, num_classes)."""
    h, w = (int(v) for v in cfg.imgsz)
    c = int(cfg.num_classes)
    grids = {lv: (-(-h // s), -(-w // s)) for lv, s in zip(_levels(cfg), cfg.model.strides)}
    if layout == "decoded":
        p = sum(gh * gw for gh, gw in grids.values())
        want = {"scores": (p, c), "boxes": (p, 4)}
        for name, tail in want.items():
            if tuple(shapes[name][-2:]) != tail:
                raise ValueError(f"output {name} has shape {tuple(shapes[name])}, the config expects [B, {p}, "
                                 f"{tail[1]}] (imgsz {cfg.imgsz}, strides {cfg.model.strides})")
        return
    cls_key = "cls" if layout == "logits" else "scores"
    for lv, (gh, gw) in grids.items():
        for key, depth in ((f"{cls_key}_{lv}", c), (f"reg_{lv}", 4)):
            if key not in shapes:
                raise ValueError(f"no output {key} (outputs: {sorted(shapes)}); the config's strides are "
                                 f"{cfg.model.strides}")
            if tuple(shapes[key][1:]) != (gh, gw, depth):
                raise ValueError(f"output {key} has shape {tuple(shapes[key])}, the config expects "
                                 f"[B, {gh}, {gw}, {depth}] (imgsz {cfg.imgsz}, num_classes {c})")


def _logit(p):
    p = np.clip(np.asarray(p, np.float32), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def layout_to_network_outputs(raw: dict, layout: str, strides=None, exp_on_reg=None, imgsz=None) -> dict:
    """Exported tensors (float32 NumPy, batch first) -> the network contract ``{"cls_pX": logits,
    "reg_pX": raw distances}``. ``strides``, ``exp_on_reg`` and ``imgsz`` are needed for ``decoded``.

    ``scores`` are turned back into logits (``log(p / (1 - p))``, p clipped to [1e-7, 1 - 1e-7]) so
    that one decode (sigmoid inside :func:`~rtmdet_keras.postprocess.decode_and_nms`) serves all.
    """
    if layout == "logits":
        return {k: np.asarray(v, np.float32) for k, v in raw.items()}
    if layout == "scores":
        return {("cls_" + k[len("scores_"):] if k.startswith("scores_") else k):
                (_logit(v) if k.startswith("scores_") else np.asarray(v, np.float32)) for k, v in raw.items()}
    if layout != "decoded":
        raise ValueError(f"unknown output layout {layout!r}")
    h, w = (int(v) for v in imgsz)
    scores, boxes = np.asarray(raw["scores"], np.float32), np.asarray(raw["boxes"], np.float32)
    b = scores.shape[0]
    out, start = {}, 0
    for lv, s in zip(level_names(strides), strides):
        gh, gw = -(-h // s), -(-w // s)
        n = gh * gw
        ys, xs = np.meshgrid(np.arange(gh, dtype=np.float32) * s, np.arange(gw, dtype=np.float32) * s, indexing="ij")
        px, py = xs.reshape(-1), ys.reshape(-1)
        bx = boxes[:, start:start + n]
        d = np.stack([px - bx[..., 0], py - bx[..., 1], bx[..., 2] - px, bx[..., 3] - py], -1) / np.float32(s)
        if exp_on_reg:
            d = np.log(np.maximum(d, 1e-7))
        out[f"cls_{lv}"] = _logit(scores[:, start:start + n]).reshape(b, gh, gw, -1)
        out[f"reg_{lv}"] = d.reshape(b, gh, gw, 4).astype(np.float32)
        start += n
    return out
