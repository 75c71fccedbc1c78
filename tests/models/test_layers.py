"""Blocks and custom layers: PyTorch padding worked out by hand, the hard-sigmoid form, nearest
upsampling (values and the single TFLite op), input normalisation, the SPP pool chain, the fused
training BatchNorm against Keras' own and a NumPy reference."""

import keras
import numpy as np
import pytest

from rtmdet_keras.models.layers import (
    FusedBatchNormalization, HardSigmoid, InputNormalization, NearestUpsample, conv_bn_act, keras3_context, spp_bottleneck, spp_pool_chain,
)
from rtmdet_keras.models.twin import tf_keras_context, tf_keras_custom_layers


def _identity_bn(model, name):
    bn = model.get_layer(name)
    # (x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + 0 = x
    eps = bn.epsilon
    bn.set_weights([np.full(1, np.sqrt(1 + eps), np.float32), np.zeros(1, np.float32),
                    np.zeros(1, np.float32), np.ones(1, np.float32)])


@pytest.mark.parametrize("make_ctx", [keras3_context, tf_keras_context], ids=["keras", "tf_keras"])
def test_stride2_conv_pads_one_pixel_on_every_side_like_pytorch(make_ctx):
    # Input 4x4 = 1..16, 3x3 kernel of ones, stride 2, PyTorch padding 1 on all sides: output
    # (i, j) sums input rows 2i-1..2i+1, cols 2j-1..2j+1 (zeros outside):
    #   (0,0): 1+2+5+6 = 14                    (0,1): 2+3+4+6+7+8 = 30
    #   (1,0): 5+6+9+10+13+14 = 57             (1,1): 6+7+8+10+11+12+14+15+16 = 99
    # Keras' padding="same" would pad only bottom/right and give (0,0) = 1+2+3+5+6+7+9+10+11 = 54.
    ctx = make_ctx(act="relu")
    inp = ctx.layers.Input((4, 4, 1))
    out = conv_bn_act(ctx, inp, 1, 3, 2, act=False, name="t")
    model = ctx.Model(inp, out)
    model.get_layer("t.conv").set_weights([np.ones((3, 3, 1, 1), np.float32)])
    _identity_bn(model, "t.bn")
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    got = np.asarray(model(x, training=False))[0, :, :, 0]
    np.testing.assert_allclose(got, [[14, 30], [57, 99]], rtol=1e-6)
    assert [layer.name for layer in model.layers[1:]] == ["t.pad", "t.conv", "t.bn"]


def test_stride1_convs_pad_k_over_2_and_depthwise_stride2_too():
    ctx = keras3_context()
    inp = keras.Input((5, 5, 2))
    a = conv_bn_act(ctx, inp, 2, 5, 1, groups=2, act=False, name="dw1")
    b = conv_bn_act(ctx, inp, 2, 5, 2, groups=2, act=False, name="dw2")
    model = keras.Model(inp, [a, b])
    assert tuple(a.shape) == (None, 5, 5, 2) and tuple(b.shape) == (None, 3, 3, 2)  # (5 + 4 - 5) // 2 + 1
    for n in ("dw1", "dw2"):
        model.get_layer(f"{n}.conv").set_weights([np.ones((5, 5, 2, 1), np.float32)])
        bn = model.get_layer(f"{n}.bn")
        bn.set_weights([np.full(2, np.sqrt(1 + bn.epsilon), np.float32), np.zeros(2, np.float32),
                        np.zeros(2, np.float32), np.ones(2, np.float32)])
    x = np.ones((1, 5, 5, 2), np.float32)
    ya, yb = (np.asarray(t) for t in model(x, training=False))
    # Stride 1, pad 2: the centre sees all 25 pixels, a corner 3x3 = 9.
    assert ya[0, 2, 2, 0] == pytest.approx(25) and ya[0, 0, 0, 1] == pytest.approx(9)
    # Stride 2, pad 2: outputs centred on input 0, 2, 4 -> corners 9, edge middles 15, centre 25.
    np.testing.assert_allclose(yb[0, :, :, 0], [[9, 15, 9], [15, 25, 15], [9, 15, 9]], rtol=1e-6)


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
def test_hard_sigmoid_is_pytorchs_relu6_form(flavour):
    layer = HardSigmoid() if flavour == "keras" else tf_keras_custom_layers().HardSigmoid()
    x = np.array([-4.0, -3.0, -1.5, 0.0, 1.5, 3.0, 4.0], np.float32)
    got = np.asarray(layer(x))
    # relu6(x + 3) / 6; tf_keras' hard_sigmoid (0.2x + 0.5) would give 0.2 at -1.5 and 0.8 at 1.5.
    np.testing.assert_allclose(got, [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-7)


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
def test_nearest_upsample_repeats_each_pixel(flavour):
    cls = NearestUpsample if flavour == "keras" else tf_keras_custom_layers().NearestUpsample
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32).reshape(1, 2, 2, 1)
    got = np.asarray(cls(scale=2)(x))[0, :, :, 0]
    np.testing.assert_array_equal(got, [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    assert cls.from_config(cls(scale=2).get_config()).scale == 2


def test_nearest_upsample_exports_as_one_resize_nearest_neighbor_op():
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    inp = keras.Input((4, 4, 8), batch_size=1)
    model = keras.Model(inp, NearestUpsample(name="up")(inp))
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = Interpreter(model_content=tflite)
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert ops == ["RESIZE_NEAREST_NEIGHBOR"]


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
def test_input_normalization_reorders_then_normalises(flavour):
    cls = InputNormalization if flavour == "keras" else tf_keras_custom_layers().InputNormalization
    # Pixel R, G, B = 10, 20, 30; BGR with mean/std given in B, G, R order:
    # ((30 - 1) / 2, (20 - 2) / 4, (10 - 3) / 5) = (14.5, 4.5, 1.4).
    layer = cls("bgr", [1.0, 2.0, 3.0], [2.0, 4.0, 5.0])
    got = np.asarray(layer(np.array([[[[10.0, 20.0, 30.0]]]], np.float32)))[0, 0, 0]
    np.testing.assert_allclose(got, [14.5, 4.5, 1.4], rtol=1e-6)
    rgb = cls.from_config(cls("rgb", [0.0, 0.0, 0.0], [255.0, 255.0, 255.0]).get_config())
    np.testing.assert_allclose(np.asarray(rgb(np.full((1, 1, 1, 3), 51.0, np.float32))), 0.2, rtol=1e-6)


def test_spp_pool_chain_counts():
    assert spp_pool_chain([5, 9, 13], 5) == [1, 2, 3]
    assert spp_pool_chain([5, 9, 13], 3) == [2, 4, 6]
    with pytest.raises(ValueError, match="pool_chain_kernel"):
        spp_pool_chain([5, 9, 13], 4)
    with pytest.raises(ValueError, match="not a chain"):
        spp_pool_chain([5, 8, 13], 3)


@pytest.mark.parametrize("chain", [3, 5])
def test_spp_chain_equals_parallel_5_9_13_pools(chain):
    ctx = keras3_context()
    inp = keras.Input((16, 16, 4))
    out = spp_bottleneck(ctx, inp, 4, [5, 9, 13], chain, name="spp")
    model = keras.Model(inp, out)
    concat = keras.Model(inp, model.get_layer("spp.concat").output)
    conv1 = keras.Model(inp, model.get_layer("spp.conv1.act").output)
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 4)).astype(np.float32)
    got = np.asarray(concat(x))
    y = np.asarray(conv1(x))
    # Parallel pools of 5, 9, 13 (stride 1, padding k//2 with -inf) in NumPy.
    padded = np.pad(y, ((0, 0), (6, 6), (6, 6), (0, 0)), constant_values=-np.inf)
    want = [y]
    for k in (5, 9, 13):
        r, off = k // 2, 6 - k // 2
        pooled = np.full_like(y, -np.inf)
        for dy in range(k):
            for dx in range(k):
                pooled = np.maximum(pooled, padded[:, off + dy:off + dy + 16, off + dx:off + dx + 16, :])
        want.append(pooled)
    np.testing.assert_allclose(got, np.concatenate(want, axis=-1), rtol=1e-6)
    assert sum(type(layer).__name__ == "MaxPooling2D" for layer in model.layers) == 12 // (chain - 1)


def _bn_pair(channels, momentum=0.9, epsilon=1e-5):
    stock = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon)
    fused = FusedBatchNormalization(momentum=momentum, epsilon=epsilon)
    rng = np.random.default_rng(1)
    weights = [rng.uniform(0.5, 1.5, channels), rng.normal(0, 1, channels), rng.normal(0, 1, channels),
               rng.uniform(0.5, 2.0, channels)]
    for bn in (stock, fused):
        bn.build((None, 6, 5, channels))
        bn.set_weights([w.astype(np.float32) for w in weights])
    return stock, fused, weights


def test_fused_batchnorm_trains_like_keras_and_updates_stats_like_pytorch():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 6, 5, 3)) * 2.0 + 3.0).astype(np.float32)
    stock, fused, (gamma, beta, mean0, var0) = _bn_pair(3)
    outs, grads = [], []
    for bn in (stock, fused):
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = bn(xt, training=True)
            loss = tf.reduce_sum(y * y * x)  # a loss whose gradient reaches mean and variance
        outs.append(y.numpy())
        grads.append([g.numpy() for g in tape.gradient(loss, [xt, bn.gamma, bn.beta])])
    # Output: the batch statistics (biased variance), worked out in float64.
    m, v = x.astype(np.float64).mean((0, 1, 2)), x.astype(np.float64).var((0, 1, 2))
    expected = (x - m) / np.sqrt(v + 1e-5) * gamma + beta
    np.testing.assert_allclose(outs[1], expected, atol=2e-5)
    np.testing.assert_allclose(outs[1], outs[0], atol=2e-5)
    for g_fused, g_stock in zip(grads[1], grads[0]):
        np.testing.assert_allclose(g_fused, g_stock, rtol=1e-4, atol=1e-3)
    # Moving statistics: mean as Keras; variance from the unbiased batch variance (PyTorch's).
    n = x.shape[0] * x.shape[1] * x.shape[2]
    np.testing.assert_allclose(fused.moving_mean.numpy(), 0.9 * mean0 + 0.1 * m, rtol=1e-5)
    np.testing.assert_allclose(stock.moving_mean.numpy(), 0.9 * mean0 + 0.1 * m, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 * var0 + 0.1 * v * n / (n - 1), rtol=1e-5)
    np.testing.assert_allclose(stock.moving_variance.numpy(), 0.9 * var0 + 0.1 * v, rtol=1e-5)


def test_fused_batchnorm_inference_is_keras_own_and_reloads(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
    stock, fused, _ = _bn_pair(3)
    np.testing.assert_array_equal(fused(x, training=False).numpy(), stock(x, training=False).numpy())
    inp = keras.Input((6, 5, 3))
    model = keras.Model(inp, FusedBatchNormalization(epsilon=1e-5, name="bn")(inp))
    model.get_layer("bn").set_weights(stock.get_weights())
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization
    np.testing.assert_array_equal(loaded(x).numpy(), stock(x, training=False).numpy())


def test_keras_blocks_use_the_fused_batchnorm_and_tf_keras_its_own():
    import tf_keras

    for make_ctx, cls in ((keras3_context, FusedBatchNormalization),
                          (tf_keras_context, tf_keras.layers.BatchNormalization)):
        ctx = make_ctx()
        inp = ctx.module.Input((8, 8, 3))
        model = ctx.Model(inp, conv_bn_act(ctx, inp, 4, 3, name="c"))
        assert type(model.get_layer("c.bn")) is cls
