"""Start from COCO-pretrained weights: mmdetection RTMDet and CSPNeXt checkpoints into the Keras model,
and SSCMA-trained ones (mmyolo's neck and head names; :func:`detect_layout`, :data:`_SSCMA_TO_MMDET`).

Three entry points, one mapping:

- :func:`load_pretrained` (called by training when ``load_from`` or ``backbone_weights`` is set),
- :func:`load_weights` (any source into any network built by :func:`rtmdet_keras.models.build_model`),
- :func:`convert_checkpoint` / ``rtmdet convert-checkpoint IN.pth OUT.npz --config tiny`` (write a
  converted file once, on a machine that has PyTorch, and train anywhere without it).

Sources
    ``.pth`` / ``.pt``: an mmdetection (mmengine) checkpoint, read with PyTorch (the optional extra
    ``pip install rtmdet_keras[convert]``; imported only here, only for these files). The tensors come
    from ``checkpoint["state_dict"]``: mmengine's ``EMAHook`` swaps the averaged weights into
    ``state_dict`` when it saves, and puts the raw training weights into ``ema_state_dict`` (keys
    ``module.<name>`` plus the ``steps`` counter); published checkpoints keep ``state_dict`` only. So the
    default already is the EMA. ``state_dict_key="ema_state_dict"`` takes the other one (the
    ``module.`` prefix and ``steps`` are dropped). A bare state dict (every value a tensor, optionally
    ``module.``-prefixed as DDP saves it) is accepted too, and so is a backbone saved on its own
    (``stem.0.conv.weight``: read as ``backbone.*`` when loading the backbone only).

    ``.npz``: a converted file (the format below). ``.keras``: a model saved by this project (its
    weights are read by layer name, so another class count or a backbone-only load works as for the
    other sources).

SSCMA (Seeed-Studio/ModelAssistant) checkpoints
    Recognised by their mmyolo-layout keys (``neck.top_down_layers``, ``bbox_head.head_module``) and renamed
    to mmdetection's one to one before the mapping below; messages and reports keep SSCMA's names. Export,
    evaluation and QAT take them (``.pth`` or converted ``.npz``) through
    :func:`rtmdet_keras.evaluate.load_network`, with another class count an error rather than a fresh start.

The mapping (layer names are the state-dict keys without the parameter name; see
:mod:`rtmdet_keras.models.rtmdet`)
    ``X.weight`` of a conv ``[out, in, kh, kw]`` -> Keras ``X`` kernel ``[kh, kw, in, out]``; a
    depthwise conv ``[C, 1, kh, kw]`` -> ``[kh, kw, C, 1]``; ``X.bias`` -> bias (channel attention
    ``attention.fc`` and the prediction convs ``rtm_cls``/``rtm_reg`` have one). BatchNorm
    ``weight, bias, running_mean, running_var`` -> ``gamma, beta, moving_mean, moving_variance``.
    With ``share_conv`` mmdetection's state dict repeats each head tower conv under every level
    (``bbox_head.cls_convs.{l}.{i}.conv.weight``, identical tensors); the Keras model has it once
    (``bbox_head.cls_convs.0.{i}.conv``): the copies are checked to be equal and loaded once. A model
    without shared convs (the tf_keras twin) takes each level's copy.

Strict one-to-one
    Every tensor of the checkpoint is used once and every weight of the (part of the) model is set
    once; anything left over on either side is a :class:`CheckpointError` that lists the names. The
    documented exceptions, each reported in the printed summary:

    - ``*.num_batches_tracked`` (BatchNorm's step counter; Keras has none) and the EMA ``steps``;
    - the class-prediction convs ``bbox_head.rtm_cls.{l}`` when the checkpoint has another number of
      classes: they keep their fresh initialisation (prior probability ``model.prior_prob``);
    - when loading the backbone only, every tensor outside ``backbone.*``: the classifier of an
      ImageNet CSPNeXt checkpoint (``head.fc.weight``, ``head.fc.bias``), or the neck and head of a
      detector checkpoint.

    Nothing is written into the model unless the whole load checks out.

Not converted, because they are settings, not weights
    BatchNorm ``eps`` is ``model.bn_eps`` (mmdetection's RTMDet uses PyTorch's 1e-5; a state dict
    does not record it). When the checkpoint carries its training config (mmengine stores it as
    ``meta["cfg"]``) and a ``norm_cfg`` there names another eps, a warning says so. The input
    normalisation is an ``InputNormalization`` layer without weights, built from ``model.channel_order``,
    ``mean`` and ``std``: the mmdetection presets (tiny ... x) already hold mmdetection's BGR
    mean/std.

Converted-file format (``.npz``)
    A NumPy archive keyed ``"<layer name>/<weight>"`` with float32 arrays in Keras layout, where
    ``<weight>`` is ``kernel``, ``bias``, ``gamma``, ``beta``, ``moving_mean`` or ``moving_variance``
    (``backbone.stem.0.conv/kernel``, ``bbox_head.cls_convs.2.1.bn/moving_variance``), plus
    ``"__meta__"``: UTF-8 JSON as uint8 (``format``, ``version``, ``source``, ``state_dict_key``,
    ``num_classes``, ``class_names``, ``part``, ``model`` settings, ``checkpoint_bn_eps``). Keyed by
    name rather than by position, it loads into any model whose layers carry those names: another
    class count, the backbone only, the tf_keras twin. (A Keras ``save_weights`` file keys layers by
    auto-generated class names such as ``batch_normalization_12``: it loads only into an identical
    model, so it is not used here.)
"""

from __future__ import annotations

import json
import pickle
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import click
import numpy as np

from rtmdet_keras.cli import VariadicCfgCommand, config_options, load_config_or_exit, run_standalone

FORMAT = "rtmdet_keras.named_weights"
FORMAT_VERSION = 1
META_KEY = "__meta__"
TORCH_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt")
STATE_DICT_KEYS = ("state_dict", "ema_state_dict")
PARTS = ("backbone",)  # what ``part=`` may restrict a load to

# Keras weight name -> PyTorch parameter name, per layer kind.
_BN_PARAMS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_CONV_PARAMS = {"kernel": "weight", "bias": "bias"}
_CLASS_CONV = re.compile(r"^bbox_head\.rtm_cls\.(\d+)$")
# A head tower conv, bbox_head.{cls,reg}_convs.{level}.{i}.conv; shared, the model has it at level 0 only.
_HEAD_TOWER_CONV = re.compile(r"^(bbox_head\.(?:cls|reg)_convs\.)(\d+)(\.\d+\.conv)$")
_LIST_LIMIT = 20

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
_LAYOUT_NAMES = {"mmdetection": "mmdetection layout", "sscma": "SSCMA/mmyolo layout: neck.top_down_layers, "
                 "bbox_head.head_module"}


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message lists what and why."""


def _name_list(names: Iterable[str], limit: int = _LIST_LIMIT) -> str:
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


def _shared_conv_name(layer_name: str) -> Optional[str]:
    """``bbox_head.cls_convs.2.1.conv`` -> ``bbox_head.cls_convs.0.1.conv``; None for other names."""
    m = _HEAD_TOWER_CONV.match(layer_name)
    return f"{m.group(1)}0{m.group(3)}" if m else None


@dataclass
class LoadReport:
    """What a load did. Names of checkpoint tensors are the source's own (mmdetection keys for a
    ``.pth``, ``layer/weight`` for a converted file)."""

    source: str
    part: Optional[str] = None
    layers: List[str] = field(default_factory=list)  # Keras layers written
    used: List[str] = field(default_factory=list)  # source tensors used (each exactly once)
    ignored: List[str] = field(default_factory=list)  # documented skips (see the module docstring)
    kept_init: List[str] = field(default_factory=list)  # Keras layers left as initialised (class convs)
    notes: List[str] = field(default_factory=list)  # one line each, printed
    layout: Optional[str] = None  # "mmdetection", "sscma" or "backbone" for a state dict; None for other sources

    def summary(self) -> str:
        what = "backbone weights" if self.part == "backbone" else "weights"
        counted: Dict[str, int] = {}
        for name in self.ignored:
            kind = ("num_batches_tracked" if name.endswith("num_batches_tracked")
                    else "EMA steps" if name == "steps"
                    else "class-prediction tensors" if name.startswith(("bbox_head.rtm_cls.",
                                                                          "bbox_head.head_module.rtm_cls."))
                    else f"outside {self.part}.*")
            counted[kind] = counted.get(kind, 0) + 1
        skipped = "; ignored " + ", ".join(f"{n} {k}" for k, n in counted.items()) if counted else ""
        layout = f" ({_LAYOUT_NAMES[self.layout]})" if self.layout in _LAYOUT_NAMES else ""
        lines = [f"{what} from {self.source}{layout}: {len(self.used)} tensors into {len(self.layers)} layers"
                 f"{skipped}"]
        return "\n".join(lines + self.notes)


# --------------------------------------------------------------------------------------------
# Reading sources
# --------------------------------------------------------------------------------------------

_TORCH_MISSING = (
    "reading the PyTorch checkpoint {path} needs PyTorch, which rtmdet_keras does not install by default: "
    "pip install 'rtmdet_keras[convert]' (the CPU build of torch is enough), or convert it once where "
    "torch is installed (rtmdet convert-checkpoint IN.pth OUT.npz --config PRESET) and use the .npz")


def _restricted_pickle_module(skipped: set):
    """A ``pickle_module`` for ``torch.load`` that rebuilds tensors and plain containers only.

    Any other global (mmengine classes, NumPy scalars in ``meta``, the optimiser's state, ...) becomes
    an inert placeholder instead of being imported and run: the weights are all we read, and a
    checkpoint from the internet should not execute code. Used only when ``weights_only=True``
    refuses the file.
    """
    import torch

    allowed = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor"),
               ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
               ("torch._utils", "_rebuild_parameter_with_state"), ("torch._tensor", "_rebuild_from_type_v2"),
               ("torch.nn.parameter", "Parameter"), ("torch", "Tensor"), ("torch", "Size"), ("torch", "device"),
               ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex")}

    class Placeholder:
        origin = "?"

        def __new__(cls, *args, **kwargs):
            return object.__new__(cls)

        def __init__(self, *args, **kwargs):
            pass

        def __setstate__(self, state):
            pass

        def __repr__(self):
            return f"<skipped {self.origin}>"

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in allowed or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
                return super().find_class(module, name)
            skipped.add(f"{module}.{name}")
            return type(f"Skipped_{name}", (Placeholder,), {"origin": f"{module}.{name}"})

    mod = types.ModuleType("rtmdet_keras_tensors_only_pickle")
    mod.Unpickler = Unpickler
    mod.load = lambda f, **kw: Unpickler(f, **kw).load()
    mod.Pickler = pickle.Pickler
    return mod


def _to_numpy(obj, torch):
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.is_floating_point():
            t = t.float()
        return t.numpy()
    if isinstance(obj, Mapping):
        return {k: _to_numpy(v, torch) for k, v in obj.items()}
    return obj


def read_torch_checkpoint(path, print_fn=print) -> dict:
    """Read a ``.pth`` file into plain dicts of NumPy arrays (float tensors as float32).

    Tries ``torch.load(weights_only=True)`` first; a file that holds other objects too (training
    checkpoints keep mmengine's message hub) is re-read with an unpickler that rebuilds only tensors
    and containers, and the skipped types are printed.

    Raises:
        CheckpointError: torch is not installed, or the file is not a PyTorch checkpoint.
    """
    try:
        import torch
    except ImportError:
        raise CheckpointError(_TORCH_MISSING.format(path=path)) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        skipped: set = set()
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False,
                             pickle_module=_restricted_pickle_module(skipped))
        except Exception as e:  # noqa: BLE001 (any failure here means "not a checkpoint we can read")
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
        if skipped:
            print_fn(f"{path}: read tensors only; left out objects of {len(skipped)} non-tensor types "
                     f"({_name_list(sorted(skipped), 5)})")
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    return _to_numpy(obj, torch)


def _is_array(v) -> bool:
    return isinstance(v, np.ndarray) or (hasattr(v, "shape") and hasattr(v, "dtype"))


def extract_state_dict(checkpoint: Mapping,
                       state_dict_key: str = "state_dict") -> Tuple[Dict[str, np.ndarray], dict, List[str]]:
    """The state dict inside an mmdetection checkpoint, as ``{name: np.ndarray}``.

    Args:
        checkpoint: what ``torch.load`` returned (converted to NumPy), or a bare state dict.
        state_dict_key: ``"state_dict"`` (default; mmengine saves the EMA weights there) or
            ``"ema_state_dict"`` (mmengine saves the raw training weights there).

    Returns:
        ``(state_dict, meta, ignored)``: keys without the ``module.`` prefix; ``meta`` is the
        checkpoint's ``meta`` dict (``{}`` if none); ``ignored`` names the EMA ``steps`` counter if dropped.
    """
    if state_dict_key not in STATE_DICT_KEYS:
        raise CheckpointError(f"state_dict_key must be one of {', '.join(STATE_DICT_KEYS)}, got {state_dict_key!r}")
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"a checkpoint must be a dict, got {type(checkpoint).__name__}")
    meta = {}
    if state_dict_key in checkpoint:
        state = checkpoint[state_dict_key]
        meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), Mapping) else {}
    elif any(k in checkpoint for k in STATE_DICT_KEYS):
        raise CheckpointError(f"the checkpoint has no {state_dict_key!r} (it has {', '.join(map(str, checkpoint))})")
    elif checkpoint and all(_is_array(v) for v in checkpoint.values()):
        state = checkpoint
    else:
        raise CheckpointError(f"no state dict in the checkpoint: expected a 'state_dict' entry or a dict of tensors, "
                              f"found the keys {_name_list(map(str, checkpoint), 10)}")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint[{state_dict_key!r}] is a {type(state).__name__}, not a dict of tensors")
    not_arrays = [k for k, v in state.items() if not _is_array(v)]
    if not_arrays:
        raise CheckpointError(f"checkpoint[{state_dict_key!r}] holds entries that are not tensors: "
                              f"{_name_list(not_arrays)}")
    state = {str(k): np.asarray(v) for k, v in state.items()}
    ignored = []
    if state_dict_key == "ema_state_dict" and "steps" in state:
        del state["steps"]  # ExponentialMovingAverage's update counter, not a weight
        ignored.append("steps")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, dict(meta), ignored


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


# --------------------------------------------------------------------------------------------
# Converted files
# --------------------------------------------------------------------------------------------


def _weight_suffix(variable) -> str:
    """Keras 3 ``kernel`` / tf_keras ``backbone.stem.0.conv/kernel:0`` -> ``kernel``."""
    name = variable.name.split("/")[-1].split(":")[0]
    return "kernel" if name == "depthwise_kernel" else name


def _in_part(name: str, part: Optional[str]) -> bool:
    return part is None or name.startswith(part + ".")


def named_weights(model, part: Optional[str] = None) -> Dict[str, np.ndarray]:
    """``{"layer/weight": array}`` of every weight of ``model`` (of the layers named ``part.*`` only)."""
    out = {}
    for layer in model.layers:
        if layer.weights and _in_part(layer.name, part):
            for v in layer.weights:
                out[f"{layer.name}/{_weight_suffix(v)}"] = np.asarray(v)
    return out


def save_named_weights(path, table: Mapping, meta: Optional[dict] = None) -> None:
    """Write a converted file (``.npz``, see the module docstring), atomically."""
    from rtmdet_keras.training.checkpoint import atomic_write

    path = Path(path)
    if path.suffix != ".npz":
        raise CheckpointError(f"{path}: a converted file must end in .npz (a name-keyed NumPy archive)")
    meta = {"format": FORMAT, "version": FORMAT_VERSION, **(meta or {})}
    arrays = {k: np.asarray(v) for k, v in table.items()}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def is_named_weights_file(path) -> bool:
    """Whether ``path`` is a converted weights ``.npz`` (it holds :data:`META_KEY`), not a training
    checkpoint (``epoch_N.ckpt.npz``); reads only the archive's member names."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return f"{META_KEY}.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def read_named_weights(path) -> Tuple[Dict[str, np.ndarray], dict]:
    """Read a converted file: ``({"layer/weight": array}, meta)``."""
    import zipfile

    try:
        with np.load(path) as data:
            if META_KEY not in data.files:
                hint = (" It looks like a training checkpoint (epoch_N.ckpt.npz): continue that run with --resume,"
                        " or fine-tune from its best_coco_bbox_mAP.keras." if "meta" in data.files else "")
                raise CheckpointError(f"{path}: not a converted rtmdet_keras weights file (no {META_KEY}).{hint}")
            meta = json.loads(bytes(data[META_KEY]).decode())
            table = {k: data[k] for k in data.files if k != META_KEY}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not a readable .npz file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a converted rtmdet_keras weights file (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer rtmdet_keras (format version {meta['version']}); "
                              "upgrade rtmdet_keras to read it")
    return table, meta


# --------------------------------------------------------------------------------------------
# Assigning to the model
# --------------------------------------------------------------------------------------------


def _torch_name(keras_key: str, layout: Optional[str] = None) -> str:
    """``layer/gamma`` -> ``layer.weight`` (how mmdetection, or SSCMA for ``layout="sscma"``, would name the
    tensor)."""
    layer, _, weight = keras_key.rpartition("/")
    name = f"{layer}.{_BN_PARAMS.get(weight, _CONV_PARAMS.get(weight, weight))}"
    return mmdetection_to_sscma_name(name) if layout == "sscma" else name


def _torch_shape(shape, depthwise: bool = False) -> List[int]:
    """A Keras weight shape in PyTorch's layout: conv ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``
    (depthwise ``[kh, kw, C, 1]`` -> ``[C, 1, kh, kw]``); other shapes unchanged."""
    shape = [int(d) for d in shape]
    if len(shape) != 4:
        return shape
    kh, kw, a, b = shape
    return [a, b, kh, kw] if depthwise else [b, a, kh, kw]


def _extra_level_keys(table: Mapping, layers: Mapping) -> Dict[str, List[str]]:
    """``{"<level-0 conv>/kernel": [the same conv's keys at levels 1, 2]}`` for the head convs that the
    model shares across levels while the table has them per level."""
    extra: Dict[str, List[str]] = {}
    for key in table:
        layer_name, _, weight = key.rpartition("/")
        base = _shared_conv_name(layer_name)
        if base and base != layer_name and layer_name not in layers and base in layers:
            extra.setdefault(f"{base}/{weight}", []).append(key)
    return extra


def _problem_message(source, part, missing, leftover, wrong_shape, diverged, class_hint=None, layout=None) -> str:
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights of the model are not in the checkpoint: {_name_list(missing)}")
    if leftover:
        problems.append(f"{len(leftover)} tensors of the checkpoint have no place in the model: {_name_list(leftover)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} tensors have another shape: {_name_list(wrong_shape)}")
    if class_hint:
        problems.append(class_hint)
    if diverged:
        problems.append("the model shares head convs across levels but the checkpoint's per-level copies differ: "
                        f"{_name_list(diverged)}; build the model with model.share_conv=false to keep them apart")
    hint = ("\nWas the checkpoint trained with this config's architecture (preset, widen/deepen factors, "
            "neck_csp_blocks, channel_attention, share_conv)?")
    if part is None and missing and not leftover and all(not m.startswith("backbone.") for m in missing):
        hint += " It holds no neck or head weights: load it with backbone_weights= instead of load_from=."
    if layout == "sscma":
        hint += (" For an SSCMA checkpoint give the SSCMA config it was trained with (configs/rtmdet_nano_8xb32_"
                 "300e_coco.py, ..._relu.py, rtmdet_s_8xb32_300e_coco.py, ...): each selects the matching preset.")
    where = f" ({_LAYOUT_NAMES[layout]})" if layout in _LAYOUT_NAMES else ""
    return f"{source}{where} does not fit the model:\n- " + "\n- ".join(problems) + hint


def assign_named_weights(model, table: Mapping, *, part: Optional[str] = None, origin: Optional[Mapping] = None,
                         source: str = "checkpoint", ignored: Iterable[str] = (), layout: Optional[str] = None,
                         strict_classes: bool = False) -> LoadReport:
    """Set the weights of ``model`` (or of its layers named ``part.*``) from ``table``, one to one.

    Args:
        table: ``{"layer/weight": array}`` in Keras layout (:func:`translate_state_dict` or a converted file).
        part: ``"backbone"`` to load only ``backbone.*``; table entries outside it are ignored.
        origin: source name of each table key, for messages and the report (default: the key itself).
        ignored: source names already dropped upstream (``num_batches_tracked``), carried into the report.
        layout: the state dict's layout (:func:`detect_layout`), for naming missing tensors as it would.
        strict_classes: a class count that differs is an error too (for export and evaluation, where a
            freshly initialised class conv would make no sense), not a fine-tuning start.

    Raises:
        CheckpointError: model weights with no entry, entries with no weight, shapes that differ (other
            than the class count of ``bbox_head.rtm_cls.*``), or shared head convs whose per-level
            copies differ. The model is not changed in that case.
    """
    if part is not None and part not in PARTS:
        raise CheckpointError(f"part must be None or one of {', '.join(PARTS)}, got {part!r}")
    origin = dict(origin or {})
    name_of = lambda k: origin.get(k, k)  # noqa: E731
    report = LoadReport(source=source, part=part, ignored=list(ignored), layout=layout)
    layers = {layer.name: layer for layer in model.layers if layer.weights and _in_part(layer.name, part)}
    if not layers:
        raise CheckpointError(f"the model has no layers with weights{f' named {part}.*' if part else ''}")
    extra_levels = _extra_level_keys(table, layers)

    used: Dict[str, None] = {}  # ordered set of the table keys consumed
    class_keys: Dict[str, None] = {}  # class-conv keys skipped on a class-count mismatch
    missing, wrong_shape, diverged, class_counts = [], [], [], {}
    new_values = {}
    shared_checked = 0
    for name, layer in layers.items():
        values = []
        for v in layer.weights:
            key = f"{name}/{_weight_suffix(v)}"
            want = tuple(int(d) for d in v.shape)
            level0 = f"{_shared_conv_name(name)}/{_weight_suffix(v)}" if _shared_conv_name(name) else None
            if key not in table and level0 in table:
                key = level0  # a model with a conv per level, a table with the shared one
            if key not in table:
                missing.append(_torch_name(key, layout) if origin else key)
                continue
            value = np.asarray(table[key])
            for other in extra_levels.get(key, []):
                shared_checked += 1
                used[other] = None
                if np.asarray(table[other]).shape != value.shape or not np.array_equal(table[other], value):
                    diverged.append(f"{name_of(other)} differs from {name_of(key)}")
            if (type(layer).__name__ == "DepthwiseConv2D" and value.ndim == 4
                    and value.shape == (want[0], want[1], want[3], want[2])):
                value = value.reshape(want)  # [kh, kw, 1, C] from a plain OIHW transpose -> [kh, kw, C, 1]
            if value.shape == want:
                used[key] = None
                values.append(value.astype(np.asarray(v).dtype, copy=False))
            elif _CLASS_CONV.match(name) and value.shape[:-1] == want[:-1] and not strict_classes:
                class_keys[key] = None
                class_counts[name] = (value.shape[-1], want[-1])
            else:
                used[key] = None
                if origin:  # a PyTorch state dict: both shapes in its layout, as its own code prints them
                    dw = type(layer).__name__ == "DepthwiseConv2D"
                    got, model_shape = _torch_shape(table[key].shape, dw), _torch_shape(want, dw)
                else:
                    got, model_shape = list(value.shape), list(want)
                wrong_shape.append(f"{name_of(key)}: {got} in the checkpoint, {model_shape} in the model")
                if _CLASS_CONV.match(name) and value.shape[:-1] == want[:-1]:
                    class_counts[name] = (value.shape[-1], want[-1])
        if len(values) == len(layer.weights):
            new_values[name] = values
    class_hint = None
    if strict_classes and class_counts:
        ckpt_n, model_n = next(iter(class_counts.values()))
        class_hint = (f"the checkpoint predicts {ckpt_n} classes, the config {model_n} (num_classes): set "
                      f"--cfg-options num_classes={ckpt_n}")
        class_counts = {}
    # A class conv is skipped whole, even a part whose shape happened to fit.
    for name in class_counts:
        for key in [k for k in used if k.rpartition("/")[0] == name]:
            del used[key]
            class_keys[key] = None
        new_values.pop(name, None)

    leftover = [k for k in table if k not in used and k not in class_keys]
    if part is not None:
        report.ignored += [name_of(k) for k in leftover if not _in_part(k.rpartition("/")[0], part)]
        leftover = [k for k in leftover if _in_part(k.rpartition("/")[0], part)]
    if missing or leftover or wrong_shape or diverged:
        raise CheckpointError(_problem_message(source, part, missing, [name_of(k) for k in leftover],
                                               wrong_shape, diverged, class_hint, layout))

    report.ignored += [name_of(k) for k in class_keys]
    if class_counts:
        report.kept_init = sorted(class_counts)
        ckpt_n, model_n = next(iter(class_counts.values()))
        report.notes.append(f"{', '.join(report.kept_init)}: the checkpoint predicts {ckpt_n} classes, this model "
                            f"{model_n}: these class-prediction convs keep their fresh initialisation; "
                            "everything else is loaded")
    if shared_checked:
        report.notes.append(f"shared head convs: {shared_checked} per-level copies in the checkpoint checked equal "
                            "to level 0 and loaded once")
    for name, values in new_values.items():
        layers[name].set_weights(values)
    report.layers = list(new_values)
    report.used = [name_of(k) for k in used]
    return report


# --------------------------------------------------------------------------------------------
# Loading into a network
# --------------------------------------------------------------------------------------------


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
        import keras

        import rtmdet_keras.models  # noqa: F401 (registers the custom layers)

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
    import importlib.util
    import zipfile

    try:
        path = _check_path(source)
        suffix = path.suffix.lower()
        if suffix in TORCH_SUFFIXES:
            if importlib.util.find_spec("torch") is None:
                raise CheckpointError(_TORCH_MISSING.format(path=path))
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
    from rtmdet_keras.models import build_model

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


@click.command("convert-checkpoint", cls=VariadicCfgCommand)
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@config_options()
@click.option("--state-dict", "state_dict_key", type=click.Choice(STATE_DICT_KEYS), default="state_dict",
              show_default=True,
              help="Which weights of an mmengine checkpoint: state_dict holds the EMA weights, "
                   "ema_state_dict the raw training weights.")
def convert_command(checkpoint, output, config, cfg_options, state_dict_key):
    """Convert an mmdetection RTMDet (or ImageNet CSPNeXt) CHECKPOINT (.pth) to OUTPUT (.npz).

    The architecture comes from --config (the preset the checkpoint was trained as, e.g. tiny);
    the class count from the checkpoint. Needs PyTorch (pip install 'rtmdet_keras[convert]').
    """
    cfg = load_config_or_exit(config, cfg_options)
    try:
        convert_checkpoint(checkpoint, output, cfg, state_dict_key=state_dict_key, print_fn=click.echo)
    except CheckpointError as e:
        raise click.ClickException(str(e)) from None


if __name__ == "__main__":
    run_standalone(convert_command, "python -m rtmdet_keras.checkpoint_convert")
