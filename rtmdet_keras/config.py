"""Typed configuration: one YAML per preset in ``configs/``, ``key=value`` overrides, validation.

A config is a tree of plain dataclasses. The top level holds what a user of the SSCMA command line
overrides (``data_root``, ``num_classes``, ``imgsz``, ``max_epochs``...); the network, the assigner,
the losses, the augmentation, the test-time settings, the export and the QAT recipe each have a
section of their own, reached with dotted keys (``model.widen_factor=0.5``).

Overrides are data, never code: values are parsed with ``yaml.safe_load``; SSCMA's tuple syntax
``imgsz='(192,192)'`` is accepted and becomes a list. An unknown key is an error naming the closest
valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import yaml

from rtmdet_keras.files import atomic_write_text

# The presets ship inside the package (in a checkout rtmdet_keras/configs is a link to the top-level configs/), so
# a preset name resolves the same from a checkout, an editable install, a wheel or an sdist, from any folder.
CONFIG_DIR = Path(str(importlib.resources.files("rtmdet_keras").joinpath("configs")))


class ConfigError(ValueError):
    """A config file or override is wrong; the message says which key and what to do."""


@dataclass
class ModelConfig:
    """Network architecture. Channel counts are before ``widen_factor``, block counts before
    ``deepen_factor`` unless the name says otherwise."""

    backbone: str = "cspnext"  # "cspnext" (P5) or "mnv4" (MobileNetV4-conv-small)
    deepen_factor: float = 0.33
    widen_factor: float = 0.25
    act: str = "relu"  # "relu", "relu6" or "silu"
    channel_attention: bool = False
    expand_ratio: float = 0.5
    # SPP kernel sizes; realised as a chain of stride-1 max pools (5x5, or 3x3 with pool_chain_kernel=3).
    spp_kernel_sizes: List[int] = field(default_factory=lambda: [5, 9, 13])
    pool_chain_kernel: int = 5
    # Neck. in_channels are the backbone's C3, C4, C5 channels *after* widening.
    neck_in_channels: List[int] = field(default_factory=lambda: [64, 128, 256])
    neck_out_channels: int = 64
    neck_csp_blocks: int = 0  # blocks per neck CSPLayer, already scaled (SSCMA nano: round(1*0.33)=0)
    # Head.
    feat_channels: int = 64
    stacked_convs: int = 2
    share_conv: bool = False
    exp_on_reg: bool = False
    strides: List[int] = field(default_factory=lambda: [8, 16, 32])
    prior_prob: float = 0.01
    # Initial box of every prior: each of the four distances starts at reg_prior strides (the reg conv's
    # bias; its log with exp_on_reg). mmdetection starts at 0 (a point), which a short run from scratch
    # spends its first hundreds of steps growing out of; converted or loaded weights replace it.
    reg_prior: float = 0.0
    # BatchNorm as PyTorch: eps 1e-5, running-stat momentum 0.1 (0.9 in Keras terms).
    bn_eps: float = 1.0e-5
    bn_momentum: float = 0.9
    # Input contract: the model takes RGB 0-255 and normalises inside: x' = (x[order] - mean) / std,
    # with mean/std given in the channel order *after* reordering.
    channel_order: str = "rgb"  # "rgb" or "bgr"
    mean: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: List[float] = field(default_factory=lambda: [255.0, 255.0, 255.0])


@dataclass
class AssignerConfig:
    """Dynamic soft label assignment (RTMDet)."""

    topk: int = 13
    iou_weight: float = 3.0
    soft_center_radius: float = 3.0
    # "gt_class": SSCMA/mmyolo (cost of the GT class logit only); "all_classes": mmdetection.
    class_cost: str = "all_classes"


@dataclass
class LossConfig:
    cls_weight: float = 1.0
    qfl_beta: float = 2.0
    box_weight: float = 2.0


@dataclass
class AugmentConfig:
    """Training augmentation. Stage 1 runs for all but the last ``stage2_num_epochs`` epochs."""

    cache_images: bool = True
    hsv_gains: List[float] = field(default_factory=lambda: [5.0, 30.0, 30.0])  # h, s, v in OpenCV units
    mosaic: bool = True
    mosaic_prob: float = 1.0
    pad_val: int = 114
    # Keep-ratio resize to ratio x (scale_factor x imgsz); stage 1 uses a 2x canvas.
    resize_ratio_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    stage1_scale_factor: float = 2.0
    stage2_ratio_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    stage2_scale_factor: float = 1.0
    flip_prob: float = 0.5
    mixup: bool = False
    mixup_prob: float = 0.5
    min_box_size: float = 1.0  # boxes narrower or shorter than this (pixels) after cropping are dropped
    # mmdetection's RandomCrop(allow_negative_crop=False): a crop that keeps none of its image's boxes is
    # drawn again (up to negative_crop_retries times, then kept) instead of training on an empty sample.
    allow_negative_crop: bool = False
    negative_crop_retries: int = 10


@dataclass
class TestConfig:
    """Decode + NMS, shared by evaluation, export checks and prediction."""

    score_thr: float = 0.001
    nms_pre: int = 30000
    iou_thr: float = 0.65
    max_per_img: int = 300


@dataclass
class ExportConfig:
    calib_images: int = 200
    int8_input_type: str = "int8"  # "int8" or "uint8"


@dataclass
class QATConfig:
    """Quantization-aware fine-tuning recipe (SSCMA nano_relu_q)."""

    epochs: int = 5
    lr: float = 2.0e-5
    warmup_epochs: int = 1
    warmup_power: float = 2.0  # quadratic warm-up
    constant_epochs: int = 2  # lr held constant for the last epochs
    freeze_observer_ratio: float = 1.0 / 3.0
    freeze_bn_ratio: float = 2.0 / 3.0
    stage: int = 2  # data pipeline stage used for QAT


@dataclass
class Config:
    """The whole run. Paths are relative to ``data_root`` where the name says so."""

    preset: str = "nano"
    # --- data (SSCMA command-line names) ---
    data_root: str = "datasets/demo"
    dataset_format: str = "auto"  # "coco", "yolo" or "auto" (detect from the files)
    train_ann_file: str = "train/_annotations.coco.json"
    val_ann_file: str = "valid/_annotations.coco.json"
    train_img_prefix: str = "train/"
    val_img_prefix: str = "valid/"
    num_classes: int = 2
    filter_empty_gt: bool = True  # leave training images without boxes out (mmdetection's filter_cfg)
    class_names: Optional[List[str]] = None  # filled from the data set; checked against num_classes
    imgsz: List[int] = field(default_factory=lambda: [192, 192])  # height, width in pixels
    # --- training ---
    max_epochs: int = 300
    batch_size: int = 32
    lr: float = 0.004  # from scratch, at base_batch_size; scaled linearly with batch_size
    # Used instead of lr when weights are loaded (load_from or backbone_weights); null: lr either way.
    finetune_lr: Optional[float] = None
    base_batch_size: int = 256
    weight_decay: float = 0.05
    warmup_iters: int = 1000
    warmup_ratio: float = 1.0e-5
    min_lr_ratio: float = 0.05
    stage2_num_epochs: int = 20
    val_interval: int = 10
    # Early stopping: stop once this many epochs have passed since the best COCO bbox_mAP (checked at each
    # evaluation, across both stages); 0 never stops early.
    patience: int = 0
    ema_momentum: float = 0.0002
    ema_gamma: float = 2000.0
    save_interval: int = 1
    max_keep_ckpts: int = 3
    seed: int = 0
    # Threads of the training pipeline (tf.data's private pool; SSCMA's dataloader workers). 0: TensorFlow's
    # shared pool, sized to the machine, which the training step's own threads then compete with.
    workers: int = 2
    work_dir: Optional[str] = None  # default work_dirs/<config name>
    load_from: Optional[str] = None  # converted weights or mmdetection .pth for the whole detector
    backbone_weights: Optional[str] = None  # converted weights or .pth for the backbone only
    # --- sections ---
    model: ModelConfig = field(default_factory=ModelConfig)
    assigner: AssignerConfig = field(default_factory=AssignerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    test: TestConfig = field(default_factory=TestConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    qat: QATConfig = field(default_factory=QATConfig)

    # Name of the config file the run came from (without .yaml); not a setting.
    name: str = "nano"

    @property
    def input_shape(self):
        """(height, width, 3)."""
        return (int(self.imgsz[0]), int(self.imgsz[1]), 3)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def save(self, path) -> None:
        """Write the resolved config as YAML (atomically)."""
        atomic_write_text(path, self.to_yaml())


_CHOICES = {
    "model.backbone": ("cspnext", "mnv4"),
    "model.act": ("relu", "relu6", "silu"),
    "model.channel_order": ("rgb", "bgr"),
    "dataset_format": ("auto", "coco", "yolo"),
    "assigner.class_cost": ("all_classes", "gt_class"),
    "export.int8_input_type": ("int8", "uint8"),
}
_LIST_LENGTHS = {
    "imgsz": 2,
    "model.mean": 3,
    "model.std": 3,
    "model.strides": 3,
    "model.neck_in_channels": 3,
    "augment.hsv_gains": 3,
    "augment.resize_ratio_range": 2,
    "augment.stage2_ratio_range": 2,
}


# Other names for top-level keys, in a YAML file or on the command line: SSCMA's current tutorial
# overrides ``epochs=``, mmdetection's configs say ``max_epochs``.
ALIASES = {"epochs": "max_epochs"}


def _resolve_aliases(data, where: str):
    """``data`` with each alias replaced by the key it stands for; both given with different values is an error."""
    if not isinstance(data, dict) or not any(a in data for a in ALIASES):
        return data
    out = dict(data)
    for alias, key in ALIASES.items():
        if alias in out:
            value = out.pop(alias)
            if key in out and out[key] != value:
                raise ConfigError(f"{where}: {alias}={value!r} and {key}={out[key]!r} disagree ({alias} is another "
                                  f"name for {key}); give one of them")
            out[key] = value
    return out


def _fields(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def valid_keys(cls=Config, prefix: str = "") -> List[str]:
    """All settable keys, dotted."""
    keys = []
    for name, (_, tp) in _fields(cls).items():
        if dataclasses.is_dataclass(tp):
            keys.extend(valid_keys(tp, prefix + name + "."))
        else:
            keys.append(prefix + name)
    return keys


def _unknown_key(key: str, where: str) -> ConfigError:
    keys = valid_keys()
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    if not close:
        # Match on the last part too, so "widen_factor" suggests "model.widen_factor".
        leaf = key.split(".")[-1]
        close = [k for k in keys if k.split(".")[-1] == leaf] or difflib.get_close_matches(
            leaf, keys, n=3, cutoff=0.6
        )
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def _coerce(key: str, value: Any, tp, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless (int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner, where)
    if origin in (list, List):
        if isinstance(value, tuple):
            value = list(value)
        if key == "imgsz" and isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        (inner,) = args
        value = [_coerce(f"{key}[{i}]", v, inner, where) for i, v in enumerate(value)]
        want = _LIST_LENGTHS.get(key)
        if want is not None and len(value) != want:
            raise ConfigError(f"{where}: {key} must have {want} values, got {len(value)}: {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; people mean a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
        choices = _CHOICES.get(key)
        if choices and value not in choices:
            raise ConfigError(f"{where}: {key} must be one of {', '.join(choices)}, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in this module, not user input


def _apply(obj, data: dict, where: str, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the file'} must be a mapping of keys to values")
    fields = _fields(type(obj))
    for name, value in data.items():
        key = prefix + str(name)
        if name not in fields:
            raise _unknown_key(key, where)
        _, tp = fields[name]
        if dataclasses.is_dataclass(tp):
            _apply(getattr(obj, name), value if value is not None else {}, where, key + ".")
        else:
            setattr(obj, name, _coerce(key, value, tp, where))


def parse_override_value(text: str) -> Any:
    """Parse the value of one ``key=value`` override like the SSCMA command line does, without eval.

    ``'(192,192)'`` and ``(192, 192)`` become ``[192, 192]``; everything else is YAML.
    """
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        inner = text[1:-1].strip()
        if inner.startswith("(") or inner.startswith("["):
            text = inner
    if text.startswith("(") and text.endswith(")"):
        text = "[" + text[1:-1] + "]"
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse value {text!r}: {e.problem if hasattr(e, 'problem') else e}")


def parse_overrides(overrides) -> dict:
    """Turn ``["a=1", "model.b=2"]`` into a nested dict ``{"a": 1, "model": {"b": 2}}``."""
    nested: dict = {}
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"--cfg-options: {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--cfg-options: {item!r} has no key before '='")
        try:
            value = parse_override_value(text)
        except ConfigError as e:
            raise ConfigError(f"--cfg-options {key}: {e}") from None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--cfg-options: {key} conflicts with another override")
        node[parts[-1]] = value
    return nested


# SSCMA's config names (Seeed-Studio/ModelAssistant, configs/ and configs/rtmdet/) -> the preset that builds
# the same network, and the settings that make it so. Worked out from those files, not from their names:
# SSCMA's s, m and l inherit its l config (ReLU, no channel attention, neck num_csp_blocks=1 scaled by
# round(1 * deepen), RGB/255 input, a head without exp on the distances), which differs from mmdetection's
# s, m and l (our presets) in each of these. Its nano inherits the same l config (hence our nano); its
# ncadc_relu6 is nano with ReLU6, neck round(3 * 0.33) = 1 block and BGR/255 input. Python configs are
# never run: only the file name is read.
def _sscma_cspnext(neck_blocks: int) -> dict:
    return {"model": {"act": "relu", "channel_attention": False, "neck_csp_blocks": neck_blocks, "exp_on_reg": False,
                      "channel_order": "rgb", "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}}


SSCMA_CONFIGS = {
    "rtmdet_nano_8xb32_300e_coco": ("nano", {}),
    "rtmdet_nano_8xb32_300e_coco_relu": ("nano_relu", {}),
    "rtmdet_nano_8xb32_300e_coco_relu_q": ("nano_relu_q", {}),
    "rtmdet_nano_8xb32_300e_coco_ncadc_relu6": ("nano", {"model": {"act": "relu6", "neck_csp_blocks": 1,
                                                                   "channel_order": "bgr"}}),
    "rtmdet_s_8xb32_300e_coco": ("s", _sscma_cspnext(0)),
    "rtmdet_m_8xb32_300e_coco": ("m", _sscma_cspnext(1)),
    "rtmdet_l_8xb32_300e_coco": ("l", _sscma_cspnext(1)),
    "rtmdet_mnv4_8xb32_300e_coco": ("mnv4", {"model": {"share_conv": True, "channel_order": "bgr",
                                                       "mean": [103.53, 116.28, 123.675],
                                                       "std": [57.375, 57.12, 58.395]}}),
}


def sscma_config_alias(name_or_path) -> Optional[tuple]:
    """``(preset, overrides)`` for an SSCMA config name (``configs/rtmdet_nano_8xb32_300e_coco.py``, with or
    without folder and ``.py``); None for anything else.

    Raises:
        ConfigError: a ``.py`` config that is not one of :data:`SSCMA_CONFIGS`.
    """
    p = Path(str(name_or_path))
    if p.stem in SSCMA_CONFIGS and p.suffix in ("", ".py"):
        return SSCMA_CONFIGS[p.stem]
    if p.suffix == ".py":
        close = difflib.get_close_matches(p.stem, list(SSCMA_CONFIGS), n=2)
        hint = f" Did you mean {' or '.join(c + '.py' for c in close)}?" if close else ""
        raise ConfigError(f"config {str(name_or_path)!r}: rtmdet_keras runs no Python config; it knows these SSCMA "
                          f"config names: {', '.join(c + '.py' for c in SSCMA_CONFIGS)}, and its own presets "
                          f"({', '.join(preset_names())}).{hint}")
    return None


def _flatten(nested: dict, prefix: str = "") -> List[str]:
    out = []
    for k, v in nested.items():
        text = str(v).lower() if isinstance(v, bool) else v
        out += _flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={text}"]
    return out


def resolve_config_path(name_or_path) -> Path:
    """A path that exists is used as it is; a bare name (``nano`` or ``nano.yaml``) is looked up in
    ``configs/``."""
    p = Path(name_or_path)
    if p.exists():
        return p
    stem = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    candidate = CONFIG_DIR / stem
    if candidate.exists():
        return candidate
    available = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(Path(stem).stem, available, n=2)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(
        f"config {str(name_or_path)!r} not found (neither a file nor a preset in {CONFIG_DIR}). "
        f"Presets: {', '.join(available)}.{hint}"
    )


def preset_names() -> List[str]:
    """Names of the presets that ship with the package (``nano``, ``tiny``, ...)."""
    return sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))


def _read_config_file(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of keys to values (key: value lines), got {type(data).__name__}")
    return data


def _base_config(data: dict, path: Path) -> Config:
    """The config a file starts from: the preset its ``preset:`` key names, else the built-in defaults.

    A file may say ``preset: tiny`` and list only the keys it changes (SSCMA's ``_base_``, one level): the
    presets are complete, and a preset's own ``preset:`` names itself, so there is nothing further to follow.
    """
    cfg = Config()
    if "preset" not in data:
        return cfg
    name = data["preset"]
    names = preset_names()
    if not isinstance(name, str) or name not in names:
        close = difflib.get_close_matches(str(name), names, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"{path}: preset {name!r} is not a preset; the file starts from the preset it names, "
                          f"one of {', '.join(names)}{hint}")
    preset_path = CONFIG_DIR / f"{name}.yaml"
    if path.resolve() != preset_path.resolve():
        _apply(cfg, {k: v for k, v in _read_config_file(preset_path).items() if k != "name"}, str(preset_path))
    return cfg


def _check_preset_override(nested: dict, cfg: Config, path: Path) -> None:
    """``--cfg-options preset=X`` would rename the network without changing it (every other setting is already
    that of the config's own preset), so it is refused unless it repeats the preset the config already has."""
    if "preset" in nested and nested["preset"] != cfg.preset:
        want = nested["preset"]
        raise ConfigError(
            f"--cfg-options preset={want}: the preset is chosen by the config, not by an override ({path} "
            f"starts from {cfg.preset}); use --config {want}, or a YAML of your own that says 'preset: {want}' and "
            f"lists only the settings it changes")


def _validate(cfg: Config, where: str) -> None:
    if cfg.num_classes < 1:
        raise ConfigError(f"{where}: num_classes must be at least 1, got {cfg.num_classes}")
    h, w = cfg.imgsz
    stride = max(cfg.model.strides)
    if h <= 0 or w <= 0 or h % stride or w % stride:
        raise ConfigError(f"{where}: imgsz must be positive multiples of {stride} (height, width), got {cfg.imgsz}")
    if cfg.class_names is not None and len(cfg.class_names) != cfg.num_classes:
        raise ConfigError(
            f"{where}: class_names has {len(cfg.class_names)} names but num_classes is {cfg.num_classes}"
        )
    if cfg.batch_size < 1:
        raise ConfigError(f"{where}: batch_size must be at least 1, got {cfg.batch_size}")
    if cfg.max_epochs < 1:
        raise ConfigError(f"{where}: max_epochs must be at least 1, got {cfg.max_epochs}")
    if cfg.patience < 0:
        raise ConfigError(f"{where}: patience must be 0 (no early stopping) or a number of epochs, got {cfg.patience}")
    if any(s <= 0 for s in cfg.model.std):
        raise ConfigError(f"{where}: model.std must be positive, got {cfg.model.std}")


def load_config(name_or_path="nano", overrides=None, print_fn=None) -> Config:
    """Load a preset by name or a YAML file by path, then apply ``key=value`` overrides.

    A file that says ``preset: tiny`` starts from ``configs/tiny.yaml`` and changes only the keys it lists;
    a file without ``preset:`` starts from the defaults of :class:`Config`. ``preset`` cannot be overridden.

    Args:
        name_or_path: ``"nano"``, ``"nano.yaml"`` (looked up in ``configs/``), a path, or one of SSCMA's
            config names (:data:`SSCMA_CONFIGS`: the preset that builds that config's network).
        overrides: list of ``"key=value"`` strings (SSCMA syntax) or a nested dict. ``epochs`` is
            accepted for ``max_epochs`` (:data:`ALIASES`).
        print_fn: where the one-line note on an SSCMA config name goes (None: nowhere).
    Raises:
        ConfigError: unknown key (naming the closest valid one), wrong type, invalid value, unknown preset.
    """
    alias = sscma_config_alias(name_or_path)
    path = CONFIG_DIR / f"{alias[0]}.yaml" if alias else resolve_config_path(name_or_path)
    data = _read_config_file(path)
    cfg = _base_config(data, path)
    cfg.name = path.stem
    data = _resolve_aliases(data, str(path))
    _apply(cfg, {k: v for k, v in data.items() if k != "name"}, str(path))
    if alias:
        preset, settings = alias
        _apply(cfg, settings, f"{name_or_path} (SSCMA config)")
        if print_fn is not None:
            print_fn(f"{name_or_path}: SSCMA's config name; using preset {preset}"
                     + (f" with SSCMA's settings {' '.join(_flatten(settings))}" if settings else ""))
    if overrides:
        nested = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        _check_preset_override(nested, cfg, path)
        _apply(cfg, _resolve_aliases(nested, "--cfg-options"), "--cfg-options")
    _validate(cfg, str(path) if not overrides else f"{path} with --cfg-options")
    return cfg
