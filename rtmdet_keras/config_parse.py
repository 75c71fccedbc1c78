"""Keys and values of a config: dotted keys, aliases, ``key=value`` overrides parsed without eval, and the
check of each value against the annotation of its field (:mod:`rtmdet_keras.config_schema`).

An unknown key is an error naming the closest valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, List

import yaml

from rtmdet_keras.config_schema import Config, ConfigError


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
