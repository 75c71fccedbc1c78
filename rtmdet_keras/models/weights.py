"""Weights by name: ``{"layer/weight": array}`` tables of a model, and the one copier that writes such a
table into a model.

Keys are ``"<layer name>/<weight>"`` with ``<weight>`` ``kernel``, ``bias``, ``gamma``, ``beta``,
``moving_mean`` or ``moving_variance`` (``backbone.stem.0.conv/kernel``), the same in Keras 3 and in the
tf_keras twin. Head tower convs may be shared across levels on one side and per level on the other:
shared, a model holds ``bbox_head.{cls,reg}_convs.0.{i}.conv`` only; per level, it holds the same conv
at every level ``l``. :func:`match_weights` maps one onto the other both ways: a per-level layer takes
the level-0 entry, and a shared layer takes its level-0 entry together with the other levels' copies,
merged as the caller asks.

Both :func:`rtmdet_keras.models.twin.transfer_weights` (model -> model) and
:func:`rtmdet_keras.models.checkpoint_assign.assign_named_weights` (checkpoint -> model) copy through
:func:`match_weights`; each words its own errors from the :class:`WeightMatch` it returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

# A head tower conv: bbox_head.{cls,reg}_convs.{level}.{i}.conv. Shared, it exists only at level 0.
_HEAD_TOWER_CONV = re.compile(r"^(bbox_head\.(?:cls|reg)_convs\.)(\d+)(\.\d+\.conv)$")
MERGES = ("error", "first", "mean")  # what to do with per-level copies that differ, into a shared conv


def shared_conv_name(name: str) -> Optional[str]:
    """Level-0 name of a head tower conv (``bbox_head.cls_convs.2.1.conv`` -> ``...cls_convs.0.1.conv``);
    None for any other layer or a level-0 conv."""
    match = _HEAD_TOWER_CONV.match(name)
    if not match or match.group(2) == "0":
        return None
    return f"{match.group(1)}0{match.group(3)}"


def weight_suffix(variable) -> str:
    """Keras 3 ``kernel`` / tf_keras ``backbone.stem.0.conv/kernel:0`` -> ``kernel``."""
    name = variable.name.split("/")[-1].split(":")[0]
    return "kernel" if name == "depthwise_kernel" else name


def in_part(name: str, part: Optional[str]) -> bool:
    """Whether layer ``name`` belongs to ``part`` (``backbone``: ``backbone.*``; None: every layer)."""
    return part is None or name.startswith(part + ".")


def weighted_layers(model, part: Optional[str] = None) -> Dict[str, object]:
    """``{layer name: layer}`` of the layers of ``model`` that have weights (named ``part.*`` only)."""
    return {layer.name: layer for layer in model.layers if layer.weights and in_part(layer.name, part)}


def named_weights(model, part: Optional[str] = None) -> Dict[str, np.ndarray]:
    """``{"layer/weight": array}`` of every weight of ``model`` (of the layers named ``part.*`` only)."""
    out = {}
    for name, layer in weighted_layers(model, part).items():
        for v in layer.weights:
            out[f"{name}/{weight_suffix(v)}"] = np.asarray(v)
    return out


def _extra_level_keys(table: Mapping, layers: Mapping) -> Dict[str, List[str]]:
    """``{"<level-0 conv>/kernel": [the same conv's keys at levels 1, 2]}`` for the head convs that the
    model shares across levels while the table has them per level."""
    extra: Dict[str, List[str]] = {}
    for key in table:
        layer_name, _, weight = key.rpartition("/")
        base = shared_conv_name(layer_name)
        if base and layer_name not in layers and base in layers:
            extra.setdefault(f"{base}/{weight}", []).append(key)
    return extra


@dataclass
class WeightMatch:
    """What :func:`match_weights` found. Keys are table keys; nothing has been written yet."""

    layers: Dict[str, object]  # destination layers by name
    values: Dict[str, List[np.ndarray]] = field(default_factory=dict)  # complete layers: their new weights
    used: Dict[str, None] = field(default_factory=dict)  # ordered set of the table keys consumed
    missing: List[str] = field(default_factory=list)  # destination weights with no entry ("layer/weight")
    wrong_shape: List[Tuple[str, str]] = field(default_factory=list)  # (layer name, table key)
    kept: Dict[str, Tuple[str, ...]] = field(default_factory=dict)  # layer -> table keys left unused by `keep`
    diverged: List[Tuple[str, str, str, float]] = field(default_factory=list)  # (layer, key, other key, spread)
    levels: Dict[str, List[str]] = field(default_factory=dict)  # shared layer -> the other levels' keys it took
    shared_checked: int = 0  # per-level copies compared with their level-0 entry

    def leftover(self, table: Mapping) -> List[str]:
        """Table keys that went nowhere (neither used nor left out on purpose by ``keep``)."""
        kept = {k for keys in self.kept.values() for k in keys}
        return [k for k in table if k not in self.used and k not in kept]

    def apply(self) -> List[str]:
        """Write the matched weights; returns the names of the layers written."""
        for name, values in self.values.items():
            self.layers[name].set_weights(values)
        return list(self.values)


def _merge_levels(layer_name: str, key: str, table: Mapping, extra: List[str], merge: str, atol: float,
                  match: WeightMatch) -> np.ndarray:
    """The value for a shared conv from its level-0 entry ``key`` and the other levels' ``extra`` keys."""
    value = np.asarray(table[key])
    copies = [value]
    if extra:
        match.levels.setdefault(layer_name, []).extend(extra)
    for other in extra:
        match.shared_checked += 1
        match.used[other] = None
        copy = np.asarray(table[other])
        spread = float(np.max(np.abs(copy - value))) if copy.shape == value.shape else float("inf")
        if not spread <= atol and merge == "error":
            match.diverged.append((layer_name, key, other, spread))
        copies.append(copy)
    if merge == "mean" and len(copies) > 1 and all(c.shape == value.shape for c in copies):
        value = np.mean(copies, axis=0)
    return value


def match_weights(layers: Mapping[str, object], table: Mapping[str, np.ndarray], *, merge: str = "error",
                  atol: float = 0.0, keep: Optional[Callable[[str, tuple, tuple], bool]] = None) -> WeightMatch:
    """Match every weight of ``layers`` (``{name: layer}``) with an entry of ``table``, one to one.

    A per-level head conv takes the level-0 entry when the table has no entry of its own; a shared one
    takes its level-0 entry and consumes the other levels' copies, which must agree within ``atol``
    (``merge="error"``) or are ignored (``"first"``) or averaged (``"mean"``). A depthwise kernel in
    ``[kh, kw, 1, C]`` (a plain OIHW transpose) is reshaped to ``[kh, kw, C, 1]``.

    ``keep(layer name, table shape, model shape)`` may declare a shape difference expected (the class
    convs of a checkpoint with another class count): that layer is then left as it is, its entries
    recorded in :attr:`WeightMatch.kept`. A layer is written only when all its weights matched.
    """
    if merge not in MERGES:
        raise ValueError(f"on_diverged_shared must be 'error', 'first' or 'mean', got {merge!r}")
    match = WeightMatch(layers=dict(layers))
    extra_levels = _extra_level_keys(table, layers)
    for name, layer in layers.items():
        values, base, kept = [], shared_conv_name(name), []
        for v in layer.weights:
            key = f"{name}/{weight_suffix(v)}"
            want = tuple(int(d) for d in v.shape)
            if key not in table and base and f"{base}/{weight_suffix(v)}" in table:
                key = f"{base}/{weight_suffix(v)}"  # a model with a conv per level, a table with the shared one
            if key not in table:
                match.missing.append(key)
                continue
            value = _merge_levels(name, key, table, extra_levels.get(key, []), merge, atol, match)
            if (type(layer).__name__ == "DepthwiseConv2D" and value.ndim == 4
                    and value.shape == (want[0], want[1], want[3], want[2])):
                value = value.reshape(want)  # [kh, kw, 1, C] from a plain OIHW transpose -> [kh, kw, C, 1]
            if value.shape == want:
                match.used[key] = None
                values.append(value.astype(np.asarray(v).dtype, copy=False))
            elif keep is not None and keep(name, value.shape, want):
                kept.append(key)
            else:
                match.used[key] = None
                match.wrong_shape.append((name, key))
        if kept:
            # A kept layer is left whole, even a part whose shape happened to fit.
            for key in [k for k in match.used if k.rpartition("/")[0] == name]:
                del match.used[key]
                kept.append(key)
            match.kept[name] = tuple(kept)
        elif len(values) == len(layer.weights):
            match.values[name] = values
    return match
