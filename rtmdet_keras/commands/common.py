"""What several commands share: reading a command's ``[CONFIG] MODEL`` arguments into a config and a model path.

:func:`command_config_and_model` takes ``--config``, a positional config, the ``config.yaml`` that
training writes beside its checkpoints, or the JSON an export writes beside a ``.tflite``.
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from rtmdet_keras.cli import load_config_or_exit
from rtmdet_keras.runtime.tflite import read_export_metadata


def command_config_and_model(args, config, cfg_options, checkpoint=None, tflite=None, extra_overrides=None):
    """Resolve a command's ``[CONFIG] MODEL`` positionals and options into ``(cfg, model_path)``.

    The config is ``--config``, else the first of two positionals, else the ``config.yaml`` that
    training writes beside its checkpoints, else (for a ``.tflite``) the preset, input size, classes
    and decoding recorded in the export's JSON. ``extra_overrides`` (``key=value`` strings) apply after
    ``--cfg-options``.
    """
    args = list(args)
    named = [p for p in (checkpoint, tflite) if p]
    if len(named) > 1:
        raise click.UsageError("give one model: --checkpoint or --tflite, not both")
    if len(args) > 2 or (named and len(args) > 1):
        raise click.UsageError(f"too many arguments: {' '.join(args)} (expected [CONFIG] MODEL)")
    model = named[0] if named else (args.pop() if args else None)
    if model is None:
        raise click.UsageError("give a model: a .keras, .ckpt.npz, SavedModel folder, .tflite, or an "
                               "mmdetection/SSCMA .pth (or its converted .npz)")
    positional_config = args[0] if args else None
    if config and positional_config:
        raise click.UsageError(f"two configs given: --config {config} and {positional_config}")
    model_path = Path(model)
    if not model_path.exists():
        raise click.ClickException(f"{model_path}: no such file or folder")
    name = config or positional_config
    implied = []
    if name is None:
        beside = (model_path if model_path.is_dir() else model_path.parent) / "config.yaml"
        if not beside.exists():
            beside = model_path.parent / "config.yaml"
        if beside.exists():
            name = str(beside)
        else:
            name, implied = _config_from_export_metadata(model_path)
    cfg = load_config_or_exit(name, implied + list(cfg_options or ()) + list(extra_overrides or ()))
    if Path(name).name == "config.yaml":
        cfg.name = cfg.preset  # a training run's resolved config: name exports after the preset, not "config"
    _fill_class_names(cfg, model_path)
    return cfg, model_path


def _config_from_export_metadata(model_path: Path):
    """``(preset, overrides)`` read from the JSON an export writes beside a ``.tflite``."""
    meta = read_export_metadata(model_path) if model_path.suffix == ".tflite" else None
    if not meta:
        raise click.UsageError(f"give a config (--config nano.yaml or CONFIG before the model): none was given "
                               f"and there is neither a config.yaml nor an export JSON beside {model_path}")
    d = meta["decode"]
    overrides = [f"imgsz=[{meta['imgsz'][0]},{meta['imgsz'][1]}]", f"num_classes={meta['num_classes']}",
                 f"model.strides=[{','.join(str(s) for s in d['strides'])}]",
                 f"model.exp_on_reg={str(bool(d['exp_on_reg'])).lower()}"]
    return meta.get("preset") or "nano", overrides


def _fill_class_names(cfg, model_path: Path) -> None:
    """Class names from the export JSON or the training run's ``config.yaml`` when the config has none."""
    if cfg.class_names:
        return
    candidates = []
    if model_path.suffix == ".tflite":
        meta = read_export_metadata(model_path)
        if meta:
            candidates.append(meta.get("class_names"))
    beside = (model_path if model_path.is_dir() else model_path.parent) / "config.yaml"
    if beside.exists():
        try:
            candidates.append((yaml.safe_load(beside.read_text()) or {}).get("class_names"))
        except (OSError, yaml.YAMLError):
            pass
    for names in candidates:
        if names and len(names) == int(cfg.num_classes):
            cfg.class_names = list(names)
            return
