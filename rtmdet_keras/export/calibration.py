"""Fast int8 calibration: the activation ranges TFLite's calibrator would record, measured with fast kernels.

``tf.lite.TFLiteConverter`` calibrates a full-integer model by running its float TFLite model on every
representative image with a logging interpreter and keeping, for every float tensor an operator reads
or writes, the smallest and largest value seen (a plain running min/max over all images). That
interpreter runs TFLite's reference kernels, one image at a time: about 3.5 s per 640 px image for
the s preset, so 200 images take 12 minutes, most of an export.

:func:`fast_calibration` swaps the converter's calibrator for :class:`FastCalibrator`, which records the
same statistic of the same tensors of the same float model, but runs it with the optimised kernels
(XNNPACK) on several threads: every non-constant float tensor is made an output of a copy of the
model, so the delegate keeps it and :func:`collect_ranges` can read it after each invoke. The ranges
are written into the model exactly where the calibrator puts them (``quantization.min``/``max`` of
each tensor, :func:`write_ranges`), and the converter's own quantiser does the rest, with every
option of the conversion unchanged: the same operators, the same int8 graph.

Where the ranges differ: the two kernel sets round floats differently (a range may differ in its last
bits), and TFLite's logger apparently credits the output of an operator that runs in place (a
residual ADD writing into its ReLU input's buffer) to that input too, so such a tensor gets the union
of both ranges there and its own range here (a finer scale; the same graph either way). Measured on
nano at 192 px: 5 tensors (the ReLU outputs before the residual ADDs) got other scales, the int8
outputs were identical on 8 images, and the trained demo model's int8 AP50:95 was 0.8676 against 0.8670.
``tests/export/test_calibration.py`` compares both on a small network.

Also here: the images the calibration runs on (:func:`calibration_images`: training images through the
evaluation transform, :func:`pin_input_range`), which the export's self-check reuses
(:func:`dataset_images`).

Only ``calibrate`` (the path of int8 activations with the MLIR quantiser, what
:func:`rtmdet_keras.export.convert.convert_saved_model` uses) is replaced; anything else the converter asks of
the calibrator (e.g. ``calibrate_and_quantize`` for 16-bit activations) goes to TFLite's own.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import flatbuffers
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.python import lite
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.python.optimize.calibrator import Calibrator as TFLiteCalibrator

from rtmdet_keras.data import load_split
from rtmdet_keras.data.images import load_image
from rtmdet_keras.data.pipeline import letterbox
from rtmdet_keras.runtime.layout import ExportError

Ranges = Dict[int, Tuple[float, float]]

_FLOAT32 = 0  # tflite TensorType.FLOAT32


def _model_object(model_content: bytes):
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(model_content), 0))


def _serialize(model) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _is_constant(model, tensor) -> bool:
    buf = model.buffers[tensor.buffer] if tensor.buffer is not None and tensor.buffer < len(model.buffers) else None
    return buf is not None and ((buf.data is not None and len(buf.data) > 0) or bool(getattr(buf, "size", 0)))


def calibrated_tensors(model_content: bytes) -> List[int]:
    """Indices (subgraph 0) of the tensors the calibrator gives a range: every float32 tensor that an
    operator reads or writes, or that is an input or output of the graph, and that holds no constant."""
    model = _model_object(model_content)
    sg = model.subgraphs[0]
    used = set(int(i) for i in (sg.inputs if sg.inputs is not None else []))
    used |= set(int(i) for i in (sg.outputs if sg.outputs is not None else []))
    for op in sg.operators or []:
        for seq in (op.inputs, op.outputs):
            if seq is not None:
                used |= {int(i) for i in seq if i >= 0}
    return sorted(i for i in used
                  if sg.tensors[i].type == _FLOAT32 and not _is_constant(model, sg.tensors[i]))


def _exposed_model(model_content: bytes, tensors: Sequence[int]) -> bytes:
    """A copy of the model whose subgraph 0 outputs every tensor of ``tensors`` (and its own outputs)."""
    model = _model_object(model_content)
    sg = model.subgraphs[0]
    outputs = [int(i) for i in sg.outputs]
    sg.outputs = np.asarray(outputs + [i for i in tensors if i not in set(outputs)], np.int32)
    model.signatureDefs = []  # the extra outputs are read by tensor index
    return _serialize(model)


def collect_ranges(model_content: bytes, samples: Iterable[Sequence[np.ndarray]],
                   num_threads: Optional[int] = None) -> Ranges:
    """Run the float TFLite model on every sample (a list of input arrays in input-tensor order) with
    the default (XNNPACK) kernels and return ``{tensor index: (min, max)}`` over all samples for
    :func:`calibrated_tensors`. A sample's batch may be larger than the model's: the input is resized,
    as TFLite's calibrator does."""
    tensors = calibrated_tensors(model_content)
    exposed = _exposed_model(model_content, tensors)
    it = Interpreter(model_content=exposed, num_threads=num_threads or os.cpu_count() or 1)
    inputs = [d["index"] for d in it.get_input_details()]
    shapes = None
    # TFLite's logger starts at min = FLT_MAX, max = numeric_limits<float>::min() = FLT_MIN (the smallest
    # positive float, not the most negative), so a tensor that is negative everywhere gets max 1.2e-38.
    lo = {i: float(np.finfo(np.float32).max) for i in tensors}
    hi = {i: float(np.finfo(np.float32).tiny) for i in tensors}
    seen, nan = set(), set()
    n = 0
    for sample in samples:
        sample = [np.asarray(x) for x in sample]
        if len(sample) != len(inputs):
            raise ValueError(f"a calibration sample has {len(sample)} arrays, the model takes {len(inputs)} inputs")
        if shapes != [x.shape for x in sample]:
            shapes = [x.shape for x in sample]
            for idx, x in zip(inputs, sample):
                it.resize_tensor_input(idx, list(x.shape), strict=False)
            it.allocate_tensors()
        for idx, x in zip(inputs, sample):
            it.set_tensor(idx, x.astype(np.float32, copy=False))
        it.invoke()
        for i in tensors:
            v = it.tensor(i)()  # a view into the interpreter, valid until the next invoke
            if not v.size:
                continue
            a, b = float(np.min(v)), float(np.max(v))
            if math.isnan(a) or math.isnan(b):  # TFLite skips NaN values (with a warning)
                nan.add(i)
                v = v[~np.isnan(v)]
                if not v.size:
                    continue
                a, b = float(v.min()), float(v.max())
            seen.add(i)
            lo[i], hi[i] = min(lo[i], a), max(hi[i], b)
        v = None  # the interpreter refuses to run while a view into it is alive
        n += 1
    if n == 0:
        raise ValueError("calibration got no samples")
    if nan:
        warnings.warn(f"calibration: {len(nan)} tensors held NaN values (ignored, as TFLite's calibrator does); "
                      f"check the model and the calibration images", RuntimeWarning)
    return {i: (lo[i], hi[i]) for i in tensors if i in seen}


def write_ranges(model_content: bytes, ranges: Ranges) -> bytes:
    """``model_content`` with ``quantization.min = [lo]``, ``quantization.max = [hi]`` on each tensor of
    ``ranges`` (subgraph 0): what TFLite's calibrator hands its quantiser."""
    model = _model_object(model_content)
    tensors = model.subgraphs[0].tensors
    for i, (lo, hi) in ranges.items():
        q = tensors[i].quantization or schema.QuantizationParametersT()
        q.min, q.max = [float(lo)], [float(hi)]
        tensors[i].quantization = q
    return _serialize(model)


def read_ranges(model_content: bytes) -> Ranges:
    """``{tensor index: (min, max)}`` of every tensor of subgraph 0 that carries a calibrated range."""
    model = _model_object(model_content)
    out = {}
    for i, t in enumerate(model.subgraphs[0].tensors):
        q = t.quantization
        if q is not None and q.min is not None and len(q.min) == 1 and q.max is not None and len(q.max) == 1:
            out[i] = (float(q.min[0]), float(q.max[0]))
    return out


def activation_bytes(model_content: bytes) -> int:
    """Bytes of the calibrated tensors of one sample (batch 1): what a copy exposing them all holds."""
    model = _model_object(model_content)
    tensors = model.subgraphs[0].tensors
    return int(sum(4 * int(np.prod(tensors[i].shape if tensors[i].shape is not None else [], dtype=np.int64))
                   for i in calibrated_tensors(model_content)))


def auto_batch_size(model_content: bytes, budget_bytes: int = 512 << 20, largest: int = 8) -> int:
    """Images per invoke: as many as fit ``budget_bytes`` of exposed activations, 1 to ``largest``.
    Batches of a few images run a little faster per image than single ones."""
    return int(max(1, min(largest, budget_bytes // max(activation_bytes(model_content), 1))))


def _batched(dataset_gen: Callable, batch_size: int):
    """Stack consecutive single-image samples of ``dataset_gen()`` (lists of arrays) into batches."""
    pending: List[List[np.ndarray]] = []
    for sample in dataset_gen():
        if not isinstance(sample, (list, tuple)) or isinstance(sample, tuple) and len(sample) == 2 \
                and isinstance(sample[1], dict):
            raise TypeError("fast calibration takes samples as lists of input arrays")
        sample = [np.asarray(x) for x in sample]
        if pending and [x.shape for x in sample] != [x.shape for x in pending[0]]:
            yield [np.concatenate(xs) for xs in zip(*pending)]
            pending = []
        pending.append(sample)
        if len(pending) == batch_size:
            yield [np.concatenate(xs) for xs in zip(*pending)]
            pending = []
    if pending:
        yield [np.concatenate(xs) for xs in zip(*pending)]


class FastCalibrator:
    """Stands in for ``tensorflow.lite.python.optimize.calibrator.Calibrator`` (same constructor):
    ``calibrate`` measures the ranges with :func:`collect_ranges`; every other method is TFLite's."""

    batch_size: Optional[int] = None  # None: auto_batch_size
    num_threads: Optional[int] = None
    calls = 0  # how many models this class calibrated (tests check the converter really used it)

    tflite_calibrator = None  # TFLite's class (set by fast_calibration; default the module's)

    def __init__(self, model_content, custom_op_registerers_by_name=None, custom_op_registerers_by_func=None):
        self._args = (model_content, custom_op_registerers_by_name, custom_op_registerers_by_func)
        self._model_content = bytes(model_content)
        self._custom = bool(custom_op_registerers_by_name or custom_op_registerers_by_func)
        self._tflite_instance = None

    @property
    def _tflite(self):
        if self._tflite_instance is None:
            cls = self.tflite_calibrator or TFLiteCalibrator
            self._tflite_instance = cls(*self._args)
        return self._tflite_instance

    def calibrate(self, dataset_gen):
        if self._custom:  # custom ops need the registerers only TFLite's interpreter wrapper takes
            return self._tflite.calibrate(dataset_gen)
        batch = self.batch_size or auto_batch_size(self._model_content)
        ranges = collect_ranges(self._model_content, _batched(dataset_gen, batch), self.num_threads)
        type(self).calls += 1
        return write_ranges(self._model_content, ranges)

    def __getattr__(self, name):  # anything but calibrate: TFLite's own calibrator
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._tflite, name)


@contextlib.contextmanager
def fast_calibration(batch_size: Optional[int] = None, num_threads: Optional[int] = None):
    """Within the block, ``TFLiteConverter.convert()`` calibrates with :class:`FastCalibrator`.

    Raises ``RuntimeError`` when this TensorFlow's converter no longer calibrates through
    ``tensorflow.lite.python.lite._calibrator.Calibrator`` (then pass ``fast=False`` to the export)."""
    module = getattr(lite, "_calibrator", None)
    if module is None or not hasattr(module, "Calibrator"):
        raise RuntimeError("this TensorFlow's TFLite converter has no lite._calibrator.Calibrator to replace; "
                           "use the standard calibration (fast calibration off)")
    original = module.Calibrator
    cls = type("FastCalibrator", (FastCalibrator,), {"batch_size": batch_size, "num_threads": num_threads,
                                                     "tflite_calibrator": original, "calls": 0})
    module.Calibrator = cls
    try:
        yield cls
    finally:
        module.Calibrator = original


# ---------------------------------------------------------------------------------------------
# Calibration and check images
# ---------------------------------------------------------------------------------------------


def letterbox_image(image, cfg) -> np.ndarray:
    """One image (uint8 ``[h, w, 3]`` RGB) through the evaluation transform -> ``uint8 [H, W, 3]``."""
    out, _ = letterbox(image, cfg.imgsz, int(cfg.augment.pad_val))
    return np.asarray(out, np.uint8)


def dataset_images(dataset, cfg, n: int, seed: int = 0, shuffle: bool = True) -> np.ndarray:
    """Up to ``n`` images of a :class:`~rtmdet_keras.data.records.DetectionDataset`, letterboxed, as
    ``uint8 [n, H, W, 3]``; a random (seeded) choice when ``shuffle``, else the first ``n``."""
    records = list(dataset.records)
    if not records:
        raise ExportError(f"{getattr(dataset, 'source', 'the data set')}: no images")
    n = min(int(n), len(records))
    if shuffle:
        idx = sorted(np.random.default_rng(seed).choice(len(records), n, replace=False).tolist())
    else:
        idx = list(range(n))
    return np.stack([letterbox_image(load_image(records[i].path), cfg) for i in idx])


def as_images(images, cfg, n=None) -> np.ndarray:
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
        calib_dataset = load_split_for(cfg, "train", "int8 calibration needs the training images")
    return as_images(calib_dataset, cfg, n)


def load_split_for(cfg, split, why):
    """The config's ``split``; a reader's error becomes an :class:`ExportError` that says what it was for."""
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
