"""Typed configuration: one YAML per preset in ``configs/``, ``key=value`` overrides, validation.

A config is a tree of plain dataclasses. The top level holds what a user of the SSCMA command line
overrides (``data_root``, ``num_classes``, ``imgsz``, ``max_epochs``...); the network, the assigner,
the losses, the augmentation, the test-time settings, the export and the QAT recipe each have a
section of their own, reached with dotted keys (``model.widen_factor=0.5``).

Overrides are data, never code: values are parsed with ``yaml.safe_load``; SSCMA's tuple syntax
``imgsz='(192,192)'`` is accepted and becomes a list. An unknown key is an error naming the closest
valid keys.

The schema (the dataclasses) lives in :mod:`rtmdet_keras.config_schema`, the keys and the checks of values
in :mod:`rtmdet_keras.config_parse`; this module loads a config and re-exports their public names.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import List, Optional

import yaml

from rtmdet_keras.config_parse import (
    ALIASES, _apply, _resolve_aliases, parse_override_value, parse_overrides, valid_keys,
)
from rtmdet_keras.config_schema import (
    CONFIG_DIR, AssignerConfig, AugmentConfig, Config, ConfigError, ExportConfig, LossConfig, ModelConfig, QATConfig,
    TestConfig,
)

# The config's API, whichever of the three modules holds a name.
__all__ = ["ALIASES", "CONFIG_DIR", "SSCMA_CONFIGS", "AssignerConfig", "AugmentConfig", "Config", "ConfigError",
           "ExportConfig", "LossConfig", "ModelConfig", "QATConfig", "TestConfig", "load_config",
           "parse_override_value", "parse_overrides", "preset_names", "resolve_config_path", "sscma_config_alias",
           "valid_keys"]

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
