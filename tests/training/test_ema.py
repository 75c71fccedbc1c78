"""ExpMomentumEMA: the mmdetection exp-momentum formula, BatchNorm statistics included."""

import math

import keras
import numpy as np
import pytest

from rtmdet_keras.training.ema import ExpMomentumEMA, ema_momentum


def test_momentum_formula_by_hand():
    # (1 - 0.0002) * exp(-1/2000) + 0.0002 at the first update.
    assert ema_momentum(0) == pytest.approx(0.9998 * math.exp(-1 / 2000) + 0.0002)
    assert ema_momentum(10**7) == pytest.approx(0.0002)


def _model():
    inp = keras.Input((2,))
    x = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones", name="d")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inp, x)


def test_updates_average_every_float_weight_and_swap_restores():
    model = _model()
    ema = ExpMomentumEMA(momentum=0.5, gamma=1.0)
    ema.set_model(model)
    ema.on_train_begin()
    kernel = model.get_layer("d").kernel
    mean = model.get_layer("bn").moving_mean
    kernel.assign(np.full((2, 1), 3.0, np.float32))
    mean.assign(np.array([4.0], np.float32))
    ema.on_train_batch_end(0)
    w0 = (1 - 0.5) * math.exp(-1.0) + 0.5
    state = ema.get_state()
    names = [v.path for v in model.weights]
    k = state["weights"][names.index(kernel.path)]
    m = state["weights"][names.index(mean.path)]
    assert k == pytest.approx(np.full((2, 1), (1 - w0) * 1.0 + w0 * 3.0), rel=1e-6)
    assert m == pytest.approx([(1 - w0) * 0.0 + w0 * 4.0], rel=1e-6)  # moving mean is averaged too
    assert state["updates"] == 1
    with ema.swapped():
        assert np.asarray(kernel) == pytest.approx(k)
    assert np.asarray(kernel) == pytest.approx(np.full((2, 1), 3.0))


def test_state_round_trip():
    model = _model()
    ema = ExpMomentumEMA()
    ema.set_model(model)
    ema.on_train_begin()
    ema.on_train_batch_end(0)
    state = ema.get_state()
    other = ExpMomentumEMA()
    other.set_model(_model())
    other.set_state(state)
    assert other.get_state()["updates"] == 1
    for a, b in zip(other.get_state()["weights"], state["weights"]):
        np.testing.assert_array_equal(a, b)
