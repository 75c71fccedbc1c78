"""Every form of a trained detector behind one interface: ``runner(images) -> network outputs``.

:func:`load_model_runner` turns a ``.keras`` file, a training checkpoint, mmdetection/SSCMA weights
(:mod:`rtmdet_keras.runtime.loading`), a SavedModel folder or a ``.tflite``
(:mod:`rtmdet_keras.runtime.tflite`) into a callable ``images uint8 [B, H, W, 3] (letterboxed) ->
{"cls_pX": logits, "reg_pX": raw distances}`` (float32 NumPy) with a ``kind`` attribute, whatever
output layout the model has (:mod:`rtmdet_keras.runtime.layout`). Evaluation, prediction and the
export's self-check decode all of them with :func:`rtmdet_keras.postprocess.decode_and_nms`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from rtmdet_keras.runtime.layout import check_layout_shapes, detect_layout, layout_to_network_outputs
from rtmdet_keras.runtime.loading import ModelLoadError, load_network, model_kind
from rtmdet_keras.runtime.tflite import TFLiteDetector, TFLiteModelError


class KerasRunner:
    """A Keras network as ``images uint8 [B, H, W, 3] -> outputs dict`` (float32 NumPy)."""

    kind = "keras"

    def __init__(self, network):
        self.network = network
        self._call = tf.function(lambda x: network(tf.cast(x, tf.float32), training=False), reduce_retracing=True)

    def __call__(self, images):
        return {k: np.asarray(v) for k, v in self._call(np.asarray(images)).items()}


class SavedModelRunner:
    """A SavedModel's ``serving_default`` (the export's, or Keras' ``model.export``) as
    ``images -> network outputs dict``, whatever export layout it returns."""

    kind = "saved_model"

    def __init__(self, path, cfg):
        self.path = Path(path)
        try:
            self.module = tf.saved_model.load(str(path))
            self.fn = self.module.signatures["serving_default"]
        except Exception as e:
            raise ModelLoadError(f"{path}: cannot load the SavedModel's serving_default signature "
                                 f"({type(e).__name__}: {str(e)[:300]})") from None
        specs = self.fn.structured_input_signature[1]
        if len(specs) != 1:
            raise ModelLoadError(f"{path}: serving_default takes {sorted(specs)}; expected one image input")
        (self.input_name, spec), = specs.items()
        self.batch = spec.shape[0]
        self.dtype = spec.dtype
        shapes = {k: tuple(v.shape) for k, v in self.fn.structured_outputs.items()}
        try:
            self.layout = detect_layout(shapes)
            check_layout_shapes(self.layout, {k: (1,) + tuple(s[1:]) for k, s in shapes.items()}, cfg)
        except ValueError as e:
            raise ModelLoadError(f"{path}: {e}") from None
        self.cfg = cfg

    def __call__(self, images):
        images = np.asarray(images)
        step = self.batch or max(len(images), 1)
        chunks = [images[i:i + step] for i in range(0, len(images), step)]
        outs = [self.fn(**{self.input_name: tf.cast(c, self.dtype)}) for c in chunks]
        raw = {k: np.concatenate([np.asarray(o[k]) for o in outs], 0) for k in outs[0]}
        m = self.cfg.model
        return layout_to_network_outputs(raw, self.layout, strides=list(m.strides), exp_on_reg=m.exp_on_reg,
                                         imgsz=self.cfg.imgsz)


class TFLiteRunner:
    """A ``.tflite`` as ``images -> network outputs dict`` (one interpreter, ``threads`` threads)."""

    kind = "tflite"

    def __init__(self, path, cfg, threads=None):
        try:
            self.detector = TFLiteDetector(path, num_threads=threads, cfg=cfg)
        except TFLiteModelError as e:
            raise ModelLoadError(str(e)) from None
        self.cfg = cfg

    def __call__(self, images):
        return self.detector(images, self.cfg)


def load_model_runner(cfg, path, threads: Optional[int] = None):
    """Any model form -> a callable ``images uint8 [B, H, W, 3] (letterboxed) -> network outputs dict``
    with a ``kind`` attribute; Keras runners also carry ``network``."""
    kind = model_kind(path)
    if kind == "tflite":
        return TFLiteRunner(path, cfg, threads)
    if kind == "saved_model":
        return SavedModelRunner(path, cfg)
    return KerasRunner(load_network(cfg, path))
