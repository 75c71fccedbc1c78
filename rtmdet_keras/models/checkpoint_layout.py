"""Checkpoint key names: mmdetection's and SSCMA's (mmyolo's neck and head names), and their Keras counterparts.

SSCMA (Seeed-Studio/ModelAssistant) checkpoints
    Recognised by their mmyolo-layout keys (``neck.top_down_layers``, ``bbox_head.head_module``) and renamed
    to mmdetection's one to one before the mapping below (:func:`detect_layout`, :data:`_SSCMA_TO_MMDET`);
    messages and reports keep SSCMA's names.

The mapping (layer names are the state-dict keys without the parameter name; see
:mod:`rtmdet_keras.models.rtmdet`)
    ``X.weight`` of a conv ``[out, in, kh, kw]`` -> Keras ``X`` kernel ``[kh, kw, in, out]``; a
    depthwise conv ``[C, 1, kh, kw]`` -> ``[kh, kw, C, 1]``; ``X.bias`` -> bias (channel attention
    ``attention.fc`` and the prediction convs ``rtm_cls``/``rtm_reg`` have one). BatchNorm
    ``weight, bias, running_mean, running_var`` -> ``gamma, beta, moving_mean, moving_variance``.
    (:func:`translate_state_dict`; :func:`torch_name` and :func:`torch_shape` go back, for messages.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

_LIST_LIMIT = 20
# Keras weight name -> PyTorch parameter name, per layer kind.
_BN_PARAMS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_CONV_PARAMS = {"kernel": "weight", "bias": "bias"}

# Checkpoint layouts. SSCMA (Seeed-Studio/ModelAssistant) builds RTMDet from mmyolo's modules: the backbone
# has mmdetection's names, the neck and head do not (sscma/models/necks/cspnext_pafpn.py, BaseYOLONeck;
# sscma/models/heads/rtmdet_head.py, RTMDetHead.head_module = RTMDetSepBNHeadModule). Its neck builds
# reduce_layers 0 and 1 as nn.Identity (no tensors) and reduce_layers.2 as the 1x1 conv on C5; its first
# top-down layer is nn.Sequential(CSPLayer, 1x1 ConvModule), so mmdetection's reduce_layers.1 (the 1x1 on
# T4, at the start of the second top-down step) is SSCMA's top_down_layers.0.1. For the 3-level P5 neck:
LAYOUTS = ("mmdetection", "sscma")
_SSCMA_TO_MMDET = (  # (SSCMA prefix, mmdetection prefix), one to one
    ("neck.reduce_layers.2.", "neck.reduce_layers.0."),
    ("neck.top_down_layers.0.0.", "neck.top_down_blocks.0."),
    ("neck.top_down_layers.0.1.", "neck.reduce_layers.1."),
    ("neck.top_down_layers.1.", "neck.top_down_blocks.1."),
    ("neck.downsample_layers.", "neck.downsamples."),
    ("neck.bottom_up_layers.", "neck.bottom_up_blocks."),
    ("neck.out_layers.", "neck.out_convs."),
    ("bbox_head.head_module.", "bbox_head."),
)
_SSCMA_KEY = re.compile(r"^(?:neck\.(?:top_down_layers|downsample_layers|bottom_up_layers|out_layers)\.|"
                        r"bbox_head\.head_module\.)")
_MMDET_KEY = re.compile(r"^(?:neck\.(?:top_down_blocks|downsamples|bottom_up_blocks|out_convs)\.|"
                        r"bbox_head\.(?:cls_convs|reg_convs|rtm_cls|rtm_reg)\.)")
LAYOUT_NAMES = {"mmdetection": "mmdetection layout", "sscma": "SSCMA/mmyolo layout: neck.top_down_layers, "
                 "bbox_head.head_module"}


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message lists what and why."""


def name_list(names: Iterable[str], limit: int = _LIST_LIMIT) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def detect_layout(keys: Iterable[str]) -> str:
    """``"mmdetection"``, ``"sscma"`` (mmyolo's neck and head names, as SSCMA saves them) or ``"backbone"``
    (only names the two share), from the state-dict keys.

    Raises:
        CheckpointError: keys of both layouts, or an SSCMA QAT (TinyNN) model, whose tensors are not RTMDet's.
    """
    keys = list(keys)
    if keys and sum(k.startswith("_model.") for k in keys) > len(keys) // 2:
        raise CheckpointError(
            "this is an SSCMA QAT checkpoint (RtmdetQuantModel: a TinyNN-traced graph under '_model.', with "
            "fake-quantisation tensors), not an RTMDet state dict: give the float checkpoint the QAT run started "
            "from (its load_from, e.g. work_dirs/rtmdet_nano_8xb32_300e_coco_relu/epoch_N.pth) and run "
            "rtmdet_keras' own qat on it")
    sscma = [k for k in keys if _SSCMA_KEY.match(k)]
    mmdet = [k for k in keys if _MMDET_KEY.match(k)]
    if sscma and mmdet:
        raise CheckpointError(f"the state dict mixes SSCMA/mmyolo names ({sscma[0]}) and mmdetection names "
                              f"({mmdet[0]}): it is neither layout; was it edited by hand?")
    return "sscma" if sscma else "mmdetection" if mmdet else "backbone"


def sscma_to_mmdetection_name(key: str) -> str:
    """An SSCMA/mmyolo state-dict key -> the mmdetection key of the same tensor (other keys unchanged)."""
    for theirs, ours in _SSCMA_TO_MMDET:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return key


def mmdetection_to_sscma_name(key: str) -> str:
    """The inverse of :func:`sscma_to_mmdetection_name` (for messages that name SSCMA's tensors)."""
    for theirs, ours in _SSCMA_TO_MMDET:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key


def translate_state_dict(state_dict: Mapping) -> Tuple[Dict[str, np.ndarray], Dict[str, str], List[str]]:
    """mmdetection names and layouts -> ``"layer/weight"`` names and Keras layouts, by key alone.

    ``M.weight`` 4-D -> ``M/kernel`` ``[kh, kw, in, out]`` (a depthwise ``[C, 1, kh, kw]`` becomes
    ``[kh, kw, 1, C]`` here and is reshaped to ``[kh, kw, C, 1]`` when it meets its layer); 2-D
    (``nn.Linear``) -> ``M/kernel`` transposed. For a module with ``running_mean`` (BatchNorm):
    ``weight, bias, running_mean, running_var`` -> ``gamma, beta, moving_mean, moving_variance``;
    otherwise ``M.bias`` -> ``M/bias``. ``num_batches_tracked`` is dropped; any other parameter name
    is kept as ``M/<name>`` (and will be reported unused).

    An SSCMA (mmyolo-layout) state dict (see :func:`detect_layout`) is renamed to mmdetection's names
    first (:func:`sscma_to_mmdetection_name`); ``origin`` keeps SSCMA's own names.

    Returns:
        ``(table, origin, ignored)``: arrays by Keras key, the source key of each, the dropped keys.
    """
    layout = detect_layout(state_dict)
    rename = sscma_to_mmdetection_name if layout == "sscma" else (lambda k: k)
    bn_modules = {rename(k)[: -len(".running_mean")] for k in state_dict if k.endswith(".running_mean")}
    table: Dict[str, np.ndarray] = {}
    origin: Dict[str, str] = {}
    ignored = []
    for source_key, value in state_dict.items():
        key = rename(source_key)
        module, _, param = key.rpartition(".")
        value = np.asarray(value)
        if param == "num_batches_tracked":
            ignored.append(source_key)
            continue
        if module in bn_modules:
            name = {v: k for k, v in _BN_PARAMS.items()}.get(param, param)
        elif param == "weight" and value.ndim == 4:
            name, value = "kernel", value.transpose(2, 3, 1, 0)
        elif param == "weight" and value.ndim == 2:
            name, value = "kernel", value.T
        else:
            name = param
        if value.dtype.kind == "f":
            value = value.astype(np.float32)
        keras_key = f"{module}/{name}"
        if keras_key in table:
            raise CheckpointError(f"{source_key} and {origin[keras_key]} both map to {keras_key}")
        table[keras_key] = np.ascontiguousarray(value)
        origin[keras_key] = source_key
    return table, origin, ignored


def torch_name(keras_key: str, layout: Optional[str] = None) -> str:
    """``layer/gamma`` -> ``layer.weight`` (how mmdetection, or SSCMA for ``layout="sscma"``, would name the
    tensor)."""
    layer, _, weight = keras_key.rpartition("/")
    name = f"{layer}.{_BN_PARAMS.get(weight, _CONV_PARAMS.get(weight, weight))}"
    return mmdetection_to_sscma_name(name) if layout == "sscma" else name


def torch_shape(shape, depthwise: bool = False) -> List[int]:
    """A Keras weight shape in PyTorch's layout: conv ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``
    (depthwise ``[kh, kw, C, 1]`` -> ``[C, 1, kh, kw]``); other shapes unchanged."""
    shape = [int(d) for d in shape]
    if len(shape) != 4:
        return shape
    kh, kw, a, b = shape
    return [a, b, kh, kw] if depthwise else [b, a, kh, kw]
