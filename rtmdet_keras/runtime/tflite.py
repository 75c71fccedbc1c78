"""Run an exported ``.tflite`` detector and get the Keras network's outputs back.

:class:`TFLiteDetector` loads a model written by :func:`rtmdet_keras.export.convert.export_tflite` (or any
TFLite file with the same input/output names), quantises the input image when the model is int8,
runs the interpreter and dequantises the outputs. Calling it returns the *network contract*
``{"cls_pX": logits [B, h, w, C], "reg_pX": raw ltrb distances [B, h, w, 4]}`` as float32 NumPy
arrays, whatever output layout the file uses (:mod:`rtmdet_keras.runtime.layout`), so
:func:`rtmdet_keras.postprocess.decode_and_nms` decodes a TFLite model exactly as it decodes Keras.

Uses ``ai_edge_litert`` (``tf.lite.Interpreter`` is deprecated). No TensorFlow import here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from rtmdet_keras.runtime.layout import (check_layout_shapes, detect_layout, layout_num_classes,
                                         layout_to_network_outputs)

TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4-8 of every .tflite


class TFLiteModelError(ValueError):
    """A file is not a usable TFLite detector; the message names the file and says what to do."""


def check_tflite_file(path) -> Path:
    """Fail early, with a message a person can act on, when ``path`` is missing or not a TFLite model."""
    path = Path(path)
    if not path.exists():
        raise TFLiteModelError(f"{path}: no such file")
    if path.is_dir():
        raise TFLiteModelError(f"{path}: is a directory, not a .tflite file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    if size < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise TFLiteModelError(
            f"{path}: not a TFLite model (a .tflite file carries the identifier 'TFL3' in bytes 4-8; this "
            f"file has {head[4:8]!r}, {size} bytes). Export one with `rtmdet export`.")
    return path


def read_export_metadata(tflite_path) -> Optional[dict]:
    """The JSON that :func:`~rtmdet_keras.export.convert.export_tflite` writes beside a model
    (``nano_int8.tflite`` -> ``nano_int8.json``), or None when there is none."""
    side = Path(tflite_path).with_suffix(".json")
    if not side.exists():
        return None
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError):
        return None


def quantize(x, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Float -> integer with TFLite's affine scheme ``q = round(x / scale) + zero_point``, saturated."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale: float, zero_point: int) -> np.ndarray:
    """Integer -> float: ``(q - zero_point) * scale``."""
    return (np.asarray(q, np.float32) - np.float32(zero_point)) * np.float32(scale)


def _tensor_quantization(details: dict):
    """``(scale, zero_point)`` of a per-tensor quantised tensor, or None for a float tensor."""
    qp = details.get("quantization_parameters") or {}
    scales = np.asarray(qp.get("scales", []))
    if scales.size == 0:
        scale, zp = details.get("quantization", (0.0, 0))
        return (float(scale), int(zp)) if scale else None
    if scales.size != 1:
        raise TFLiteModelError(f"tensor {details['name']} is quantised per axis; inputs and outputs must be per tensor")
    return float(scales[0]), int(np.asarray(qp["zero_points"])[0])


class TFLiteDetector:
    """An exported detector run by the LiteRT interpreter.

    Args:
        path: ``.tflite`` file (float32, float16 or int8, any output layout of the export).
        num_threads: interpreter threads (None: LiteRT's default).
        cfg: optional config; when given, its ``imgsz``, ``num_classes`` and strides are checked against
            the model's tensors (mismatch -> :class:`TFLiteModelError` naming both).

    Attributes:
        input_shape: ``(1, H, W, 3)``; ``input_dtype``: ``np.float32``, ``np.int8`` or ``np.uint8``.
        input_quantization / output_quantization: ``(scale, zero_point)`` or None for float tensors.
        layout: the output layout (``"logits"``, ``"scores"`` or ``"decoded"``).
        metadata: the JSON written beside the model by the export (None if absent).
    """

    def __init__(self, path, num_threads: Optional[int] = None, cfg=None):
        self.path = check_tflite_file(path)
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise TFLiteModelError(
                f"{self.path}: the TFLite interpreter cannot load it ({e}). The file is corrupt or truncated "
                f"(an interrupted copy or export?): export it again.") from None
        signatures = self.interpreter.get_signature_list()
        if not signatures:
            raise TFLiteModelError(f"{self.path}: the model has no signature, so its outputs cannot be told apart "
                                   f"by name; export it with `rtmdet export`")
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        self.signature_key = key
        self.runner = self.interpreter.get_signature_runner(key)
        inputs = self.runner.get_input_details()
        if len(inputs) != 1:
            raise TFLiteModelError(f"{self.path}: expected one input image, found inputs {sorted(inputs)}")
        self.input_name, in_det = next(iter(inputs.items()))
        self.input_shape = tuple(int(v) for v in in_det["shape"])
        self.input_dtype = np.dtype(in_det["dtype"]).type
        self.input_quantization = _tensor_quantization(in_det)
        if len(self.input_shape) != 4 or self.input_shape[0] != 1 or self.input_shape[3] != 3:
            raise TFLiteModelError(f"{self.path}: input {self.input_name} has shape {self.input_shape}; "
                                   f"expected (1, H, W, 3)")
        self.output_details = self.runner.get_output_details()
        self.output_quantization = {k: _tensor_quantization(d) for k, d in self.output_details.items()}
        self.metadata = read_export_metadata(self.path)
        try:
            self.layout = detect_layout(self.output_details)
        except ValueError as e:
            raise TFLiteModelError(f"{self.path}: {e}") from None
        if cfg is not None:
            self.check_config(cfg)

    # ------------------------------------------------------------------ facts about the model
    @property
    def imgsz(self):
        """``(height, width)`` of the input in pixels."""
        return self.input_shape[1], self.input_shape[2]

    @property
    def num_classes(self) -> int:
        return layout_num_classes(self.layout, {k: d["shape"] for k, d in self.output_details.items()})

    @property
    def is_int8(self) -> bool:
        return self.input_quantization is not None or any(q is not None for q in self.output_quantization.values())

    def check_config(self, cfg) -> None:
        """Raise :class:`TFLiteModelError` when the config's ``imgsz``/``num_classes`` differ from the model's."""
        h, w = (int(v) for v in cfg.imgsz)
        if (h, w) != tuple(self.imgsz):
            raise TFLiteModelError(
                f"{self.path}: the model takes {self.imgsz[0]}x{self.imgsz[1]} images but the config has "
                f"imgsz {[h, w]}; pass --cfg-options imgsz='({self.imgsz[0]},{self.imgsz[1]})'")
        if self.num_classes != int(cfg.num_classes):
            raise TFLiteModelError(
                f"{self.path}: the model predicts {self.num_classes} classes but the config has num_classes "
                f"{cfg.num_classes}; pass --cfg-options num_classes={self.num_classes}")
        try:
            check_layout_shapes(self.layout, {k: tuple(d["shape"]) for k, d in self.output_details.items()},
                                cfg)
        except ValueError as e:
            raise TFLiteModelError(f"{self.path}: {e}") from None

    # ------------------------------------------------------------------ running
    def prepare_input(self, image) -> np.ndarray:
        """Raw letterboxed image ``[H, W, 3]`` or ``[1, H, W, 3]`` (RGB 0-255, any numeric dtype) -> the
        input tensor (quantised for an int8/uint8 model)."""
        x = np.asarray(image)
        if x.ndim == 3:
            x = x[None]
        if x.shape != self.input_shape:
            raise ValueError(f"{self.path}: image of shape {x.shape[1:]} given, the model takes {self.input_shape[1:]}")
        if self.input_quantization is None:
            return x.astype(np.float32)
        scale, zp = self.input_quantization
        return quantize(x, scale, zp, self.input_dtype)

    def run_raw(self, image) -> Dict[str, np.ndarray]:
        """One image -> the model's own outputs by name, dequantised to float32, batch 1."""
        out = self.runner(**{self.input_name: self.prepare_input(image)})
        result = {}
        for name, value in out.items():
            q = self.output_quantization.get(name)
            result[name] = dequantize(value, *q) if q is not None else np.asarray(value, np.float32)
        return result

    def __call__(self, images, cfg=None) -> Dict[str, np.ndarray]:
        """Images ``[B, H, W, 3]`` (raw letterboxed RGB 0-255) -> the network contract
        ``{"cls_pX": logits, "reg_pX": raw distances}`` as float32 ``[B, h, w, C or 4]``.

        The model runs once per image (it has batch 1). ``cfg`` supplies strides and ``exp_on_reg`` for
        the ``decoded`` layout (taken from the export JSON when omitted).
        """
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        per_image = [self.run_raw(img) for img in images]
        raw = {k: np.concatenate([o[k] for o in per_image], 0) for k in per_image[0]}
        return layout_to_network_outputs(raw, self.layout, **self._decode_params(cfg))

    def _decode_params(self, cfg) -> dict:
        if self.layout != "decoded":
            return {}
        if cfg is not None:
            return {"strides": list(cfg.model.strides), "exp_on_reg": bool(cfg.model.exp_on_reg),
                    "imgsz": self.imgsz}
        if self.metadata is None:
            raise TFLiteModelError(f"{self.path}: a 'decoded' model needs its strides: give the config or keep "
                                   f"the export's JSON beside it")
        d = self.metadata["decode"]
        return {"strides": d["strides"], "exp_on_reg": d["exp_on_reg"], "imgsz": self.imgsz}


def open_interpreter(path) -> Interpreter:
    """A LiteRT interpreter of ``path`` (not allocated), or :class:`TFLiteModelError` saying what is wrong."""
    path = check_tflite_file(path)
    try:
        it = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as e:
        raise TFLiteModelError(f"{path}: the TFLite interpreter cannot load it ({e}); the file is corrupt or "
                               f"truncated: export it again") from None
    return it


__all__ = ["TFLiteDetector", "TFLiteModelError", "check_tflite_file", "read_export_metadata", "quantize",
           "dequantize", "open_interpreter"]
