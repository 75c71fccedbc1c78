"""The tf_keras (Keras 2) twin of the network, for tfmot QAT, and weight transfer by layer name.

tfmot 0.8.1 works only on tf_keras models. :func:`build_twin` builds the same network from the same
builder code with tf_keras layers (``build_model(cfg, framework="tf_keras")``); the three custom
layers get tf_keras flavours here that compute exactly what the Keras 3 ones do (the hard sigmoid is
spelled out as ``relu6(x + 3) / 6``: tf_keras' own ``hard_sigmoid`` is ``0.2x + 0.5``).

The twin's head convs are never shared (``bbox_head.cls_convs.{l}.{i}.conv`` for every level ``l``):
tfmot folds a BatchNorm only into a conv that has a single input. :func:`transfer_weights` copies a
shared conv into each level's copy, and back (checking that the copies still agree).

tf_keras is imported only when a twin is built; nothing here imports tensorflow_model_optimization
(importing it makes ``tf.keras`` tf_keras for the rest of the process).
"""

from __future__ import annotations

import functools
import re
from types import SimpleNamespace
from typing import Dict, List, Optional

import numpy as np

from rtmdet_keras.models.layers import PACKAGE, BuildContext

# A head tower conv: bbox_head.{cls,reg}_convs.{level}.{i}.conv. Shared, it exists only at level 0.
_HEAD_TOWER_CONV = re.compile(r"^(bbox_head\.(?:cls|reg)_convs\.)(\d+)(\.\d+\.conv)$")


@functools.lru_cache(maxsize=None)
def tf_keras_custom_layers() -> SimpleNamespace:
    """The tf_keras flavours of ``InputNormalization``, ``NearestUpsample`` and ``HardSigmoid``,
    registered with tf_keras' serialisation under the same names as the Keras 3 ones."""
    import tensorflow as tf
    import tf_keras

    register = tf_keras.utils.register_keras_serializable(package=PACKAGE)

    @register
    class InputNormalization(tf_keras.layers.Layer):
        """Reorder channels (``"bgr"`` reverses), then ``x * (1/std) - mean/std``; see the Keras 3 layer."""

        def __init__(self, channel_order="rgb", mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), **kwargs):
            super().__init__(**kwargs)
            if channel_order not in ("rgb", "bgr"):
                raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
            self.channel_order = channel_order
            self.mean = [float(v) for v in mean]
            self.std = [float(v) for v in std]

        def call(self, x):
            x = tf.cast(x, tf.float32)
            if self.channel_order == "bgr":
                x = tf.gather(x, [2, 1, 0], axis=-1)
            scale = tf.constant([1.0 / s for s in self.std], tf.float32)
            offset = tf.constant([-m / s for m, s in zip(self.mean, self.std)], tf.float32)
            return x * scale + offset

        def get_config(self):
            return {**super().get_config(), "channel_order": self.channel_order, "mean": self.mean, "std": self.std}

    @register
    class NearestUpsample(tf_keras.layers.Layer):
        """Nearest upsampling by an integer factor (one RESIZE_NEAREST_NEIGHBOR op)."""

        def __init__(self, scale=2, **kwargs):
            super().__init__(**kwargs)
            self.scale = int(scale)

        def call(self, x):
            h, w = x.shape[1], x.shape[2]
            if h is None or w is None:
                shape = tf.shape(x)
                h, w = shape[1], shape[2]
            return tf.image.resize(x, (h * self.scale, w * self.scale), method="nearest")

        def compute_output_shape(self, input_shape):
            b, h, w, c = tf.TensorShape(input_shape).as_list()
            return tf.TensorShape([b, None if h is None else h * self.scale, None if w is None else w * self.scale, c])

        def get_config(self):
            return {**super().get_config(), "scale": self.scale}

    @register
    class HardSigmoid(tf_keras.layers.Layer):
        """PyTorch's hard sigmoid ``relu6(x + 3) / 6``."""

        def call(self, x):
            return tf.nn.relu6(x + 3.0) * (1.0 / 6.0)

        def get_config(self):  # no settings of its own
            return super().get_config()

    return SimpleNamespace(InputNormalization=InputNormalization, NearestUpsample=NearestUpsample,
                           HardSigmoid=HardSigmoid)


def tf_keras_custom_objects() -> Dict[str, type]:
    """``custom_objects`` for loading a saved tf_keras twin."""
    ns = tf_keras_custom_layers()
    return {f"{PACKAGE}>{k}": v for k, v in vars(ns).items()} | dict(vars(ns))


def tf_keras_context(act: str = "silu", bn_eps: float = 1e-5, bn_momentum: float = 0.9) -> BuildContext:
    """A :class:`BuildContext` that builds tf_keras layers."""
    import tf_keras

    return BuildContext("tf_keras", tf_keras, tf_keras_custom_layers(), act, bn_eps, bn_momentum)


def build_twin(cfg, src_model=None, name: Optional[str] = None):
    """The tf_keras twin of ``build_model(cfg)``, head convs un-shared; with ``src_model`` (a Keras 3
    model of the same cfg) its weights are copied in by :func:`transfer_weights`."""
    from rtmdet_keras.models.rtmdet import build_model

    twin = build_model(cfg, framework="tf_keras", share_head_convs=False, name=name)
    if src_model is not None:
        transfer_weights(src_model, twin)
    return twin


def _weighted_layers(model) -> Dict[str, object]:
    return {layer.name: layer for layer in model.layers if layer.weights}


def shared_conv_name(name: str) -> Optional[str]:
    """Level-0 name of a head tower conv (``bbox_head.cls_convs.2.1.conv`` -> ``...cls_convs.0.1.conv``);
    None for any other layer or a level-0 conv."""
    match = _HEAD_TOWER_CONV.match(name)
    if not match or match.group(2) == "0":
        return None
    return f"{match.group(1)}0{match.group(3)}"


def transfer_weights(src_model, dst_model, on_diverged_shared: str = "error", atol: float = 0.0) -> List[str]:
    """Copy every weight of ``src_model`` into ``dst_model`` by layer name (Keras 3 <-> tf_keras).

    Head tower convs may be shared in one model and per level in the other:
    shared -> un-shared copies the level-0 kernel into every level; un-shared -> shared takes level 0
    after checking that the other levels hold the same values (they drift apart once the twin is
    trained), as decided by ``on_diverged_shared``: ``"error"`` (default), ``"first"`` (take level 0)
    or ``"mean"`` (average the levels).

    Returns the names of the destination layers written.

    Raises:
        ValueError: listing destination layers with no source, source layers that went nowhere,
            shape mismatches, or diverged shared copies.
    """
    if on_diverged_shared not in ("error", "first", "mean"):
        raise ValueError(f"on_diverged_shared must be 'error', 'first' or 'mean', got {on_diverged_shared!r}")
    src = _weighted_layers(src_model)
    dst = _weighted_layers(dst_model)

    # Which source layers feed each destination layer (more than one: un-shared -> shared).
    sources: Dict[str, List[str]] = {}
    unmatched_dst = []
    for name in dst:
        if name in src:
            sources[name] = [name]
        elif shared_conv_name(name) in src:
            sources[name] = [shared_conv_name(name)]
        else:
            unmatched_dst.append(name)
    for name in src:
        base = shared_conv_name(name)
        if name not in dst and base in dst and base in sources:
            sources[base].append(name)
    used = {s for names in sources.values() for s in names}
    unused_src = [n for n in src if n not in used]
    if unmatched_dst or unused_src:
        raise ValueError(
            f"transfer_weights({src_model.name} -> {dst_model.name}): layers do not match by name. "
            f"Destination layers without a source ({len(unmatched_dst)}): {unmatched_dst}. "
            f"Source layers without a destination ({len(unused_src)}): {unused_src}. "
            "Were the two models built from the same config?")

    problems = []
    new_weights = {}
    for name, names in sources.items():
        values = [[np.asarray(w) for w in src[n].get_weights()] for n in names]
        want = [tuple(w.shape) for w in dst[name].get_weights()]
        got = [tuple(w.shape) for w in values[0]]
        if want != got:
            problems.append(f"{name}: shapes {got} in {src_model.name} vs {want} in {dst_model.name}")
            continue
        if len(values) > 1:
            spread = max(float(np.max(np.abs(a - b))) for v in values[1:] for a, b in zip(v, values[0]))
            if spread > atol and on_diverged_shared == "error":
                problems.append(f"{name}: the per-level copies {names} differ by up to {spread:.3g}; "
                                "pass on_diverged_shared='first' or 'mean' to merge them")
                continue
            if on_diverged_shared == "mean":
                values = [[np.mean(ws, axis=0) for ws in zip(*values)]]
        new_weights[name] = values[0]
    if problems:
        raise ValueError("transfer_weights: " + "; ".join(problems))
    for name, weights in new_weights.items():
        dst[name].set_weights(weights)
    return list(new_weights)
