"""Export a trained network straight from Keras to TFLite (float32, float16, full-integer int8) and a SavedModel.

``python -m rtmdet_keras.export configs/nano.yaml work_dirs/nano/best_coco_bbox_mAP.keras --int8``

No ONNX hop: the functional network is wrapped in Keras ``ExportArchive`` endpoints (any batch for
the SavedModel's ``serving_default``; a static ``[1, H, W, 3]`` float32 input for TFLite), written as
one SavedModel and converted with ``tf.lite.TFLiteConverter.from_saved_model``
(``from_concrete_functions`` would leave the variables unfrozen). Int8 is full-integer: int8 weights
and activations, ``TFLITE_BUILTINS_INT8`` only (no float fallback), int8 (or uint8) input, int8
outputs, calibrated on ``cfg.export.calib_images`` training images passed through the *evaluation*
transform (keep-ratio letterbox, pad 114 bottom/right). ``int16x8`` (``--int16x8``, on request) is
calibrated the same way with 16-bit activations (int16 input and outputs, symmetric) and 8-bit weights.
``--c-array`` also writes each integer model as ``<stem>.cc``/``.h`` (:mod:`rtmdet_keras.c_array`). The
BGR presets' channel reversal is folded into the stem convolution (:mod:`rtmdet_keras.models.channel_fold`),
so no GATHER reaches the graph. The activation ranges are recorded with
XNNPACK kernels (:mod:`rtmdet_keras.calibration`, several times faster than TFLite's calibrator with
its reference kernels; ``--calibrator tflite`` uses that one).

Input contract (every format)
    ``images [1, H, W, 3]``: the raw letterboxed RGB image, 0-255 (H, W = ``cfg.imgsz``). Channel
    reordering and ``(x - mean) / std`` happen inside the model. Int8 models take ``q = pixel - 128``
    (scale 1, zero point -128; the calibration pins the input range to exactly 0-255), uint8 models the
    pixel itself (scale 1, zero point 0), so the quantisation of the input is lossless.

Output layout (``layout="logits"``, the default; chosen by measurement, see docs/benchmarks.md)
    Per level ``pX`` (stride ``s = 2**X``; grid ``h = ceil(H/s)``, ``w = ceil(W/s)``):

    * ``cls_pX [1, h, w, C]``: class logits; ``score = sigmoid(logit)``;
    * ``reg_pX [1, h, w, 4]``: ``(left, top, right, bottom)`` distances in units of the stride
      (``exp(reg)`` first when ``exp_on_reg``).

    Decoding: the prior of cell ``(i, j)`` (row, column) is the point ``(px, py) = (j * s, i * s)``
    pixels; ``d = reg * s``; box ``= (px - d_l, py - d_t, px + d_r, py + d_b)`` xyxy pixels of the
    letterboxed input; then class-aware NMS (``cfg.test``) and division by the letterbox scale to get
    original-image pixels. These are the Keras network's own outputs, so
    :func:`rtmdet_keras.postprocess.decode_and_nms` decodes the TFLite model unchanged.

    Why this layout: an int8 tensor has 256 steps over its calibrated range. Per-level distances in
    stride units span a few units (a fraction of a pixel per step at P3), while one tensor of decoded
    pixel boxes spans the whole image (2.5 px per step at 640 px, for small and large boxes alike). An
    in-graph sigmoid (``layout="scores"``) cannot add precision: LOGISTIC reads the same int8 logits
    and then rounds the score to 1/256, which also zeroes every score below 1/512 (the evaluation keeps
    scores down to 0.001). ``scripts/benchmark.py export --layouts`` measures all three; on a trained
    nano (Keras bbox mAP 0.849) int8 gave 0.850 with this layout, 0.848 with ``scores`` (twice the mean
    score error) and 0.742 with ``decoded`` (mean box error at confident priors 1.02 px instead of 0.12).

    ``layout="scores"``: ``scores_pX = sigmoid(logits)`` in [0, 1] and ``reg_pX`` as above.
    ``layout="decoded"``: ``scores [1, P, C]`` (sigmoid) and ``boxes [1, P, 4]`` xyxy pixels, priors in
    :func:`rtmdet_keras.boxes.make_priors` order. Both exist to be measured against the default.

Beside each ``<name>_<format>.tflite`` the export writes ``<name>_<format>.json`` (class names, input
contract and quantisation, output layout with quantisation and the decode recipe, strides,
``exp_on_reg``, the op report and the self-check) and ``<name>_<format>_ops.txt`` (the op table).
After converting it runs each model on a few validation images and prints how far its scores, boxes
and NMS'd detections are from the Keras network's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import click
import numpy as np

from rtmdet_keras.cli import VariadicCfgCommand, config_options, run_standalone
from rtmdet_keras.files import atomic_write_bytes, atomic_write_text

DEFAULT_FORMATS = ("float32", "float16", "int8")  # --all
# int16x8: 16-bit activations, 8-bit weights (TFLite's EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8),
# run by LiteRT, TFLite Micro and Ethos-U; on request only (the reference-kernel calibration is slower).
FORMATS = DEFAULT_FORMATS + ("int16x8",)
INTEGER_FORMATS = ("int8", "int16x8")  # calibrated, fully integer; --c-array writes these as C arrays
OUTPUT_LAYOUTS = ("logits", "scores", "decoded")
DEFAULT_LAYOUT = "logits"
INPUT_NAME = "images"
CALIBRATORS = ("fast", "tflite")  # int8 activation ranges: XNNPACK kernels, or TFLite's own calibrator
DEFAULT_CALIBRATOR = "fast"
TFLITE_SIGNATURE = "serving_batch1"  # the batch-1 signature converted to TFLite (and its name in the .tflite)


class ExportError(RuntimeError):
    """The export cannot go on; the message says what was wrong and what to do."""


# ---------------------------------------------------------------------------------------------
# Output layouts: network outputs -> exported tensors (TensorFlow), and back (NumPy).
# ---------------------------------------------------------------------------------------------


def _levels(cfg):
    from rtmdet_keras.boxes import level_names

    return level_names(cfg.model.strides)


def export_outputs(outputs: dict, layout: str, cfg) -> dict:
    """The network's outputs dict -> the exported tensors of ``layout`` (see the module docstring)."""
    import tensorflow as tf

    levels = _levels(cfg)
    if layout == "logits":
        return {**{f"cls_{lv}": outputs[f"cls_{lv}"] for lv in levels},
                **{f"reg_{lv}": outputs[f"reg_{lv}"] for lv in levels}}
    if layout == "scores":
        return {**{f"scores_{lv}": tf.sigmoid(outputs[f"cls_{lv}"]) for lv in levels},
                **{f"reg_{lv}": outputs[f"reg_{lv}"] for lv in levels}}
    if layout == "decoded":
        from rtmdet_keras.boxes import decode_predictions, flatten_levels, make_priors

        priors = make_priors(int(cfg.imgsz[0]), int(cfg.imgsz[1]), cfg.model.strides)
        scores = tf.sigmoid(flatten_levels(outputs, prefix="cls"))
        return {"scores": scores, "boxes": decode_predictions(outputs, priors, cfg.model.exp_on_reg)}
    raise ValueError(f"unknown output layout {layout!r}; use one of {', '.join(OUTPUT_LAYOUTS)}")


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
    from rtmdet_keras.boxes import level_names

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


# ---------------------------------------------------------------------------------------------
# Network <-> config
# ---------------------------------------------------------------------------------------------


def check_network_matches_config(network, cfg, source="the network") -> None:
    """Raise :class:`ExportError` naming the mismatch when ``network`` does not produce what ``cfg``
    describes: input size, output names, grid sizes, number of classes."""
    import tensorflow as tf

    h, w = (int(v) for v in cfg.imgsz)
    shape = tuple(network.inputs[0].shape) if getattr(network, "inputs", None) else None
    if shape is not None:
        if len(shape) != 4 or shape[-1] != 3:
            raise ExportError(f"{source}: input shape {shape} is not [batch, height, width, 3]")
        if shape[1] is not None and (shape[1], shape[2]) != (h, w):
            raise ExportError(f"{source} was built for {shape[1]}x{shape[2]} images but the config has imgsz "
                              f"{[h, w]}; pass --cfg-options imgsz='({shape[1]},{shape[2]})' (or --imgsz "
                              f"{shape[1]} {shape[2]})")
    out = network(tf.zeros([1, h, w, 3], tf.float32), training=False)
    if not isinstance(out, dict):
        raise ExportError(f"{source}: outputs must be a dict cls_pX/reg_pX, got {type(out).__name__}")
    cls = [k for k in out if k.startswith("cls_p")]
    if cls:
        got = int(out[cls[0]].shape[-1])
        if got != int(cfg.num_classes):
            raise ExportError(f"{source} predicts {got} classes but the config has num_classes {cfg.num_classes}; "
                              f"pass --cfg-options num_classes={got}")
    try:
        check_layout_shapes("logits", {k: tuple(v.shape) for k, v in out.items()}, cfg)
    except ValueError as e:
        raise ExportError(f"{source}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Calibration and check images
# ---------------------------------------------------------------------------------------------


def letterbox_image(image, cfg) -> np.ndarray:
    """One image (uint8 ``[h, w, 3]`` RGB) through the evaluation transform -> ``uint8 [H, W, 3]``."""
    from rtmdet_keras.data.pipeline import letterbox

    out, _ = letterbox(image, cfg.imgsz, int(cfg.augment.pad_val))
    return np.asarray(out, np.uint8)


def dataset_images(dataset, cfg, n: int, seed: int = 0, shuffle: bool = True) -> np.ndarray:
    """Up to ``n`` images of a :class:`~rtmdet_keras.data.records.DetectionDataset`, letterboxed, as
    ``uint8 [n, H, W, 3]``; a random (seeded) choice when ``shuffle``, else the first ``n``."""
    from rtmdet_keras.data.images import load_image

    records = list(dataset.records)
    if not records:
        raise ExportError(f"{getattr(dataset, 'source', 'the data set')}: no images")
    n = min(int(n), len(records))
    if shuffle:
        idx = sorted(np.random.default_rng(seed).choice(len(records), n, replace=False).tolist())
    else:
        idx = list(range(n))
    return np.stack([letterbox_image(load_image(records[i].path), cfg) for i in idx])


def _as_images(images, cfg, n=None) -> np.ndarray:
    """Arrays ``[N, H, W, 3]`` / a list of them, or a data set -> ``uint8 [N, H, W, 3]`` letterboxed."""
    if hasattr(images, "records"):
        return dataset_images(images, cfg, n or len(images.records), seed=cfg.seed)
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    h, w = (int(v) for v in cfg.imgsz)
    if arr.ndim != 4 or arr.shape[1:] != (h, w, 3):
        raise ExportError(f"calibration/check images must be [N, {h}, {w}, 3] letterboxed images, got {arr.shape}")
    return arr[:n] if n else arr


def calibration_images(cfg, calib_dataset=None, n: Optional[int] = None) -> np.ndarray:
    """The representative images for int8: ``n`` (default ``cfg.export.calib_images``) training images
    through the evaluation transform, ``uint8 [n, H, W, 3]``. ``calib_dataset`` may be a data set, an
    array of letterboxed images, or None for the config's training split."""
    n = int(n or cfg.export.calib_images)
    if calib_dataset is None:
        calib_dataset = _load_split(cfg, "train", "int8 calibration needs the training images")
    return _as_images(calib_dataset, cfg, n)


def _load_split(cfg, split, why):
    from rtmdet_keras.data import load_split

    try:
        return load_split(cfg, split)
    except Exception as e:  # the readers' errors already say which file; add what it was for
        raise ExportError(f"{why}: {e}") from None


def pin_input_range(images: np.ndarray) -> np.ndarray:
    """Make the calibration set span exactly 0..255 so the int8 input gets scale 1 and zero point -128
    (lossless for 8-bit pixels). If no image has a 0 and a 255, one pixel of the first image is set to
    each: one pixel barely moves any activation range."""
    images = np.array(images, copy=True)
    if images.min() > 0:
        images[0, 0, 0, :] = 0
    if images.max() < 255:
        images[0, 0, min(1, images.shape[2] - 1), :] = 255
    return images


# ---------------------------------------------------------------------------------------------
# SavedModel and conversion
# ---------------------------------------------------------------------------------------------


def write_saved_model(network, cfg, path, layout: str = DEFAULT_LAYOUT, dynamic: bool = True,
                      batch1: bool = True) -> Path:
    """A SavedModel of ``network`` whose signatures take ``images float32 [B, H, W, 3]`` (raw 0-255) and
    return the tensors of ``layout`` by name: ``serve`` (also ``serving_default``) with any batch when
    ``dynamic``, and :data:`TFLITE_SIGNATURE` with batch 1, the source of every ``.tflite`` (static
    shapes), when ``batch1``. One file serves both: tracing and writing twice would double the time."""
    import keras
    import tensorflow as tf

    h, w = (int(v) for v in cfg.imgsz)

    def serve(images):
        return export_outputs(network(images, training=False), layout, cfg)

    archive = keras.export.ExportArchive()
    archive.track(network)
    for name, batch, on in (("serve", None, dynamic), (TFLITE_SIGNATURE, 1, batch1)):
        if on:
            archive.add_endpoint(name, serve,
                                 input_signature=[tf.TensorSpec([batch, h, w, 3], tf.float32, name=INPUT_NAME)])
    with _captured_stderr():
        archive.write_out(str(path), verbose=False)
    return Path(path)


@contextlib.contextmanager
def _captured_stderr():
    """Silence the converter's C++ chatter on file descriptor 2; replay it if the block fails."""
    import sys

    sys.stderr.flush()
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced by a non-file (some test runners)
        yield
        return
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        ok = False
        try:
            yield
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            if not ok:
                tmp.seek(0)
                tail = tmp.read().decode(errors="replace")[-4000:]
                if tail.strip():
                    print(tail, file=sys.stderr)


def convert_saved_model(saved_model_dir, fmt: str, representative: Optional[np.ndarray] = None,
                        int8_input: str = "int8", calibrator: str = DEFAULT_CALIBRATOR) -> bytes:
    """Convert the batch-1 signature of a SavedModel from :func:`write_saved_model` to a ``.tflite``
    flatbuffer of ``fmt``.

    ``int8``: full integer, ``TFLITE_BUILTINS_INT8`` only, int8/uint8 input, int8 outputs, calibrated
    on ``representative`` (``[N, H, W, 3]`` raw letterboxed images). ``calibrator="fast"`` records the
    activation ranges with XNNPACK kernels (:mod:`rtmdet_keras.calibration`), ``"tflite"`` with
    TFLite's own calibrator (reference kernels, several times slower; the same ranges up to float
    rounding).
    """
    import tensorflow as tf

    if calibrator not in CALIBRATORS:
        raise ExportError(f"unknown calibrator {calibrator!r}; use one of {', '.join(CALIBRATORS)}")

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[TFLITE_SIGNATURE])
    if fmt == "float32":
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    elif fmt == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    elif fmt in ("int8", "int16x8"):
        if representative is None or len(representative) == 0:
            raise ExportError(f"{fmt} export needs calibration images")
        images = pin_input_range(representative).astype(np.float32)

        def representative_dataset():
            for img in images:
                yield [img[None]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative_dataset
        if fmt == "int8":
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = {"int8": tf.int8, "uint8": tf.uint8}[int8_input]
            conv.inference_output_type = tf.int8
        else:
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            # int16 tensors are symmetric (zero point 0): the input 0-255 gets scale 255/32767.
            conv.inference_input_type = tf.int16
            conv.inference_output_type = tf.int16
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    try:
        with _captured_stderr(), _calibration(fmt == "int8" and calibrator == "fast"):
            return conv.convert()
    except Exception as e:
        raise ExportError(f"TFLite conversion to {fmt} failed: {type(e).__name__}: {str(e)[-2000:]}") from None


@contextlib.contextmanager
def _calibration(fast: bool):
    """The conversion's calibrator: TFLite's own, or (``fast``) :mod:`rtmdet_keras.calibration`'s in its place."""
    with contextlib.ExitStack() as stack:
        if fast:
            from rtmdet_keras.calibration import fast_calibration

            try:
                stack.enter_context(fast_calibration())
            except RuntimeError as e:
                raise ExportError(f"{e} (--calibrator tflite)") from None
        yield


# ---------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------


def _quant_dict(q):
    return None if q is None else {"scale": q[0], "zero_point": q[1]}


def export_metadata(detector, cfg, fmt: str, layout: str, class_names, ops) -> dict:
    """What a consumer of the ``.tflite`` needs, as a JSON-able dict."""
    import tensorflow as tf

    h, w = detector.imgsz
    pad = int(cfg.augment.pad_val)
    strides = [int(s) for s in cfg.model.strides]
    levels = _levels(cfg)
    outputs = []
    for name, d in sorted(detector.output_details.items()):
        entry = {"name": name, "shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                 "quantization": _quant_dict(detector.output_quantization[name])}
        if "_p" in name:
            lv = name.rsplit("_", 1)[1]
            entry["level"], entry["stride"] = lv, strides[levels.index(lv)]
        entry["meaning"] = {
            "cls": "class logits; score = sigmoid(logit)",
            "scores": "class scores in [0, 1] (sigmoid applied in the graph)",
            "reg": ("ltrb distances in stride units: distance_px = " +
                    ("exp(reg) * stride" if cfg.model.exp_on_reg else "reg * stride")),
            "boxes": "boxes xyxy in pixels of the letterboxed input",
        }[name.split("_p")[0] if "_p" in name else name]
        outputs.append(entry)
    recipe = {
        "logits": ["for each level pX with stride s: prior of cell (row i, col j) = (j*s, i*s) px",
                   "score = sigmoid(cls_pX)",
                   "d = (exp(reg_pX) if exp_on_reg else reg_pX) * s",
                   "box = (px - d_l, py - d_t, px + d_r, py + d_b) xyxy px of the letterboxed input"],
        "scores": ["for each level pX with stride s: prior of cell (row i, col j) = (j*s, i*s) px",
                   "score = scores_pX",
                   "d = (exp(reg_pX) if exp_on_reg else reg_pX) * s",
                   "box = (px - d_l, py - d_t, px + d_r, py + d_b) xyxy px of the letterboxed input"],
        "decoded": ["scores and boxes are already decoded; priors in level order P3, P4, P5, row-major"],
    }[layout] + [f"class-aware NMS: score >= {cfg.test.score_thr}, IoU {cfg.test.iou_thr}, "
                 f"at most {cfg.test.max_per_img} per image",
                 "original-image box = box / letterbox scale (scale = min(H / height, W / width))"]
    return {
        "format": fmt,
        "file": detector.path.name,
        "config": cfg.name,
        "preset": cfg.preset,
        "num_classes": int(cfg.num_classes),
        "class_names": list(class_names),
        "imgsz": [h, w],
        "signature": detector.signature_key,
        "input": {
            "name": detector.input_name, "shape": list(detector.input_shape),
            "dtype": np.dtype(detector.input_dtype).name,
            "quantization": _quant_dict(detector.input_quantization),
            "contract": (f"raw RGB image 0-255, resized keeping the aspect ratio to fit {h}x{w} (scale = "
                         f"min({h}/height, {w}/width)), placed top-left, padded bottom/right with {pad}; "
                         f"channel reordering and normalisation are inside the model"),
            "channel_order": "rgb",
            "pad_value": pad,
            "model_normalisation": {"channel_order": cfg.model.channel_order, "mean": list(cfg.model.mean),
                                    "std": list(cfg.model.std)},
        },
        "layout": layout,
        "outputs": outputs,
        "decode": {"strides": strides, "exp_on_reg": bool(cfg.model.exp_on_reg), "prior_offset": 0.0,
                   "recipe": recipe},
        "test": {"score_thr": cfg.test.score_thr, "iou_thr": cfg.test.iou_thr, "nms_pre": cfg.test.nms_pre,
                 "max_per_img": cfg.test.max_per_img},
        "ops": ops,
        "tensorflow": tf.__version__,
    }


# ---------------------------------------------------------------------------------------------
# Self-check: the .tflite against the Keras network
# ---------------------------------------------------------------------------------------------


def _iou_matrix(a, b):
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), -1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def match_detections(ref, other, iou_thr: float = 0.5):
    """Greedy one-to-one matching of two detection sets ``(boxes, scores, labels)``: each reference box,
    best score first, takes the unmatched box of the same class with the highest IoU >= ``iou_thr``.
    Returns ``[(ref_index, other_index, iou)]``."""
    rb, rs, rl = ref
    ob, _, ol = other
    if len(rb) == 0 or len(ob) == 0:
        return []
    iou = _iou_matrix(rb, ob)
    iou[np.asarray(rl)[:, None] != np.asarray(ol)[None, :]] = -1
    used, pairs = set(), []
    for i in np.argsort(-np.asarray(rs), kind="stable"):
        cand = [(iou[i, j], j) for j in range(len(ob)) if j not in used and iou[i, j] >= iou_thr]
        if cand:
            v, j = max(cand)
            used.add(j)
            pairs.append((int(i), int(j), float(v)))
    return pairs


def compare_with_keras(network, run_fn, images, cfg, score_thr: float = 0.3, batch_size: int = 8) -> dict:
    """Run the Keras network and ``run_fn`` (images -> network-contract dict, e.g. a
    :class:`~rtmdet_keras.tflite_runtime.TFLiteDetector`) on the same letterboxed images and measure:

    * ``score_max``/``score_mean``: |Δ sigmoid score| over every prior and class;
    * ``box_max``/``box_mean``: |Δ| of decoded box coordinates in pixels over every prior, and
      ``box_conf_max``/``box_conf_mean`` over priors whose Keras score reaches ``score_thr``;
    * detections after :func:`~rtmdet_keras.postprocess.decode_and_nms` with score >= ``score_thr``:
      ``dets_keras``, ``dets_other``, ``matched`` (same class, IoU >= 0.5), their mean IoU and the
      largest score difference of a matched pair.
    """
    import tensorflow as tf

    from rtmdet_keras.postprocess import decode_and_nms, decode_outputs

    images = np.asarray(images)
    acc = {"score_max": 0.0, "score_sum": 0.0, "score_n": 0, "box_max": 0.0, "box_sum": 0.0, "box_n": 0,
           "conf_max": 0.0, "conf_sum": 0.0, "conf_n": 0, "dets_keras": 0, "dets_other": 0, "matched": 0,
           "iou_sum": 0.0, "match_score_max": 0.0}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        k_out = {k: np.asarray(v) for k, v in network(tf.constant(batch, tf.float32), training=False).items()}
        o_out = run_fn(batch)
        ks, kb = (np.asarray(t) for t in decode_outputs(k_out, cfg))
        os_, ob = (np.asarray(t) for t in decode_outputs(o_out, cfg))
        ds, db = np.abs(ks - os_), np.abs(kb - ob)
        acc["score_max"] = max(acc["score_max"], float(ds.max()))
        acc["score_sum"] += float(ds.sum())
        acc["score_n"] += ds.size
        acc["box_max"] = max(acc["box_max"], float(db.max()))
        acc["box_sum"] += float(db.sum())
        acc["box_n"] += db.size
        conf = ks.max(-1) >= score_thr
        if conf.any():
            acc["conf_max"] = max(acc["conf_max"], float(db[conf].max()))
            acc["conf_sum"] += float(db[conf].sum())
            acc["conf_n"] += db[conf].size
        k_det = [np.asarray(t) for t in decode_and_nms(k_out, cfg)]
        o_det = [np.asarray(t) for t in decode_and_nms(o_out, cfg)]
        for i in range(len(batch)):
            def keep(det):
                boxes, scores, labels, valid = det
                n = int(valid[i])
                m = scores[i, :n] >= score_thr
                return boxes[i, :n][m], scores[i, :n][m], labels[i, :n][m]

            kd, od = keep(k_det), keep(o_det)
            pairs = match_detections(kd, od)
            acc["dets_keras"] += len(kd[0])
            acc["dets_other"] += len(od[0])
            acc["matched"] += len(pairs)
            acc["iou_sum"] += sum(p[2] for p in pairs)
            for a, b, _ in pairs:
                acc["match_score_max"] = max(acc["match_score_max"], abs(float(kd[1][a]) - float(od[1][b])))
    nan = float("nan")
    return {
        "images": int(len(images)), "score_thr": score_thr,
        "score_max": acc["score_max"], "score_mean": acc["score_sum"] / max(acc["score_n"], 1),
        "box_max": acc["box_max"], "box_mean": acc["box_sum"] / max(acc["box_n"], 1),
        "box_conf_max": acc["conf_max"] if acc["conf_n"] else nan,
        "box_conf_mean": acc["conf_sum"] / acc["conf_n"] if acc["conf_n"] else nan,
        "dets_keras": acc["dets_keras"], "dets_other": acc["dets_other"], "matched": acc["matched"],
        "match_iou": acc["iou_sum"] / acc["matched"] if acc["matched"] else nan,
        "match_score_max": acc["match_score_max"] if acc["matched"] else nan,
    }


def format_check_table(rows: Dict[str, dict]) -> str:
    """The self-check of several models (name -> :func:`compare_with_keras` result) as a table."""
    def f(v, spec):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    thr = next(iter(rows.values()))["score_thr"] if rows else 0.3
    head = (f"{'model':<10} {'imgs':>4}  {'|Δscore| max':>12} {'mean':>8}  {'|Δbox| px max':>13} {'mean':>7}  "
            f"{f'@score≥{thr:g} max':>16} {'mean':>6}  {'dets keras/tflite':>17} {'matched':>7} {'IoU':>5}")
    lines = ["-" * len(head), head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(
            f"{name:<10} {r['images']:>4}  {f(r['score_max'], '.4f'):>12} {f(r['score_mean'], '.5f'):>8}  "
            f"{f(r['box_max'], '.3f'):>13} {f(r['box_mean'], '.4f'):>7}  {f(r['box_conf_max'], '.3f'):>16} "
            f"{f(r['box_conf_mean'], '.3f'):>6}  {str(r['dets_keras']) + '/' + str(r['dets_other']):>17} "
            f"{r['matched']:>7} {f(r['match_iou'], '.3f'):>5}")
    lines.append("-" * len(head))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The export
# ---------------------------------------------------------------------------------------------


def _class_names(cfg, *datasets):
    names = cfg.class_names
    for ds in datasets:
        if names is None and hasattr(ds, "class_names"):
            names = list(ds.class_names)
    names = list(names) if names else [f"class_{i}" for i in range(int(cfg.num_classes))]
    if len(names) != int(cfg.num_classes):
        raise ExportError(f"the data set has {len(names)} classes ({', '.join(names)}) but the config has "
                          f"num_classes {cfg.num_classes}")
    return names


def _check_images(cfg, check_dataset, n, fallback):
    if check_dataset is None:
        try:
            from rtmdet_keras.data import load_split

            check_dataset = load_split(cfg, "val")
        except Exception:  # no validation split: the check runs on calibration images instead
            check_dataset = None
    if check_dataset is None:
        return None if fallback is None else np.asarray(fallback)[:n]
    if hasattr(check_dataset, "records"):
        return dataset_images(check_dataset, cfg, n, shuffle=False)
    return _as_images(check_dataset, cfg, n)


def export_tflite(network, cfg, out_dir, formats: Sequence[str] = DEFAULT_FORMATS, calib_dataset=None,
                  int8_input: Optional[str] = None, *, layout: str = DEFAULT_LAYOUT, name: Optional[str] = None,
                  saved_model: bool = True, check: bool = True, check_dataset=None, check_images: int = 8,
                  fold_bgr: bool = True, c_array: bool = False, vela: Optional[dict] = None,
                  calibrator: str = DEFAULT_CALIBRATOR, print_fn=print) -> Dict[str, Path]:
    """Export ``network`` (the functional Keras model of :func:`rtmdet_keras.models.build_model`) to
    ``out_dir``.

    Args:
        formats: any of ``"float32"``, ``"float16"``, ``"int8"``, ``"int16x8"`` (16-bit activations, 8-bit
            weights; calibrated like int8, int16 input and outputs).
        calib_dataset: int8 calibration images: a data set, an array ``[N, H, W, 3]`` of letterboxed
            images, or None for ``cfg.export.calib_images`` images of the training split.
        int8_input: ``"int8"`` or ``"uint8"`` input for the int8 model (default
            ``cfg.export.int8_input_type``).
        layout: output layout (see the module docstring); ``"logits"`` unless measuring.
        name: file stem (default the config name: ``nano_int8.tflite``).
        saved_model: keep ``<name>_saved_model/`` (``serving_default``: any batch, same outputs; and the
            batch-1 signature the ``.tflite`` files come from).
        check: compare every ``.tflite`` with the Keras network on ``check_images`` images of
            ``check_dataset`` (default: the validation split, else calibration images) and print it.
        fold_bgr: export a BGR network with its channel reversal folded into the first convolution
            (:mod:`rtmdet_keras.models.channel_fold`: no GATHER in the graph, same outputs); False keeps
            the GATHER.
        c_array: also write each integer model as ``<stem>.cc``/``<stem>.h`` for TFLite Micro
            (:mod:`rtmdet_keras.c_array`).
        vela: compile the int8 model for an Ethos-U NPU with Arm's Vela (:mod:`rtmdet_keras.vela`):
            ``{"accelerator": "ethos-u55-64", "system_config": ..., "memory_mode": ..., "config_file": ...}``
            (keys optional); writes ``<stem>_vela.tflite`` (``paths["vela"]``), ``_vela.txt`` and ``_vela.json``.
        calibrator: how int8 activation ranges are recorded: ``"fast"`` (XNNPACK kernels, see
            :mod:`rtmdet_keras.calibration`) or ``"tflite"`` (TFLite's calibrator, reference kernels).

    Returns:
        ``{"saved_model": dir, "<format>": .tflite path}``; beside each ``.tflite`` lie
        ``<stem>.json`` (metadata, op report, self-check) and ``<stem>_ops.txt``.
    """
    from rtmdet_keras.tflite_runtime import (
        TFLiteDetector, format_op_table, graph_summary, int8_graph_problems, op_report,
    )

    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ExportError(f"unknown format(s) {bad}; use {', '.join(FORMATS)}")
    int8_input = int8_input or cfg.export.int8_input_type
    if int8_input not in ("int8", "uint8"):
        raise ExportError(f"int8 input type must be int8 or uint8, got {int8_input!r}")
    if layout not in OUTPUT_LAYOUTS:
        raise ExportError(f"unknown output layout {layout!r}; use one of {', '.join(OUTPUT_LAYOUTS)}")
    if vela is not None:
        if "int8" not in formats:
            raise ExportError("Vela compiles the int8 model: add int8 to the formats (--int8)")
        from rtmdet_keras.vela import VelaError, find_vela

        try:
            find_vela()  # before the conversion, not after it
        except VelaError as e:
            raise ExportError(str(e)) from None
    check_network_matches_config(network, cfg)
    exported = network
    if fold_bgr:
        from rtmdet_keras.models.channel_fold import find_bgr_normalization, fold_channel_reversal

        if find_bgr_normalization(network) is not None:
            exported = fold_channel_reversal(network)
            print_fn("BGR channel reversal folded into the first convolution (no GATHER in the graph)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or cfg.name
    paths: Dict[str, Path] = {}
    timings = {}

    calib = None
    if any(f in INTEGER_FORMATS for f in formats):
        if calib_dataset is None:
            calib_dataset = _load_split(cfg, "train", "int8 calibration needs the training images")
        calib = calibration_images(cfg, calib_dataset)
        print_fn(f"int8 calibration: {len(calib)} images through the evaluation transform "
                 f"({cfg.imgsz[0]}x{cfg.imgsz[1]} letterbox)")
    class_names = _class_names(cfg, calib_dataset, check_dataset)

    with tempfile.TemporaryDirectory(prefix="rtmdet_export_") as tmp:
        t0 = time.perf_counter()
        if saved_model:
            source = paths["saved_model"] = write_saved_model(exported, cfg, out_dir / f"{name}_saved_model", layout)
        else:
            source = write_saved_model(exported, cfg, Path(tmp) / "batch1", layout, dynamic=False)
        timings["saved_model"] = time.perf_counter() - t0
        print_fn(f"SavedModel{': ' + str(source) if saved_model else ' (temporary)'}: "
                 f"{timings['saved_model']:.1f} s")
        for fmt in formats:
            t0 = time.perf_counter()
            flat = convert_saved_model(source, fmt, calib if fmt in INTEGER_FORMATS else None, int8_input,
                                       calibrator)
            timings[fmt] = time.perf_counter() - t0
            path = out_dir / f"{name}_{fmt}.tflite"
            atomic_write_bytes(path, flat)
            paths[fmt] = path
            with _captured_stderr():  # LiteRT announces its XNNPACK delegate on stderr
                summary = graph_summary(path)
                detector = TFLiteDetector(path)
            ops = op_report(summary)
            table = format_op_table(ops)
            path.with_name(f"{path.stem}_ops.txt").write_text(table)
            meta = export_metadata(detector, cfg, fmt, layout, class_names, ops)
            meta["export_seconds"] = {"saved_model": round(timings["saved_model"], 2),
                                      "convert": round(timings[fmt], 2)}
            if fmt in INTEGER_FORMATS:
                meta["calibration_images"] = int(len(calib))
                meta["calibrator"] = calibrator if fmt == "int8" else "tflite"
            if fmt == "int8":
                meta["problems"] = int8_graph_problems(summary, int8_input)
            _write_json(path.with_suffix(".json"), meta)
            print_fn(f"\n{path} ({path.stat().st_size / 1024:.0f} KiB, {timings[fmt]:.1f} s): "
                     f"input {meta['input']['dtype']} {meta['input']['shape']}"
                     + (f" q={meta['input']['quantization']}" if meta["input"]["quantization"] else ""))
            print_fn(table.rstrip())
            for problem in meta.get("problems", []):
                print_fn(f"WARNING: {problem}")
            if c_array and fmt in INTEGER_FORMATS:
                _write_c_array(path, meta, print_fn)
            if vela is not None and fmt == "int8":
                paths["vela"] = _compile_vela(path, meta, vela, c_array, print_fn)

    if check and any(f in paths for f in FORMATS):
        images = _check_images(cfg, check_dataset, check_images, calib)
        if images is None:
            print_fn("self-check skipped: no validation or calibration images")
        else:
            rows = {}
            for fmt in formats:
                detector = TFLiteDetector(paths[fmt], cfg=cfg)
                rows[fmt] = compare_with_keras(network, lambda x, d=detector: d(x, cfg), images, cfg)
                meta_path = paths[fmt].with_suffix(".json")
                meta = json.loads(meta_path.read_text())
                meta["check"] = rows[fmt]
                _write_json(meta_path, meta)
            print_fn(f"\nself-check against the Keras network on {len(images)} images "
                     f"(scores in [0, 1], boxes in input pixels):")
            print_fn(format_check_table(rows).rstrip())
    return paths


def _write_c_array(tflite_path, meta, print_fn, note=None) -> None:
    from rtmdet_keras.c_array import write_c_array

    files = write_c_array(tflite_path, meta=meta, note=note)
    print_fn(f"C array for TFLite Micro: {files['cc']}, {files['h']}")


def _compile_vela(int8_path, meta, options, c_array, print_fn) -> Path:
    from rtmdet_keras.vela import VelaError, compile_vela, format_vela_summary

    try:
        result = compile_vela(int8_path, **options)
    except VelaError as e:
        raise ExportError(str(e)) from None
    print_fn(f"\n{result['files']['tflite']}: {format_vela_summary(result)}\n"
             f"Vela's report: {result['files']['report']}")
    if c_array:
        _write_c_array(result["files"]["tflite"], meta, print_fn,
                       note=f"Compiled by Vela {result['vela_version']} for {result['accelerator']} "
                            f"({result['system_config']}, {result['memory_mode']}): the NPU part is one "
                            f"ethos-u custom op; run it with TFLite Micro's Ethos-U kernel.")
    return result["files"]["tflite"]


def _write_json(path, data) -> None:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (np.floating,)):
            return clean(float(v))
        return v

    atomic_write_text(path, json.dumps(clean(data), indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------------------------


@click.command(cls=VariadicCfgCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, metavar="[CONFIG] CHECKPOINT")
@config_options()
@click.option("--checkpoint", default=None, help="best_coco_bbox_mAP.keras, epoch_N.ckpt.npz (EMA weights), or an "
              "mmdetection/SSCMA .pth or its converted .npz.")
@click.option("--imgsz", nargs=2, type=int, default=None, metavar="H W", help="Input size (overrides imgsz).")
@click.option("--format", "fmt", type=click.Choice(["tflite", "saved_model"]), default="tflite", show_default=True)
@click.option("--int8", "want_int8", is_flag=True, help="Full-integer int8 .tflite.")
@click.option("--float16", "want_float16", is_flag=True, help="Float16-weight .tflite.")
@click.option("--float32", "want_float32", is_flag=True, help="Float32 .tflite.")
@click.option("--int16x8", "want_int16x8", is_flag=True,
              help="16-bit activations, 8-bit weights .tflite (int16 input/outputs; calibrated like int8).")
@click.option("--all", "want_all", is_flag=True, help="float32, float16 and int8 (the default without flags).")
@click.option("--out-dir", default=None, help="Output folder (default: the checkpoint's folder).")
@click.option("--calib-images", type=int, default=None, help="Calibration images (default export.calib_images).")
@click.option("--input-type", type=click.Choice(["int8", "uint8"]), default=None,
              help="Input type of the int8 model (default export.int8_input_type).")
@click.option("--layout", type=click.Choice(OUTPUT_LAYOUTS), default=DEFAULT_LAYOUT, show_default=True,
              help="Output layout (see the module docs); the default keeps int8 most accurate.")
@click.option("--name", default=None, help="File stem (default: the config name, e.g. nano -> nano_int8.tflite).")
@click.option("--no-check", is_flag=True, help="Skip the comparison with the Keras model.")
@click.option("--c-array", is_flag=True,
              help="Also write the integer models as <stem>.cc/.h C arrays for TFLite Micro.")
@click.option("--vela", "want_vela", is_flag=True,
              help="Compile the int8 model for an Arm Ethos-U NPU with Vela (pip install 'rtmdet_keras[vela]').")
@click.option("--accelerator-config", default=None, metavar="NPU",
              help="Vela's NPU (default ethos-u55-64, the Himax WE2's; ethos-u55-128, ethos-u65-256, ...).")
@click.option("--system-config", default=None, help="Vela's --system-config (default Vela's).")
@click.option("--memory-mode", default=None, help="Vela's --memory-mode (default Vela's).")
@click.option("--vela-config", default=None, help="Vela's --config .ini file (system configs, memory modes).")
@click.option("--calibrator", type=click.Choice(CALIBRATORS), default=DEFAULT_CALIBRATOR, show_default=True,
              help="int8 activation ranges: fast (XNNPACK kernels) or tflite (TFLite's calibrator, reference "
                   "kernels, several times slower; same ranges up to float rounding).")
@click.option("--keep-bgr-gather", is_flag=True,
              help="Keep the BGR presets' channel reversal as a GATHER op instead of folding it into the stem conv.")
def export_command(args, config, cfg_options, checkpoint, imgsz, fmt, want_int8, want_float16, want_float32,
                   want_int16x8, want_all, out_dir, calib_images, input_type, layout, name, no_check, c_array,
                   want_vela, accelerator_config, system_config, memory_mode, vela_config, keep_bgr_gather,
                   calibrator):
    """Export a checkpoint to TFLite (float32, float16, full-integer int8) and a SavedModel.

    \b
    python -m rtmdet_keras.export configs/nano.yaml work_dirs/nano/best_coco_bbox_mAP.keras --int8
    rtmdet export --config nano work_dirs/nano/epoch_300.ckpt.npz --all --imgsz 192 192
    """
    from rtmdet_keras.evaluate import ModelLoadError, command_config_and_model, load_network

    cfg, model_path = command_config_and_model(args, config, cfg_options, checkpoint=checkpoint,
                                               extra_overrides=[f"imgsz=[{imgsz[0]},{imgsz[1]}]"] if imgsz else None)
    if model_path.suffix == ".tflite":
        raise click.ClickException(f"{model_path}: already a .tflite; export takes a .keras, .ckpt.npz, .pth or "
                                 "converted .npz checkpoint")
    if calib_images is not None:
        if calib_images < 1:
            raise click.BadParameter("must be at least 1", param_hint="--calib-images")
        cfg.export.calib_images = int(calib_images)
    formats = [f for f, on in (("float32", want_float32), ("float16", want_float16), ("int8", want_int8),
                               ("int16x8", want_int16x8)) if on]
    if want_all or not formats:
        formats = list(dict.fromkeys(list(DEFAULT_FORMATS) + formats))
    if fmt == "saved_model":
        formats = []
    vela = None
    if want_vela:
        from rtmdet_keras.vela import DEFAULT_ACCELERATOR

        if "int8" not in formats:
            raise click.UsageError("--vela compiles the int8 model; add --int8")
        vela = {"accelerator": accelerator_config or DEFAULT_ACCELERATOR, "system_config": system_config,
                "memory_mode": memory_mode, "config_file": vela_config}
    elif accelerator_config or system_config or memory_mode or vela_config:
        raise click.UsageError("--accelerator-config, --system-config, --memory-mode and --vela-config go with --vela")
    if c_array and not any(f in INTEGER_FORMATS for f in formats):
        raise click.UsageError(f"--c-array writes the integer models ({', '.join(INTEGER_FORMATS)}); add --int8 or --int16x8")
    try:
        network = load_network(cfg, model_path)
        export_tflite(network, cfg, Path(out_dir) if out_dir else model_path.parent, formats,
                      int8_input=input_type, layout=layout, name=name, check=not no_check,
                      fold_bgr=not keep_bgr_gather, c_array=c_array, vela=vela, calibrator=calibrator)
    except (ExportError, ModelLoadError) as e:
        raise click.ClickException(str(e)) from None


if __name__ == "__main__":
    run_standalone(export_command, "python -m rtmdet_keras.export")
