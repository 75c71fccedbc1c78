"""Keras network -> SavedModel -> ``.tflite`` (float32, float16, int8, int16x8): the export itself.

:func:`export_tflite` checks its options and the network against the config, calibrates
(:mod:`rtmdet_keras.export.calibration`), writes one SavedModel (:func:`write_saved_model`), converts it
once per format (:func:`convert_saved_model`), writes each model's JSON and op table
(:mod:`rtmdet_keras.export.metadata`, :mod:`rtmdet_keras.export.mcu`), optionally C arrays and a Vela
compilation, and runs the self-check (:mod:`rtmdet_keras.export.check`). The formats, layouts and the
input contract: :mod:`rtmdet_keras.export`.

int16x8 caveat (a TFLite limitation, not ours): the converter quantises int16x8 with its older quantiser
(``calibrate_and_quantize``; int8 goes through the MLIR one), and when the float graph shares one bias
constant between several convolutions (it merges bit-identical constants, e.g. the same ``-4.595`` prior
bias of an untrained head at every level) that quantiser converts the bias once, with the scale of its
first consumer, and the others read it with the wrong scale. Trained networks have distinct biases; an
untrained one can give saturated outputs (docs/benchmarks.md, "Export targets"); every integer export is
checked for it (:func:`rtmdet_keras.export.mcu.bias_scale_problems`: a WARNING and the model JSON's
``problems``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from rtmdet_keras.boxes import decode_predictions, flatten_levels, make_priors
from rtmdet_keras.export.calibration import (calibration_images, fast_calibration, load_split_for,
                                                 pin_input_range)
from rtmdet_keras.export.check import run_self_check
from rtmdet_keras.export.formats import (CALIBRATORS, DEFAULT_CALIBRATOR, DEFAULT_FORMATS, FORMATS,
                                          INTEGER_FORMATS)
from rtmdet_keras.export.mcu import (bias_scale_problems, format_op_table, graph_summary, int8_graph_problems,
                                     op_report, report_c_array, report_vela)
from rtmdet_keras.export.metadata import export_metadata, write_json
from rtmdet_keras.export.vela import VelaError, find_vela
from rtmdet_keras.files import atomic_write_bytes
from rtmdet_keras.levels import level_names
from rtmdet_keras.models.channel_fold import find_bgr_normalization, fold_channel_reversal
from rtmdet_keras.runtime.layout import DEFAULT_LAYOUT, INPUT_NAME, OUTPUT_LAYOUTS, ExportError
from rtmdet_keras.runtime.loading import check_network_matches_config
from rtmdet_keras.runtime.tflite import TFLiteDetector

TFLITE_SIGNATURE = "serving_batch1"  # the batch-1 signature converted to TFLite (and its name in the .tflite)


def export_outputs(outputs: dict, layout: str, cfg) -> dict:
    """The network's outputs dict -> the exported tensors of ``layout`` (see :mod:`rtmdet_keras.export`)."""
    levels = level_names(cfg.model.strides)
    if layout == "logits":
        return {**{f"cls_{lv}": outputs[f"cls_{lv}"] for lv in levels},
                **{f"reg_{lv}": outputs[f"reg_{lv}"] for lv in levels}}
    if layout == "scores":
        return {**{f"scores_{lv}": tf.sigmoid(outputs[f"cls_{lv}"]) for lv in levels},
                **{f"reg_{lv}": outputs[f"reg_{lv}"] for lv in levels}}
    if layout == "decoded":
        priors = make_priors(int(cfg.imgsz[0]), int(cfg.imgsz[1]), cfg.model.strides)
        scores = tf.sigmoid(flatten_levels(outputs, prefix="cls"))
        return {"scores": scores, "boxes": decode_predictions(outputs, priors, cfg.model.exp_on_reg)}
    raise ValueError(f"unknown output layout {layout!r}; use one of {', '.join(OUTPUT_LAYOUTS)}")


def write_saved_model(network, cfg, path, layout: str = DEFAULT_LAYOUT, dynamic: bool = True,
                      batch1: bool = True) -> Path:
    """A SavedModel of ``network`` whose signatures take ``images float32 [B, H, W, 3]`` (raw 0-255) and
    return the tensors of ``layout`` by name: ``serve`` (also ``serving_default``) with any batch when
    ``dynamic``, and :data:`TFLITE_SIGNATURE` with batch 1, the source of every ``.tflite`` (static
    shapes), when ``batch1``; both are also callable attributes of the loaded object. One file serves
    both: tracing and writing twice would double the time.

    Written with ``tf.saved_model.save`` from the traced concrete functions rather than Keras'
    ``ExportArchive``, which traces every endpoint again while saving and walks all the network's
    layers for lookup tables: 2 traces instead of 4, about 3.5 s instead of 6-8 s for nano at 192
    (docs/benchmarks.md, "int8 export time"), the same signatures and the same ``.tflite`` bit for bit."""
    h, w = (int(v) for v in cfg.imgsz)

    def serve(images):
        return export_outputs(network(images, training=False), layout, cfg)

    functions = {}
    for name, batch, on in (("serve", None, dynamic), (TFLITE_SIGNATURE, 1, batch1)):
        if on:
            spec = tf.TensorSpec([batch, h, w, 3], tf.float32, name=INPUT_NAME)
            functions[name] = tf.function(serve, input_signature=[spec], autograph=False).get_concrete_function()
    if not functions:
        raise ValueError("write_saved_model: nothing to write (dynamic and batch1 both off)")
    module = tf.Module()
    module.variables_used = list({id(v): v for f in functions.values() for v in f.variables}.values())
    for name, function in functions.items():
        setattr(module, name, function)  # a concrete function: saved as it is, not traced again
    signatures = dict(functions)
    signatures["serving_default"] = functions.get("serve", functions.get(TFLITE_SIGNATURE))
    with _captured_stderr():
        tf.saved_model.save(module, str(path), signatures=signatures)
    return Path(path)


@contextlib.contextmanager
def _captured_stderr():
    """Silence the converter's C++ chatter on file descriptor 2; replay it if the block fails."""
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
    activation ranges with XNNPACK kernels (:mod:`rtmdet_keras.export.calibration`), ``"tflite"`` with
    TFLite's own calibrator (reference kernels, several times slower; the same ranges up to float
    rounding).
    """
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
    """The conversion's calibrator: TFLite's own, or (``fast``) :mod:`rtmdet_keras.export.calibration`'s in its place."""
    with contextlib.ExitStack() as stack:
        if fast:
            try:
                stack.enter_context(fast_calibration())
            except RuntimeError as e:
                raise ExportError(f"{e} (--calibrator tflite)") from None
        yield


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
        layout: output layout (see :mod:`rtmdet_keras.export`); ``"logits"`` unless measuring.
        name: file stem (default the config name: ``nano_int8.tflite``).
        saved_model: keep ``<name>_saved_model/`` (``serving_default``: any batch, same outputs; and the
            batch-1 signature the ``.tflite`` files come from).
        check: compare every ``.tflite`` with the Keras network on ``check_images`` images of
            ``check_dataset`` (default: the validation split, else calibration images) and print it.
        fold_bgr: export a BGR network with its channel reversal folded into the first convolution
            (:mod:`rtmdet_keras.models.channel_fold`: no GATHER in the graph, same outputs); False keeps
            the GATHER.
        c_array: also write each integer model as ``<stem>.cc``/``<stem>.h`` for TFLite Micro
            (:mod:`rtmdet_keras.export.c_array`).
        vela: compile the int8 model for an Ethos-U NPU with Arm's Vela (:mod:`rtmdet_keras.export.vela`):
            ``{"accelerator": "ethos-u55-64", "system_config": ..., "memory_mode": ..., "config_file": ...}``
            (keys optional); writes ``<stem>_vela.tflite`` (``paths["vela"]``), ``_vela.txt`` and ``_vela.json``.
        calibrator: how int8 activation ranges are recorded: ``"fast"`` (XNNPACK kernels, see
            :mod:`rtmdet_keras.export.calibration`) or ``"tflite"`` (TFLite's calibrator, reference kernels).

    Returns:
        ``{"saved_model": dir, "<format>": .tflite path}``; beside each ``.tflite`` lie
        ``<stem>.json`` (metadata, op report, self-check) and ``<stem>_ops.txt``.
    """
    formats, int8_input = _checked_options(formats, int8_input or cfg.export.int8_input_type, layout, vela)
    check_network_matches_config(network, cfg)
    exported = _exported_network(network, fold_bgr, print_fn)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or cfg.name

    calib = None
    if any(f in INTEGER_FORMATS for f in formats):
        if calib_dataset is None:
            calib_dataset = load_split_for(cfg, "train", "int8 calibration needs the training images")
        calib = calibration_images(cfg, calib_dataset)
        print_fn(f"int8 calibration: {len(calib)} images through the evaluation transform "
                 f"({cfg.imgsz[0]}x{cfg.imgsz[1]} letterbox)")
    job = {"cfg": cfg, "layout": layout, "class_names": _class_names(cfg, calib_dataset, check_dataset),
           "calib": calib, "int8_input": int8_input, "calibrator": calibrator, "c_array": c_array, "vela": vela,
           "print_fn": print_fn}
    with tempfile.TemporaryDirectory(prefix="rtmdet_export_") as tmp:
        paths = _write_models(exported, out_dir, name, Path(tmp), formats, saved_model, job)
    if check and any(f in paths for f in FORMATS):
        run_self_check(network, cfg, paths, formats, check_dataset, check_images, calib, print_fn)
    return paths


def _checked_options(formats, int8_input, layout, vela):
    """``(formats without repeats, int8_input)``, or :class:`ExportError` for an unknown or contradicting
    option; finds Vela before the conversion, not after it."""
    formats = tuple(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ExportError(f"unknown format(s) {bad}; use {', '.join(FORMATS)}")
    if int8_input not in ("int8", "uint8"):
        raise ExportError(f"int8 input type must be int8 or uint8, got {int8_input!r}")
    if layout not in OUTPUT_LAYOUTS:
        raise ExportError(f"unknown output layout {layout!r}; use one of {', '.join(OUTPUT_LAYOUTS)}")
    if vela is not None:
        if "int8" not in formats:
            raise ExportError("Vela compiles the int8 model: add int8 to the formats (--int8)")
        try:
            find_vela()  # before the conversion, not after it
        except VelaError as e:
            raise ExportError(str(e)) from None
    return formats, int8_input


def _exported_network(network, fold_bgr, print_fn):
    """``network``, or (``fold_bgr`` and a BGR network) a copy with the channel reversal in its stem conv."""
    if fold_bgr and find_bgr_normalization(network) is not None:
        exported = fold_channel_reversal(network)
        print_fn("BGR channel reversal folded into the first convolution (no GATHER in the graph)")
        return exported
    return network


def _write_models(exported, out_dir, name, tmp, formats, saved_model, job) -> Dict[str, Path]:
    """The SavedModel (kept as ``<name>_saved_model`` when ``saved_model``, else in ``tmp``) and one
    ``.tflite`` per format with its JSON, op table and the MCU files ``job`` asks for."""
    cfg, print_fn = job["cfg"], job["print_fn"]
    paths: Dict[str, Path] = {}
    t0 = time.perf_counter()
    if saved_model:
        source = paths["saved_model"] = write_saved_model(exported, cfg, out_dir / f"{name}_saved_model",
                                                          job["layout"])
    else:
        source = write_saved_model(exported, cfg, tmp / "batch1", job["layout"], dynamic=False)
    saved_model_seconds = time.perf_counter() - t0
    print_fn(f"SavedModel{': ' + str(source) if saved_model else ' (temporary)'}: {saved_model_seconds:.1f} s")
    for fmt in formats:
        t0 = time.perf_counter()
        flat = convert_saved_model(source, fmt, job["calib"] if fmt in INTEGER_FORMATS else None, job["int8_input"],
                                   job["calibrator"])
        seconds = time.perf_counter() - t0
        path = paths[fmt] = out_dir / f"{name}_{fmt}.tflite"
        atomic_write_bytes(path, flat)
        meta = _describe_model(path, fmt, job, {"saved_model": round(saved_model_seconds, 2),
                                                "convert": round(seconds, 2)}, seconds)
        if job["c_array"] and fmt in INTEGER_FORMATS:
            report_c_array(path, meta, print_fn)
        if job["vela"] is not None and fmt == "int8":
            paths["vela"] = report_vela(path, meta, job["vela"], job["c_array"], print_fn)
    return paths


def _describe_model(path, fmt, job, export_seconds, seconds) -> dict:
    """Write ``<stem>_ops.txt`` and ``<stem>.json`` beside a new ``.tflite``, print its op table and
    problems; returns the metadata."""
    cfg, print_fn = job["cfg"], job["print_fn"]
    with _captured_stderr():  # LiteRT announces its XNNPACK delegate on stderr
        summary = graph_summary(path)
        detector = TFLiteDetector(path)
    ops = op_report(summary)
    table = format_op_table(ops)
    path.with_name(f"{path.stem}_ops.txt").write_text(table)
    meta = export_metadata(detector, cfg, fmt, job["layout"], job["class_names"], ops)
    meta["export_seconds"] = export_seconds
    if fmt in INTEGER_FORMATS:
        meta["calibration_images"] = int(len(job["calib"]))
        meta["calibrator"] = job["calibrator"] if fmt == "int8" else "tflite"
    if fmt == "int8":
        meta["problems"] = int8_graph_problems(summary, job["int8_input"])
    if fmt in INTEGER_FORMATS:
        meta["problems"] = meta.get("problems", []) + bias_scale_problems(summary)
    write_json(path.with_suffix(".json"), meta)
    print_fn(f"\n{path} ({path.stat().st_size / 1024:.0f} KiB, {seconds:.1f} s): "
             f"input {meta['input']['dtype']} {meta['input']['shape']}"
             + (f" q={meta['input']['quantization']}" if meta["input"]["quantization"] else ""))
    print_fn(table.rstrip())
    for problem in meta.get("problems", []):
        print_fn(f"WARNING: {problem}")
    return meta
