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
    for _ in range(2):  # the swap functions are reused
        with ema.swapped():
            assert np.asarray(kernel) == pytest.approx(k)
            # The average stays the average while it is in the model (a checkpoint may read it).
            assert ema.get_state()["weights"][names.index(kernel.path)] == pytest.approx(k)
        assert np.asarray(kernel) == pytest.approx(np.full((2, 1), 3.0))
        assert np.asarray(mean) == pytest.approx([4.0])


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


def test_update_inside_the_training_step_equals_the_callback_update():
    import tensorflow as tf

    from rtmdet_keras.config import load_config
    from rtmdet_keras.models import build_model
    from rtmdet_keras.training.detector import RTMDetDetector

    cfg = load_config("nano", ["imgsz=(64,64)", "batch_size=2"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 64, 64, 3)).astype(np.uint8)
    targets = {"boxes": np.array([[[4, 4, 30, 40], [0, 0, 0, 0]], [[10, 20, 60, 50], [30, 5, 50, 25]]], np.float32),
               "labels": np.array([[0, -1], [1, 0]], np.int32)}
    data = tf.data.Dataset.from_tensors((images, targets)).repeat()
    states = []
    for in_step in (True, False):
        keras.utils.set_random_seed(0)
        detector = RTMDetDetector(build_model(cfg), cfg)
        detector.compile(optimizer=keras.optimizers.SGD(0.05))
        ema = ExpMomentumEMA(momentum=0.3, gamma=2.0, in_step=in_step)
        detector.fit(data, epochs=1, steps_per_epoch=2, callbacks=[ema], verbose=0)
        compiled = detector.train_function
        detector.fit(data, epochs=2, initial_epoch=1, steps_per_epoch=1, callbacks=[ema], verbose=0)
        assert ema._in_step is in_step and len(detector._step_hooks) == int(in_step)
        assert detector.train_function is compiled  # a second fit reuses the compiled step
        states.append(ema.get_state())
        ema.detach()
        assert detector._step_hooks == []
    assert states[0]["updates"] == states[1]["updates"] == 3
    moved = 0
    for a, b in zip(states[0]["weights"], states[1]["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        moved += int(not np.allclose(a, 0) and not np.allclose(a, 1))
    assert moved > 10
