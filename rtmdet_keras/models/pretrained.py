"""Start from COCO-pretrained weights: mmdetection RTMDet and CSPNeXt checkpoints into the Keras model,
and SSCMA-trained ones (mmyolo's neck and head names; :mod:`rtmdet_keras.models.checkpoint_layout`).

Three entry points, one mapping:

- :func:`load_pretrained` (called by training when ``load_from`` or ``backbone_weights`` is set),
- :func:`load_weights` (any source into any network built by :func:`rtmdet_keras.models.build_model`),
- :func:`convert_checkpoint` / ``rtmdet convert-checkpoint IN.pth OUT.npz --config tiny`` (write a
  converted file once, on a machine that has PyTorch, and train anywhere without it).

Sources
    ``.pth`` / ``.pt``: an mmdetection (mmengine) checkpoint, read with PyTorch (the optional extra
    ``pip install rtmdet_keras[convert]``; imported only for these files). The tensors come
    from ``checkpoint["state_dict"]``: mmengine's ``EMAHook`` swaps the averaged weights into
    ``state_dict`` when it saves, and puts the raw training weights into ``ema_state_dict`` (keys
    ``module.<name>`` plus the ``steps`` counter); published checkpoints keep ``state_dict`` only. So the
    default already is the EMA. ``state_dict_key="ema_state_dict"`` takes the other one (the
    ``module.`` prefix and ``steps`` are dropped). A bare state dict (every value a tensor, optionally
    ``module.``-prefixed as DDP saves it) is accepted too, and so is a backbone saved on its own
    (``stem.0.conv.weight``: read as ``backbone.*`` when loading the backbone only).

    ``.npz``: a converted file (:mod:`rtmdet_keras.models.named_weights_file`). ``.keras``: a model saved by this project (its
    weights are read by layer name, so another class count or a backbone-only load works as for the
    other sources).

SSCMA (Seeed-Studio/ModelAssistant) checkpoints
    Recognised by their mmyolo-layout keys (``neck.top_down_layers``, ``bbox_head.head_module``) and renamed
    to mmdetection's one to one before the mapping; messages and reports keep SSCMA's names. Export,
    evaluation and QAT take them (``.pth`` or converted ``.npz``) through
    :func:`rtmdet_keras.evaluate.load_network`, with another class count an error rather than a fresh start.

Not converted, because they are settings, not weights
    BatchNorm ``eps`` is ``model.bn_eps`` (mmdetection's RTMDet uses PyTorch's 1e-5; a state dict
    does not record it). When the checkpoint carries its training config (mmengine stores it as
    ``meta["cfg"]``) and a ``norm_cfg`` there names another eps, a warning says so. The input
    normalisation is an ``InputNormalization`` layer without weights, built from ``model.channel_order``,
    ``mean`` and ``std``: the mmdetection presets (tiny ... x) already hold mmdetection's BGR
    mean/std.

Where the parts live
    :mod:`~rtmdet_keras.models.checkpoint_torch` reads ``.pth`` files,
    :mod:`~rtmdet_keras.models.checkpoint_layout` names the tensors (mmdetection, SSCMA, Keras) and maps them,
    :mod:`~rtmdet_keras.models.checkpoint_assign` writes them into a model strictly one to one (the
    documented exceptions are listed there), :mod:`~rtmdet_keras.models.named_weights_file` reads and writes
    the converted ``.npz`` files.
"""

from __future__ import annotations

import importlib.util
import re
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import keras
import numpy as np

from rtmdet_keras.models.checkpoint_assign import PARTS, LoadReport, assign_named_weights
from rtmdet_keras.models.checkpoint_layout import LAYOUTS, CheckpointError, detect_layout, translate_state_dict
from rtmdet_keras.models.checkpoint_torch import (
    STATE_DICT_KEYS, TORCH_MISSING, TORCH_SUFFIXES, extract_state_dict, read_torch_checkpoint,
)
from rtmdet_keras.models.named_weights_file import (
    META_KEY, is_named_weights_file, read_named_weights, save_named_weights,
)
from rtmdet_keras.models.rtmdet import build_model  # also registers the custom layers .keras files hold
from rtmdet_keras.models.weights import named_weights

# The loading interface in one place (callers import these from here).
__all__ = [
    "CheckpointError", "LoadReport", "LAYOUTS", "PARTS", "STATE_DICT_KEYS", "TORCH_SUFFIXES", "META_KEY",
    "assign_named_weights", "check_weights_file", "checkpoint_bn_eps", "convert_checkpoint", "detect_layout",
    "is_named_weights_file", "load_pretrained", "load_weights", "named_weights", "read_named_weights",
    "read_source", "save_named_weights",
]


def checkpoint_bn_eps(meta: Mapping) -> List[float]:
    """BatchNorm eps values named by the ``norm_cfg`` entries of the training config in ``meta``
    (mmengine writes it as ``meta["cfg"]``); PyTorch's default 1e-5 for a ``norm_cfg`` without eps.
    Empty when the checkpoint carries no config text."""
    text = next((meta[k] for k in ("cfg", "config") if isinstance(meta.get(k), str)), None)
    if not text:
        return []
    found = set()
    for m in re.finditer(r"norm_cfg\s*=\s*dict\(([^)]*)\)", text):
        eps = re.search(r"\beps\s*=\s*([0-9.eE+-]+)", m.group(1))
        found.add(float(eps.group(1)) if eps else 1e-5)
    return sorted(found)


def _eps_note(eps_values: Iterable[float], cfg) -> Optional[str]:
    eps_values = list(eps_values or [])
    if cfg is None or not eps_values:
        return None
    ours = float(cfg.model.bn_eps)
    if all(abs(e - ours) <= 1e-12 for e in eps_values):
        return None
    return (f"warning: the checkpoint's training config uses BatchNorm eps {', '.join(f'{e:g}' for e in eps_values)} "
            f"but model.bn_eps is {ours:g}: outputs will differ a little; set --cfg-options model.bn_eps=...")


def _check_path(path) -> Path:
    text = str(path)
    if re.match(r"^[a-z]+://", text):
        raise CheckpointError(f"{text} is a URL: rtmdet_keras downloads nothing; fetch the file yourself and "
                              "give its path")
    p = Path(text).expanduser()
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file")
    return p


def read_source(source, state_dict_key: str = "state_dict", print_fn=print):
    """Read any supported source into ``(table, origin, ignored, meta, label)`` (see :func:`load_weights`)."""
    if isinstance(source, Mapping):
        state, meta, ignored = extract_state_dict(source, state_dict_key)
        table, origin, dropped = translate_state_dict(state)
        return table, origin, ignored + dropped, {**meta, "layout": detect_layout(state)}, "state dict"
    path = _check_path(source)
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        state, meta, ignored = extract_state_dict(read_torch_checkpoint(path, print_fn), state_dict_key)
        table, origin, dropped = translate_state_dict(state)
        return table, origin, ignored + dropped, {**meta, "layout": detect_layout(state)}, str(path)
    if suffix == ".npz":
        table, meta = read_named_weights(path)
        return table, {}, [], meta, str(path)
    if suffix == ".keras":
        try:
            saved = keras.saving.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: cannot load this .keras model ({type(e).__name__}: {e})") from None
        return named_weights(saved), {}, [], {}, str(path)
    raise CheckpointError(f"{path}: unsupported file type {suffix or '(none)'}; give an mmdetection checkpoint "
                          f"({', '.join(TORCH_SUFFIXES)}), a converted .npz or a .keras model")


def check_weights_file(source, setting: str = "load_from") -> None:
    """Check, without reading its tensors, that ``source`` can be read by :func:`load_weights`: a file
    of a supported kind, torch installed for a ``.pth``, a converted ``.npz`` (not a training checkpoint).
    Training calls it before loading any data, so a wrong path costs a second, not a data load.

    Raises:
        CheckpointError: one line naming ``setting`` (the config key), the file and what to do.
    """
    try:
        path = _check_path(source)
        suffix = path.suffix.lower()
        if suffix in TORCH_SUFFIXES:
            if importlib.util.find_spec("torch") is None:
                raise CheckpointError(TORCH_MISSING.format(path=path))
        elif suffix == ".npz":
            try:
                with np.load(path) as data:
                    names = set(data.files)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise CheckpointError(f"{path}: not a readable .npz file ({e})") from None
            if META_KEY not in names:
                hint = (" It is a training checkpoint (epoch_N.ckpt.npz): continue that run with --resume, or "
                        "fine-tune from its best_coco_bbox_mAP.keras." if "meta" in names else "")
                raise CheckpointError(f"{path}: not a converted rtmdet_keras weights file (no {META_KEY}).{hint}")
        elif suffix == ".keras":
            if not zipfile.is_zipfile(path):
                raise CheckpointError(f"{path}: not a .keras model (not a zip archive)")
        else:
            raise CheckpointError(f"{path}: unsupported file type {suffix or '(none)'}; give an mmdetection "
                                  f"checkpoint ({', '.join(TORCH_SUFFIXES)}), a converted .npz or a .keras model")
    except CheckpointError as e:
        raise CheckpointError(f"{setting}: {e}") from None


def _prefix_bare_backbone(table: Dict[str, np.ndarray], origin: Dict[str, str]):
    """A backbone saved on its own (``model.backbone.state_dict()``: ``stem.0.conv.weight``) gets the
    ``backbone.`` prefix that mmdetection's ``init_cfg=dict(prefix="backbone.")`` would strip."""
    if any(k.startswith("backbone.") for k in table) or not any(k.startswith(("stem.", "stage")) for k in table):
        return table, origin, None
    origin = {f"backbone.{k}": origin.get(k, k) for k in table}
    note = "the tensors have no 'backbone.' prefix: read as backbone.*"
    return {f"backbone.{k}": v for k, v in table.items()}, origin, note


def load_weights(network, source, *, part: Optional[str] = None, cfg=None, state_dict_key: str = "state_dict",
                 strict_classes: bool = False, print_fn=print) -> LoadReport:
    """Load ``source`` into ``network`` by layer name, strictly one to one (see the module docstring).

    Args:
        network: a model from :func:`rtmdet_keras.models.build_model` (Keras 3 or the tf_keras twin).
        source: path of a ``.pth``/``.pt`` (mmdetection or SSCMA), ``.npz`` (converted) or ``.keras`` file,
            or an already-loaded checkpoint dict / state dict of arrays with mmdetection or SSCMA key names.
        part: None for the whole network, ``"backbone"`` for ``backbone.*`` only.
        cfg: the run's config, for the BatchNorm eps check (optional).
        state_dict_key: ``"state_dict"`` (EMA weights in mmengine checkpoints) or ``"ema_state_dict"``.
        strict_classes: another class count is an error (see :func:`assign_named_weights`).

    Returns:
        A :class:`LoadReport`; its summary has been printed with ``print_fn``.

    Raises:
        CheckpointError: unreadable source or a mismatch (nothing is loaded then).
    """
    table, origin, ignored, meta, label = read_source(source, state_dict_key, print_fn)
    prefix_note = None
    if part == "backbone":
        table, origin, prefix_note = _prefix_bare_backbone(table, origin)
    report = assign_named_weights(network, table, part=part, origin=origin, source=label, ignored=ignored,
                                  layout=meta.get("layout") if origin else None, strict_classes=strict_classes)
    if prefix_note:
        report.notes.insert(0, prefix_note)
    if not origin and meta.get("source_layout") == "sscma":
        report.notes.append("converted from an SSCMA/mmyolo-layout checkpoint")
    note = _eps_note(meta.get("checkpoint_bn_eps") if "checkpoint_bn_eps" in meta else checkpoint_bn_eps(meta), cfg)
    if note:
        report.notes.append(note)
    print_fn(report.summary())
    return report


def load_pretrained(network, cfg, print_fn=print) -> List[LoadReport]:
    """Load ``cfg.load_from`` (whole detector) or ``cfg.backbone_weights`` (backbone only) into ``network``.

    As in mmdetection, ``load_from`` wins when both are set (it covers the backbone too); the
    backbone file is then not read. Returns the reports of what was loaded (empty if neither is set).
    """
    if cfg.load_from:
        if cfg.backbone_weights:
            print_fn(f"backbone_weights={cfg.backbone_weights} not loaded: load_from={cfg.load_from} sets "
                     "the whole detector, backbone included")
        return [load_weights(network, cfg.load_from, cfg=cfg, print_fn=print_fn)]
    if cfg.backbone_weights:
        return [load_weights(network, cfg.backbone_weights, part="backbone", cfg=cfg, print_fn=print_fn)]
    return []


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def convert_checkpoint(source, out_path, cfg, state_dict_key: str = "state_dict", print_fn=print) -> LoadReport:
    """Convert an mmdetection or SSCMA checkpoint to a name-keyed ``.npz`` after loading it into the model
    of ``cfg`` (so the file is known to fit that architecture).

    ``num_classes`` is taken from the checkpoint (``bbox_head.rtm_cls.0``), so the file keeps every
    class conv; a fine-tune with another ``num_classes`` re-initialises only those. A checkpoint with
    no ``bbox_head`` (ImageNet CSPNeXt) is converted as a backbone (for ``backbone_weights``).

    Args:
        source: ``.pth`` path or a checkpoint dict of arrays.
        out_path: the ``.npz`` to write.
        cfg: config of the architecture (preset).
    """
    out_path = Path(out_path)
    if out_path.suffix != ".npz":
        raise CheckpointError(f"{out_path}: the converted file must end in .npz (a name-keyed NumPy archive)")
    table, origin, ignored, meta, label = read_source(source, state_dict_key, print_fn)
    head = [k for k in table if k.startswith("bbox_head.")]
    part = None if head else "backbone"
    prefix_note = None
    if part == "backbone":
        table, origin, prefix_note = _prefix_bare_backbone(table, origin)
    cls_kernel = table.get("bbox_head.rtm_cls.0/kernel")
    run_cfg = cfg
    if cls_kernel is not None and int(cls_kernel.shape[-1]) != int(cfg.num_classes):
        num_classes = int(cls_kernel.shape[-1])
        print_fn(f"num_classes {num_classes} from the checkpoint (the config says {cfg.num_classes}): the converted "
                 f"file keeps all {num_classes} class convs")
        run_cfg = replace(cfg, num_classes=num_classes, class_names=None)
    network = build_model(run_cfg)
    report = assign_named_weights(network, table, part=part, origin=origin, source=label, ignored=ignored,
                                  layout=meta.get("layout"))
    if prefix_note:
        report.notes.insert(0, prefix_note)
    eps = checkpoint_bn_eps(meta)
    note = _eps_note(eps, cfg)
    if note:
        report.notes.append(note)
    dataset_meta = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), Mapping) else {}
    classes = dataset_meta.get("classes")
    class_names = [str(c) for c in classes] if isinstance(classes, (list, tuple)) else None
    save_named_weights(out_path, named_weights(network, part), {
        "source": str(source) if not isinstance(source, Mapping) else "state dict",
        "state_dict_key": state_dict_key,
        "part": part,
        "num_classes": int(run_cfg.num_classes) if part is None else None,
        "class_names": class_names if part is None else None,
        "preset": cfg.preset,
        "model": cfg.to_dict()["model"],
        "checkpoint_bn_eps": eps,
        "source_layout": meta.get("layout"),
    })
    print_fn(report.summary())
    print_fn(f"wrote {out_path} ({'backbone only' if part else 'whole detector'}); fine-tune with "
             f"--cfg-options {'backbone_weights' if part else 'load_from'}={out_path}")
    return report
