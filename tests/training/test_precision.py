"""Mixed precision: the policy choice, a training step in bfloat16 on the CPU with the loss in float32,
and a float32 twin for what the run saves."""

import keras
import numpy as np
import tensorflow as tf

from rtmdet_keras.config import load_config
from rtmdet_keras.models import build_model
from rtmdet_keras.training.detector import RTMDetDetector, build_optimizer
from rtmdet_keras.training.precision import cpu_has_bfloat16, dtype_policy, float32_twin, mixed_policy_name

TINY = ["imgsz=64", "num_classes=2", "model.widen_factor=0.125", "model.neck_in_channels=[32,64,128]",
        "model.neck_out_channels=16", "model.feat_channels=16"]


def test_policy_choice(tmp_path):
    assert mixed_policy_name(gpus=2, cpu_bf16=False) == "mixed_float16"
    assert mixed_policy_name(gpus=0, cpu_bf16=True) == "mixed_bfloat16"
    assert mixed_policy_name(gpus=0, cpu_bf16=False) is None
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t: fpu avx2 avx512f avx512_bf16 fma\n")
    assert cpu_has_bfloat16(str(info))
    info.write_text("flags\t: fpu avx2 fma\n")
    assert not cpu_has_bfloat16(str(info))


def test_policy_is_restored_after_the_block():
    before = keras.config.dtype_policy().name
    with dtype_policy("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before


def _batch(cfg, n=2):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    boxes = np.array([[[8, 8, 40, 40], [0, 0, 0, 0]]] * n, np.float32)
    labels = np.array([[1, -1]] * n, np.int32)
    return images, {"boxes": boxes, "labels": labels}


def test_a_bfloat16_training_step_has_a_float32_loss():
    cfg = load_config("nano", TINY)
    with dtype_policy("mixed_bfloat16"):
        network = build_model(cfg)
        detector = RTMDetDetector(network, cfg)
        detector.compile(optimizer=build_optimizer(cfg, 1e-3, network))
        images, targets = _batch(cfg)
        outputs = detector(images, training=True)
        # The network computes in bfloat16, its variables are float32 ...
        assert all(o.dtype == tf.bfloat16 for o in tf.nest.flatten(outputs))
        assert {v.dtype for v in network.trainable_weights} == {"float32"}
        # ... and the assigner and the losses work in float32.
        loss = detector.compute_loss(images, targets, outputs)
        assert loss.dtype == tf.float32 and np.isfinite(float(loss))
        before = [np.array(w) for w in network.trainable_weights]
        history = detector.fit(tf.data.Dataset.from_tensors((images, targets)).repeat(), steps_per_epoch=2,
                               epochs=1, verbose=0, shuffle=False)
        assert np.isfinite(history.history["loss"][-1])
        assert any(not np.array_equal(a, np.array(w)) for a, w in zip(before, network.trainable_weights))
        twin = float32_twin(cfg)
    # What the run saves is a float32 network that computes what the mixed one does, within bfloat16's
    # precision (8 bits of mantissa).
    twin.set_weights(network.get_weights())
    assert all(o.dtype == tf.float32 for o in tf.nest.flatten(twin(tf.cast(images, tf.float32))))
    assert {layer.dtype_policy.name for layer in twin.layers} <= {"float32"}
    ours = tf.nest.flatten(network(tf.cast(images, tf.float32)))
    theirs = tf.nest.flatten(twin(tf.cast(images, tf.float32)))
    for a, b in zip(ours, theirs):
        a, b = np.asarray(tf.cast(a, tf.float32)), np.asarray(b)
        assert np.abs(a - b).max() <= 0.05 * (np.abs(b).max() + 1)
