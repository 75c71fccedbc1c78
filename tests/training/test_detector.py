"""RTMDetDetector: compute_loss under model.fit, reported loss parts, AdamW decay exclusions."""

import keras
import numpy as np
import pytest

from rtmdet_keras.config import load_config
from rtmdet_keras.training.detector import RTMDetDetector, build_optimizer


def _tiny_network(cfg):
    """A stand-in with the real network's contract: raw RGB in, per-level cls/reg maps out."""
    h, w = cfg.imgsz
    inp = keras.Input((h, w, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    outputs = {}
    for i, (s, name) in enumerate(zip(cfg.model.strides, ("p3", "p4", "p5"))):
        f = keras.layers.Conv2D(16, 3, strides=s, padding="same", use_bias=False, name=f"stem_{name}")(x)
        f = keras.layers.BatchNormalization(name=f"bn_{name}")(f)
        f = keras.layers.ReLU()(f)
        outputs[f"cls_{name}"] = keras.layers.Conv2D(cfg.num_classes, 1, name=f"cls_{name}",
                                                     bias_initializer=keras.initializers.Constant(-4.6))(f)
        outputs[f"reg_{name}"] = keras.layers.Conv2D(4, 1, name=f"reg_{name}",
                                                     bias_initializer=keras.initializers.Constant(1.0))(f)
    return keras.Model(inp, outputs)


def _data(n, h, w, rng):
    """Images with one bright square each; the box is where the square is."""
    images = np.full((n, h, w, 3), 40, np.uint8)
    boxes = np.zeros((n, 3, 4), np.float32)
    labels = np.full((n, 3), -1, np.int32)
    for i in range(n):
        s = int(rng.integers(16, 32))
        x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        images[i, y:y + s, x:x + s] = 220
        boxes[i, 0] = [x, y, x + s, y + s]
        labels[i, 0] = 0
    return images, {"boxes": boxes, "labels": labels}


def test_fit_reports_loss_parts_and_learns():
    cfg = load_config("nano", ["num_classes=1", "imgsz=64"])
    keras.utils.set_random_seed(0)
    det = RTMDetDetector(_tiny_network(cfg), cfg)
    det.compile(optimizer=build_optimizer(cfg, 3e-3, det.network))
    x, y = _data(16, 64, 64, np.random.default_rng(0))
    first = det.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    hist = det.fit(x, y, batch_size=8, epochs=15, verbose=0).history
    assert set(hist) >= {"loss", "loss_cls", "loss_bbox"}
    assert hist["loss"][-1] == pytest.approx(hist["loss_cls"][-1] + hist["loss_bbox"][-1], rel=1e-4)
    assert hist["loss"][-1] < 0.7 * first["loss"]
    assert np.isfinite(hist["loss"]).all()


def test_batch_without_boxes_trains_as_negatives():
    cfg = load_config("nano", ["num_classes=2", "imgsz=64"])
    det = RTMDetDetector(_tiny_network(cfg), cfg)
    det.compile(optimizer=build_optimizer(cfg, 1e-3, det.network))
    x = np.zeros((4, 64, 64, 3), np.uint8)
    y = {"boxes": np.zeros((4, 5, 4), np.float32), "labels": np.full((4, 5), -1, np.int32)}
    hist = det.fit(x, y, batch_size=4, epochs=2, verbose=0).history
    assert np.isfinite(hist["loss"]).all() and hist["loss_bbox"][-1] == 0.0
    assert hist["loss_cls"][-1] > 0  # background targets still teach the classifier


def test_weight_decay_skips_batchnorm_and_biases():
    cfg = load_config("nano", ["num_classes=1", "imgsz=64"])
    net = _tiny_network(cfg)
    opt = build_optimizer(cfg, 1e-3, net)
    opt.build(net.trainable_variables)
    decayed = {v.path for v in net.trainable_variables if opt._use_weight_decay(v)}
    assert decayed == {v.path for v in net.trainable_variables if v.path.endswith("kernel")}
    assert any("bn_p3" in v.path for v in net.trainable_variables if not opt._use_weight_decay(v))


def test_training_step_is_traced_once(monkeypatch):
    """compile() builds the optimiser's slots, so the first fit step does not create variables and
    TensorFlow traces the training step once, not twice (a third of a short run's first step)."""
    cfg = load_config("nano", ["num_classes=1", "imgsz=64"])
    det = RTMDetDetector(_tiny_network(cfg), cfg)
    det.compile(optimizer=build_optimizer(cfg, 1e-3, det.network))
    assert det.optimizer.built
    assert {v.path.split("/")[0] for v in det.optimizer.variables} == {det.optimizer.name}
    traces = []
    step = RTMDetDetector.train_step
    monkeypatch.setattr(RTMDetDetector, "train_step", lambda self, data: traces.append(1) or step(self, data))
    x, y = _data(8, 64, 64, np.random.default_rng(0))
    det.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert len(traces) == 1
    assert int(det.optimizer.iterations.numpy()) == 4


@pytest.mark.slow
def test_one_replica_strategy_trains_as_the_default_path_with_keras_adamw(monkeypatch):
    """Under ``MirroredStrategy(["/cpu:0"])`` the detector (the real nano network with its fused BatchNorm,
    64 px) takes the same steps as without a strategy, once the default path runs Keras' own AdamW update
    instead of FusedAdamW's fused op: same weights, BatchNorm moving statistics and Adam slots after 4
    steps of warm-up and full rate. The two paths differ by the optimiser's rounding and nothing else
    (tf.distribute changes neither the loss, the gradients, the BatchNorm update nor the schedule)."""
    import tensorflow as tf

    from rtmdet_keras.models import build_model
    from rtmdet_keras.training.detector import FusedAdamW
    from rtmdet_keras.training.schedule import WarmupCosineSchedule

    x, y = _data(16, 64, 64, np.random.default_rng(3))

    def run(strategy):
        keras.utils.set_random_seed(0)
        cfg = load_config("nano", ["num_classes=1", "imgsz=64"])
        with strategy.scope():
            network = build_model(cfg)
            det = RTMDetDetector(network, cfg)
            opt = build_optimizer(cfg, WarmupCosineSchedule(4e-3, 2, 3, 6), network)
            det.compile(optimizer=opt)
        det.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)
        return ({w.path: w.numpy() for w in det.weights}, [v.numpy() for v in opt.variables],
                float(opt.learning_rate.numpy()))

    mirrored_w, mirrored_slots, mirrored_lr = run(tf.distribute.MirroredStrategy(["/cpu:0"]))
    monkeypatch.setattr(FusedAdamW, "_fused", lambda self: False)  # the stock update, no strategy
    default_w, default_slots, default_lr = run(tf.distribute.get_strategy())

    assert int(mirrored_slots[0]) == int(default_slots[0]) == 4  # iterations: once per step
    assert mirrored_lr == pytest.approx(default_lr, rel=1e-7)
    assert sorted(mirrored_w) == sorted(default_w)
    moved = 0
    for path, value in default_w.items():
        np.testing.assert_allclose(mirrored_w[path], value, rtol=1e-6, atol=1e-6, err_msg=path)
        moved += "moving_" in path
    assert moved >= 2 * 60  # the BatchNorm statistics were compared too
    for a, b in zip(default_slots, mirrored_slots):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
