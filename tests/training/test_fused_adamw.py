"""FusedAdamW: Keras' AdamW arithmetic (decoupled decay with exclusions, bias-corrected Adam) in one
fused op per weight; compared with keras.optimizers.AdamW on the same model, data and schedule."""

import keras
import numpy as np
import tensorflow as tf

from rtmdet_keras.training.detector import FusedAdamW
from rtmdet_keras.training.schedule import WarmupCosineSchedule


def _train(cls, strategy=None):
    keras.utils.set_random_seed(0)
    with (strategy.scope() if strategy else tf.init_scope()):
        inp = keras.Input((4,))
        x = keras.layers.Dense(8, activation="tanh", name="d1")(inp)
        out = keras.layers.Dense(2, name="d2")(x)
        model = keras.Model(inp, out)
        opt = cls(learning_rate=WarmupCosineSchedule(0.05, 2, 3, 6), weight_decay=0.3, beta_1=0.9, beta_2=0.999,
                  epsilon=1e-8)
        opt.exclude_from_weight_decay(var_list=[model.get_layer("d1").bias])
        model.compile(optimizer=opt, loss="mse")
    init = [w.numpy().copy() for w in model.weights]
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    return [w.numpy() for w in model.weights], [v.numpy() for v in opt.variables], init


def test_same_weights_and_slots_as_keras_adamw():
    ref_w, ref_slots, init = _train(keras.optimizers.AdamW)
    w, slots, _ = _train(FusedAdamW)
    for a, b in zip(ref_w, w):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for a, b in zip(ref_slots, slots):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)  # float rounding of m and v
    assert all(np.abs(a - b).max() > 1e-3 for a, b in zip(w, init))  # every weight moved: not a vacuous match


def test_excluded_weights_are_not_decayed():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3, name="d", bias_initializer="ones")(inp))
    opt = FusedAdamW(learning_rate=0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_list=[model.get_layer("d").bias])
    model.compile(optimizer=opt, loss="mse")
    kernel0 = model.get_layer("d").kernel.numpy().copy()
    # Zero inputs and targets equal to the bias: every gradient is 0, only the decay moves weights.
    model.fit(np.zeros((4, 4), "float32"), np.ones((4, 3), "float32"), batch_size=4, epochs=1, verbose=0)
    np.testing.assert_allclose(model.get_layer("d").bias.numpy(), 1.0)
    np.testing.assert_allclose(model.get_layer("d").kernel.numpy(), kernel0 * (1 - 0.5 * 0.1), rtol=1e-6)


def test_under_a_strategy_the_stock_path_runs():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    ref_w, _, _ = _train(keras.optimizers.AdamW)
    w, _, _ = _train(FusedAdamW, strategy)
    for a, b in zip(ref_w, w):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
