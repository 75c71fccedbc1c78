"""Shared by the export tests: a small stand-in network and the Keras-vs-TFLite comparison.

``compare_keras_tflite`` is deliberately written without the package's own runner
(:mod:`rtmdet_keras.runtime.tflite`): it quantises the input, runs the LiteRT signature and
dequantises the outputs by hand from the tensors' own parameters, so a bug in the runner cannot hide
behind the same bug here. Import it explicitly: ``from tests.export.export_check import ...``.
"""

from __future__ import annotations

import numpy as np

# Operators an exported RTMDet int8 model may contain (the MCU/NPU-friendly set; see
# rtmdet_keras.export.mcu.MCU_INT8_OPS). RESHAPE only appears with the "decoded" layout, LOGISTIC
# with SiLU or the "scores" layout, MEAN/HARD_SWISH-style arithmetic with channel attention.
ALLOWED_INT8_OPS = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL", "CONCATENATION", "MAX_POOL_2D", "AVERAGE_POOL_2D",
    "RESIZE_NEAREST_NEIGHBOR", "PAD", "LOGISTIC", "RESHAPE", "MEAN", "HARD_SWISH", "RELU", "RELU6",
}
EDGE_OPS = {"QUANTIZE"}  # int8 -> int8 requantisation, or uint8 -> int8 right after a uint8 input


def standin_network(imgsz=(64, 64), num_classes=2, width=8, act="relu", seed=0):
    """A functional network with the contract of ``rtmdet_keras.models.build_model``: input float32
    ``[None, H, W, 3]`` raw RGB 0-255 (normalised inside), outputs ``cls_p3/4/5`` logits and
    ``reg_p3/4/5`` raw distances. Conv + BN + act stacks, a depthwise conv, a stride-1 max pool, channel
    attention, nearest upsampling (one RESIZE_NEAREST_NEIGHBOR), concatenation. BatchNorm statistics
    are randomised so that folding them is exercised."""
    import keras
    from keras import layers, ops

    keras.utils.set_random_seed(seed)

    @keras.saving.register_keras_serializable(package="rtmdet_keras_tests")
    class StandinUpsample(layers.Layer):
        def call(self, x):
            return ops.image.resize(x, (x.shape[1] * 2, x.shape[2] * 2), interpolation="nearest")

        def compute_output_shape(self, s):
            return (s[0], s[1] * 2, s[2] * 2, s[3])

    def cba(x, f, k=3, s=1, name=None, depthwise=False):
        if s == 2:
            x = layers.ZeroPadding2D(k // 2, name=f"{name}.pad")(x)
        pad = "same" if s == 1 else "valid"
        if depthwise:
            x = layers.DepthwiseConv2D(k, strides=s, padding=pad, use_bias=False, name=f"{name}.conv")(x)
        else:
            x = layers.Conv2D(f, k, strides=s, padding=pad, use_bias=False, name=f"{name}.conv")(x)
        x = layers.BatchNormalization(epsilon=1e-5, name=f"{name}.bn")(x)
        return layers.ReLU(name=f"{name}.act")(x) if act == "relu" else layers.Activation("silu", name=f"{name}.act")(x)

    h, w = imgsz
    inp = keras.Input((h, w, 3), dtype="float32", name="images")
    x = layers.Rescaling(1.0 / 255.0, name="normalize")(inp)
    x = cba(x, width, s=2, name="stem0")
    x = cba(x, width, s=2, name="stem1")
    c3 = cba(x, width * 2, s=2, name="c3")
    c3 = cba(c3, width * 2, 5, name="c3dw", depthwise=True)
    c4 = cba(c3, width * 2, s=2, name="c4")
    c5 = cba(c4, width * 4, s=2, name="c5")
    pooled = layers.MaxPooling2D(5, strides=1, padding="same", name="spp.pool")(c5)
    c5 = cba(layers.Concatenate(name="spp.cat")([c5, pooled]), width * 4, 1, name="spp.out")
    att = layers.GlobalAveragePooling2D(keepdims=True, name="att.pool")(c5)
    att = layers.Conv2D(width * 4, 1, name="att.fc")(att)
    att = layers.Activation("hard_sigmoid", name="att.act")(att)
    c5 = layers.Multiply(name="att.mul")([c5, att])
    t4 = cba(c5, width * 2, 1, name="reduce")
    p4 = cba(layers.Concatenate(name="cat4")([StandinUpsample(name="up4")(t4), c4]), width * 2, name="p4")
    p3 = cba(layers.Concatenate(name="cat3")([StandinUpsample(name="up3")(p4), c3]), width * 2, name="p3")
    outs = {}
    for lv, f in (("p3", p3), ("p4", p4), ("p5", c5)):
        c = cba(f, width * 2, name=f"head.cls.{lv}")
        r = cba(f, width * 2, name=f"head.reg.{lv}")
        outs[f"cls_{lv}"] = layers.Conv2D(num_classes, 1, name=f"cls_{lv}",
                                          bias_initializer=keras.initializers.Constant(-4.595))(c)
        outs[f"reg_{lv}"] = layers.Conv2D(4, 1, name=f"reg_{lv}", bias_initializer=keras.initializers.Constant(2.0))(r)
    model = keras.Model(inp, outs, name="standin")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, c).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.2, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
    return model


def synthetic_images(n, imgsz=(64, 64), seed=0):
    """``uint8 [n, H, W, 3]``: coloured rectangles on a noisy background, with a 114 letterbox band."""
    rng = np.random.default_rng(seed)
    h, w = imgsz
    imgs = rng.integers(60, 200, (n, h, w, 3)).astype(np.uint8)
    for img in imgs:
        for _ in range(3):
            y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
            y1, x1 = y0 + rng.integers(6, h // 2), x0 + rng.integers(6, w // 2)
            img[y0:y1, x0:x1] = rng.integers(0, 256, 3)
        img[h - h // 8:] = 114
    return imgs


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _boxes(reg, stride):
    """Per-level raw distances ``[B, h, w, 4]`` -> xyxy pixels (priors at ``(j*s, i*s)``), by hand."""
    gh, gw = reg.shape[1:3]
    py, px = np.meshgrid(np.arange(gh) * stride, np.arange(gw) * stride, indexing="ij")
    d = reg * stride
    return np.stack([px - d[..., 0], py - d[..., 1], px + d[..., 2], py + d[..., 3]], -1)


def run_tflite_by_hand(path, images):
    """Run a .tflite on raw images ``[B, H, W, 3]``: ``(outputs by name, dequantised float32,
    {name: (scale, zero_point) or None}, input details)``."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=2)
    runner = it.get_signature_runner()
    (in_name, in_det), = runner.get_input_details().items()
    out_det = runner.get_output_details()
    quant = {}
    for name, d in out_det.items():
        s, z = d["quantization"]
        quant[name] = (s, z) if s else None
    outs = {}
    for img in images:
        x = img[None].astype(np.float32)
        s, z = in_det["quantization"]
        if s:
            info = np.iinfo(in_det["dtype"])
            x = np.clip(np.round(x / s) + z, info.min, info.max).astype(in_det["dtype"])
        res = runner(**{in_name: x})
        for name, v in res.items():
            v = v.astype(np.float32)
            if quant[name]:
                v = (v - quant[name][1]) * quant[name][0]
            outs.setdefault(name, []).append(v)
    return {k: np.concatenate(v, 0) for k, v in outs.items()}, quant, in_det


def compare_keras_tflite(network, tflite_path, images, strides=(8, 16, 32)):
    """Run both on the same images and return per-output and decoded errors.

    Returns ``{"outputs": {name: {"max": abs error, "steps": max error / scale (None for float)}},
    "score_max", "box_max" (pixels), "quant": {...}, "input": details}``. Handles the ``logits`` and
    ``scores`` layouts.
    """
    import tensorflow as tf

    keras_out = {k: np.asarray(v) for k, v in network(tf.constant(images, tf.float32), training=False).items()}
    tfl, quant, in_det = run_tflite_by_hand(tflite_path, images)
    result = {"outputs": {}, "quant": quant, "input": in_det}
    score_max, box_max = 0.0, 0.0
    for i, s in enumerate(strides):
        lv = f"p{int(np.log2(s))}"
        k_cls, k_reg = keras_out[f"cls_{lv}"], keras_out[f"reg_{lv}"]
        if f"cls_{lv}" in tfl:
            t_scores, ref = _sigmoid(tfl[f"cls_{lv}"]), k_cls
            name = f"cls_{lv}"
        else:
            t_scores, ref = tfl[f"scores_{lv}"], _sigmoid(k_cls)
            name = f"scores_{lv}"
        for key, a, b in ((name, ref, tfl[name]), (f"reg_{lv}", k_reg, tfl[f"reg_{lv}"])):
            err = float(np.abs(a - b).max())
            q = quant[key]
            result["outputs"][key] = {"max": err, "steps": err / q[0] if q else None}
        score_max = max(score_max, float(np.abs(_sigmoid(k_cls) - t_scores).max()))
        box_max = max(box_max, float(np.abs(_boxes(k_reg, s) - _boxes(tfl[f"reg_{lv}"], s)).max()))
    result["score_max"], result["box_max"] = score_max, box_max
    return result
