"""The tf_keras (Keras 2) twin of the network, for tfmot QAT, and weight transfer by layer name.

tfmot 0.8.1 works only on tf_keras models. :func:`rtmdet_keras.models.rtmdet.build_twin` builds the same
network from the same builder code with tf_keras layers (``build_model(cfg, framework="tf_keras")``); the three custom
layers get tf_keras flavours here that compute exactly what the Keras 3 ones do (the hard sigmoid is
spelled out as ``relu6(x + 3) / 6``: tf_keras' own ``hard_sigmoid`` is ``0.2x + 0.5``).

The twin's head convs are never shared (``bbox_head.cls_convs.{l}.{i}.conv`` for every level ``l``):
tfmot folds a BatchNorm only into a conv that has a single input. :func:`transfer_weights` copies a
shared conv into each level's copy, and back (checking that the copies still agree), through the one
name-keyed copier, :func:`rtmdet_keras.models.weights.match_weights`.

tf_keras is imported only when a twin is built; nothing here imports tensorflow_model_optimization
(importing it makes ``tf.keras`` tf_keras for the rest of the process).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Dict, List

from rtmdet_keras.models.layers import PACKAGE, BuildContext
from rtmdet_keras.models.weights import match_weights, named_weights, weighted_layers


@functools.lru_cache(maxsize=None)
def tf_keras_custom_layers() -> SimpleNamespace:
    """The tf_keras flavours of ``InputNormalization``, ``NearestUpsample`` and ``HardSigmoid``,
    registered with tf_keras' serialisation under the same names as the Keras 3 ones."""
    import tensorflow as tf  # lazy: only a twin needs these layers
    import tf_keras  # lazy: tf_keras loads only when a twin is built

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
    import tf_keras  # lazy: tf_keras loads only when a twin is built

    return BuildContext("tf_keras", tf_keras, tf_keras_custom_layers(), act, bn_eps, bn_momentum)


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
    src = weighted_layers(src_model)
    table = named_weights(src_model)
    match = match_weights(weighted_layers(dst_model), table, merge=on_diverged_shared, atol=atol)
    unmatched_dst = list(dict.fromkeys(k.rpartition("/")[0] for k in match.missing))
    unused_src = list(dict.fromkeys(k.rpartition("/")[0] for k in match.leftover(table)))
    if unmatched_dst or unused_src:
        raise ValueError(
            f"transfer_weights({src_model.name} -> {dst_model.name}): layers do not match by name. "
            f"Destination layers without a source ({len(unmatched_dst)}): {unmatched_dst}. "
            f"Source layers without a destination ({len(unused_src)}): {unused_src}. "
            "Were the two models built from the same config?")
    problems = []
    for name in dict.fromkeys(name for name, _ in match.wrong_shape):
        key = next(k for n, k in match.wrong_shape if n == name)
        got = [tuple(w.shape) for w in src[key.rpartition("/")[0]].get_weights()]
        want = [tuple(w.shape) for w in match.layers[name].get_weights()]
        problems.append(f"{name}: shapes {got} in {src_model.name} vs {want} in {dst_model.name}")
    for name in dict.fromkeys(name for name, *_ in match.diverged):
        key = next(k for n, k, *_ in match.diverged if n == name)
        names = list(dict.fromkeys([key.rpartition("/")[0]] + [k.rpartition("/")[0] for k in match.levels[name]]))
        spread = max(d for n, *_, d in match.diverged if n == name)
        problems.append(f"{name}: the per-level copies {names} differ by up to {spread:.3g}; "
                        "pass on_diverged_shared='first' or 'mean' to merge them")
    if problems:
        raise ValueError("transfer_weights: " + "; ".join(problems))
    return match.apply()
