"""Loading a trained network: which form a model file has, and the Keras network of the Keras forms.

:func:`model_kind` tells ``.tflite``, ``.keras``, training checkpoints (``epoch_N.ckpt.npz``, their EMA
weights), SavedModel folders and mmdetection/SSCMA weights (``.pth`` or a converted ``.npz``) apart;
:func:`load_network` loads the Keras forms into the config's network and checks them against the config
(:func:`check_network_matches_config`, :func:`compare_with_fresh_model`), every mismatch a
:class:`ModelLoadError` that names the file and what to do. The runners of every form:
:mod:`rtmdet_keras.runtime.runners`.
"""

from __future__ import annotations

from pathlib import Path

import click
import keras
import tensorflow as tf

from rtmdet_keras.models.pretrained import TORCH_SUFFIXES, CheckpointError, is_named_weights_file, load_weights
from rtmdet_keras.models import build_model  # the package registers its custom layers for load_model
from rtmdet_keras.runtime.layout import ExportError, check_layout_shapes
from rtmdet_keras.training.checkpoint import load_training_state
from rtmdet_keras.training.detector import RTMDetDetector

KERAS_SUFFIXES = (".keras",)
CHECKPOINT_SUFFIX = ".ckpt.npz"


class ModelLoadError(ValueError):
    """A model file cannot be used with the config; the message names the file and the mismatch."""


def model_kind(path) -> str:
    """``"tflite"``, ``"keras"``, ``"checkpoint"`` (``epoch_N.ckpt.npz``), ``"saved_model"`` or ``"weights"``
    (an mmdetection/SSCMA ``.pth`` or a converted ``.npz``: :mod:`rtmdet_keras.models.pretrained`)."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "saved_model"
        raise ModelLoadError(f"{path}: a folder without saved_model.pb is not a SavedModel")
    if path.suffix == ".tflite":
        return "tflite"
    if path.suffix in KERAS_SUFFIXES:
        return "keras"
    if path.name.endswith(CHECKPOINT_SUFFIX):
        return "checkpoint"
    if path.suffix == ".npz":
        return "weights" if is_named_weights_file(path) else "checkpoint"
    if path.suffix.lower() in TORCH_SUFFIXES:
        return "weights"
    raise ModelLoadError(f"{path}: unknown model type; give a .keras, .ckpt.npz, .tflite, a SavedModel folder, "
                         f"or an mmdetection/SSCMA checkpoint (.pth) or its converted .npz")


def compare_with_fresh_model(network, cfg, source) -> None:
    """Raise :class:`ModelLoadError` when ``network``'s weights (names and shapes) differ from a network
    freshly built from ``cfg``: another preset, other widths or depths, another number of classes."""
    try:
        fresh = build_model(cfg)
    except ValueError as e:
        raise ModelLoadError(f"the config cannot build a network to compare {source} with: {e}") from None
    got = {v.path: tuple(v.shape) for v in network.weights}
    want = {v.path: tuple(v.shape) for v in fresh.weights}
    if got == want:
        return
    diffs = [f"{k} is {got[k]} in the checkpoint, {want[k]} for the config"
             for k in want if k in got and got[k] != want[k]]
    diffs += [f"{k} is missing from the checkpoint" for k in want if k not in got]
    diffs += [f"{k} is in the checkpoint but not in the config's network" for k in got if k not in want]
    m = cfg.model
    raise ModelLoadError(
        f"{source} does not match the config (preset {cfg.preset}, num_classes {cfg.num_classes}, "
        f"widen_factor {m.widen_factor}, deepen_factor {m.deepen_factor}, backbone {m.backbone}): "
        f"{len(got)} weights in the checkpoint, {len(want)} in the config's network; "
        f"{len(diffs)} differ, e.g. {'; '.join(diffs[:3])}. Use the config it was trained with "
        f"(training writes it as config.yaml beside the checkpoints).")


def check_network_matches_config(network, cfg, source="the network") -> None:
    """Raise :class:`ExportError` naming the mismatch when ``network`` does not produce what ``cfg``
    describes: input size, output names, grid sizes, number of classes."""
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


def load_network(cfg, path, ema: bool = True):
    """A Keras functional network from ``.keras`` or ``epoch_N.ckpt.npz`` (its EMA weights when stored
    and ``ema``, else the raw ones), checked against ``cfg`` (input size, classes, weight shapes)."""
    path = Path(path)
    kind = model_kind(path)
    if kind == "keras":
        try:
            network = keras.saving.load_model(str(path), compile=False)
        except Exception as e:  # zip/h5/JSON errors, unknown layers: say which file and what to do
            raise ModelLoadError(f"{path}: cannot load the Keras model ({type(e).__name__}: {str(e)[:300]}); "
                                 f"the file is corrupt, truncated or not a .keras model") from None
        try:
            check_network_matches_config(network, cfg, source=str(path))
        except ExportError as e:
            raise ModelLoadError(str(e)) from None
        compare_with_fresh_model(network, cfg, str(path))
        return network
    if kind == "checkpoint":
        return _network_from_training_state(cfg, path, ema)
    if kind == "weights":
        return _network_from_weights(cfg, path)
    raise ModelLoadError(f"{path}: a {kind} model is not a Keras network; give a .keras, .ckpt.npz, .pth or a "
                         f"converted .npz file")


def _network_from_weights(cfg, path, print_fn=click.echo):
    """The network of ``cfg`` with the weights of an mmdetection / SSCMA checkpoint (``.pth``, read with
    PyTorch) or of its converted ``.npz``, loaded one to one; a class count that differs from
    ``cfg.num_classes`` is an error here (a fresh class conv cannot be exported or evaluated)."""
    try:
        network = build_model(cfg)
    except ValueError as e:
        raise ModelLoadError(f"the config cannot build a network to load {path} into: {e}") from None
    try:
        load_weights(network, path, cfg=cfg, strict_classes=True, print_fn=print_fn)
    except CheckpointError as e:
        raise ModelLoadError(str(e)) from None
    return network


def _network_from_training_state(cfg, path, ema: bool = True):
    try:
        state = load_training_state(path)
    except RuntimeError as e:
        raise ModelLoadError(str(e)) from None
    try:
        network = build_model(cfg)
    except ValueError as e:
        raise ModelLoadError(f"the config cannot build a network to load {path} into: {e}") from None
    detector = RTMDetDetector(network, cfg)
    weights = list(detector.weights)
    saved_paths = state["meta"].get("model_weight_paths") or []
    shapes_differ = any(tuple(v.shape) != tuple(w.shape) for v, w in zip(weights, state["model"]))
    if len(state["model"]) != len(weights) or shapes_differ:
        diffs = [f"{v.path} is {tuple(w.shape)} in the checkpoint, {tuple(v.shape)} for the config"
                 for v, w in zip(weights, state["model"]) if tuple(v.shape) != tuple(w.shape)]
        raise ModelLoadError(
            f"{path} does not match the config (preset {cfg.preset}, num_classes {cfg.num_classes}, widen_factor "
            f"{cfg.model.widen_factor}, deepen_factor {cfg.model.deepen_factor}): it holds {len(state['model'])} "
            f"weight tensors, the config's network {len(weights)}"
            + (f"; e.g. {'; '.join(diffs[:3])}" if diffs else "")
            + ". Use the config it was trained with (config.yaml beside the checkpoints).")
    if saved_paths and len(saved_paths) == len(weights):
        renamed = [(a, v.path) for a, v in zip(saved_paths, weights) if a != v.path]
        if renamed:  # same shapes, other layer names: another network layout
            raise ModelLoadError(f"{path}: weight {renamed[0][0]} of the checkpoint is {renamed[0][1]} in the "
                                 f"config's network; use the config it was trained with")
    for v, w in zip(weights, state["model"]):
        v.assign(w)
    if ema and state["ema"]:
        # The EMA averages every float weight of the detector (BatchNorm statistics included), in order.
        floats = [v for v in weights if v.dtype in ("float32", "float16", "bfloat16", "float64")]
        if len(floats) != len(state["ema"]):
            raise ModelLoadError(f"{path}: {len(state['ema'])} EMA tensors for {len(floats)} float weights")
        for v, w in zip(floats, state["ema"]):
            v.assign(w)
    return network
