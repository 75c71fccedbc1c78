"""Fold the BGR channel reversal of :class:`~rtmdet_keras.models.layers.InputNormalization` into the
first convolution, so an exported graph has no GATHER.

The BGR presets (nano_relu, tiny .. x, as mmdetection trained them) reverse the RGB input's channels
before normalising: ``y = x[..., ::-1] * scale + offset`` with ``scale``/``offset`` in BGR order. In
TFLite that reversal is a GATHER, the one op of such a graph that Ethos-U NPUs (Vela) leave on the CPU.

Why it folds exactly: normalisation is per channel, so ``y = (x * scale[::-1] + offset[::-1])[..., ::-1]``,
an RGB normalisation followed by the reversal. Zero padding treats channels alike, and a convolution
over reversed input channels equals one over the unreversed input with its kernel's input-channel axis
reversed: ``conv(P(z), K) = conv(z, K[:, :, ::-1, :])``. So the folded network normalises in RGB order
(``mean``/``std`` reversed) and its first convolution(s) carry the reversed kernel; every other layer and
every layer name stay as they were. The arithmetic is the same up to float summation order.

Only the export uses the folded copy; training, checkpoints and weight conversion keep the network as
built (names and weights unchanged).
"""

from __future__ import annotations

from typing import List

import keras
import numpy as np

from rtmdet_keras.models.layers import InputNormalization

# Layers between the normalisation and the first convolution that treat every channel alike, so the
# reversal passes through them unchanged.
CHANNEL_AGNOSTIC = ("ZeroPadding2D", "Identity")


def _consumers(model, layer) -> list:
    """Layers of a functional ``model`` that take an output of ``layer`` as an input."""
    found = []
    for candidate in model.layers:
        for node in candidate._inbound_nodes:
            if any(t._keras_history.operation is layer for t in node.input_tensors) and candidate not in found:
                found.append(candidate)
    return found


def reversal_targets(model, norm) -> List:
    """The convolutions that read ``norm``'s output (through zero padding only), whose kernels take the
    reversal; raises ``ValueError`` naming the layer when the reversal cannot be folded (a consumer that
    mixes channels in another way, e.g. a depthwise convolution or a concatenation)."""
    targets, frontier = [], [norm]
    while frontier:
        layer = frontier.pop()
        for c in _consumers(model, layer):
            kind = type(c).__name__
            if kind == "Conv2D" and getattr(c, "groups", 1) == 1:
                targets.append(c)
            elif kind in CHANNEL_AGNOSTIC:
                frontier.append(c)
            else:
                raise ValueError(f"cannot fold the BGR reversal of {norm.name!r}: it feeds {c.name!r} ({kind}); only "
                                 f"plain convolutions (through zero padding) take it")
    if not targets:
        raise ValueError(f"cannot fold the BGR reversal of {norm.name!r}: no convolution reads it")
    return targets


def find_bgr_normalization(model):
    """The model's :class:`InputNormalization` layer with ``channel_order="bgr"``, or None."""
    found = [l for l in model.layers if isinstance(l, InputNormalization) and l.channel_order == "bgr"]
    if len(found) > 1:
        raise ValueError(f"{model.name}: {len(found)} BGR input normalisations ({[l.name for l in found]}); "
                         f"expected at most one")
    return found[0] if found else None


def fold_channel_reversal(model):
    """A copy of the functional Keras 3 ``model`` with the BGR reversal folded into the first
    convolution (see the module docstring), or ``model`` itself when it normalises in RGB order.

    The copy has the same layers, names, inputs and outputs; its normalisation is
    ``InputNormalization("rgb", mean[::-1], std[::-1])`` and the kernels of the convolutions that read
    it are reversed along their input-channel axis.
    """
    norm = find_bgr_normalization(model)
    if norm is None:
        return model
    targets = {c.name for c in reversal_targets(model, norm)}

    def clone(layer):
        config = layer.get_config()
        if layer is norm:
            config.update(channel_order="rgb", mean=list(norm.mean)[::-1], std=list(norm.std)[::-1])
            return InputNormalization.from_config(config)
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    folded.set_weights(model.get_weights())
    for name in targets:
        conv = folded.get_layer(name)
        kernel = np.asarray(conv.kernel.numpy())
        conv.kernel.assign(kernel[:, :, ::-1, :].copy())
    return folded


__all__ = ["fold_channel_reversal", "find_bgr_normalization", "reversal_targets"]
