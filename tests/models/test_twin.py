"""tf_keras twin: same outputs as the Keras 3 model after a weight transfer (both ways), un-shared
head convs, and transfer errors that name the layers."""

from pathlib import Path

import numpy as np
import pytest

from rtmdet_keras.models import build_model, build_twin, transfer_weights
from rtmdet_keras.models.twin import tf_keras_custom_objects
from rtmdet_keras.models.weights import shared_conv_name
from tests.models.helpers import free, max_rel_diff, randomize_weights, small_cfg


def _image(seed=0, size=64):
    return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype(np.float32)


def _pair(preset):
    cfg = small_cfg(preset)
    model = build_model(cfg)
    randomize_weights(model, seed=3)
    return cfg, model, build_twin(cfg, model)


@pytest.fixture(scope="module")
def tiny_pair():
    """tiny (shared head convs) with random weights and its twin; tests must not change them."""
    yield _pair("tiny")
    free()


@pytest.mark.parametrize("preset", ["nano", "tiny"])
def test_twin_agrees_with_keras3_both_ways(preset, tiny_pair):
    cfg, model, twin = tiny_pair if preset == "tiny" else _pair(preset)
    x = _image()
    want = model(x, training=False)
    got = {k: v.numpy() for k, v in twin(x, training=False).items()}
    assert set(got) == set(want)
    assert max_rel_diff(want, got) < 1e-5
    assert float(np.std(np.asarray(want["cls_p3"]))) > 0.1  # the outputs really vary
    # ... and back into a fresh Keras 3 model.
    back = build_model(cfg)
    written = transfer_weights(twin, back)
    assert len(written) == sum(1 for layer in back.layers if layer.weights)
    assert max_rel_diff(want, back(x, training=False)) == 0.0


def test_twin_unshares_the_head_convs_with_copies_of_the_kernel(tiny_pair):
    _, model, twin = tiny_pair
    convs = [layer for layer in twin.layers if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D")]
    assert all(len(layer._inbound_nodes) == 1 for layer in convs)
    shared = model.get_layer("bbox_head.reg_convs.0.1.conv").get_weights()[0]
    for lvl in range(3):
        np.testing.assert_array_equal(twin.get_layer(f"bbox_head.reg_convs.{lvl}.1.conv").get_weights()[0], shared)
    assert type(twin).__module__.startswith("tf_keras")


def test_diverged_level_copies_are_not_merged_silently(tiny_pair):
    cfg, source, _ = tiny_pair
    twin = build_twin(cfg, source)
    model = build_model(cfg)
    layer = twin.get_layer("bbox_head.cls_convs.2.0.conv")
    layer.set_weights([w + 0.5 for w in layer.get_weights()])
    with pytest.raises(ValueError, match=r"bbox_head.cls_convs.0.0.conv: the per-level copies .* differ"):
        transfer_weights(twin, model)
    transfer_weights(twin, model, on_diverged_shared="mean")
    mean = np.mean([twin.get_layer(f"bbox_head.cls_convs.{i}.0.conv").get_weights()[0] for i in range(3)], axis=0)
    np.testing.assert_allclose(model.get_layer("bbox_head.cls_convs.0.0.conv").get_weights()[0], mean, rtol=1e-6)


def test_mismatched_models_list_the_unmatched_layers():
    nano = build_model(small_cfg("nano"))
    nano_relu = build_model(small_cfg("nano_relu"))  # has channel attention and neck blocks
    with pytest.raises(ValueError, match=r"without a source .*backbone.stage1.1.attention.fc"):
        transfer_weights(nano, nano_relu)
    with pytest.raises(ValueError, match=r"Source layers without a destination .*attention.fc"):
        transfer_weights(nano_relu, nano)
    wide = build_model(small_cfg("nano", num_classes=5))
    with pytest.raises(ValueError, match=r"bbox_head.rtm_cls.0: shapes"):
        transfer_weights(nano, wide)
    free()


def test_shared_conv_name():
    assert shared_conv_name("bbox_head.cls_convs.2.1.conv") == "bbox_head.cls_convs.0.1.conv"
    assert shared_conv_name("bbox_head.reg_convs.1.0.conv") == "bbox_head.reg_convs.0.0.conv"
    assert shared_conv_name("bbox_head.cls_convs.0.1.conv") is None
    assert shared_conv_name("bbox_head.cls_convs.2.1.bn") is None


def test_twin_custom_layers_serialise():
    objects = tf_keras_custom_objects()
    for name in ("InputNormalization", "NearestUpsample", "HardSigmoid"):
        cls = objects[f"rtmdet_keras>{name}"]
        layer = cls()
        assert type(cls.from_config(layer.get_config())) is cls


def test_no_module_imports_tfmot():
    # Importing tensorflow_model_optimization makes tf.keras tf_keras for the whole process: the model code
    # must never do it. A source check, since another test in the session may have imported it.
    package = Path(__file__).resolve().parents[2] / "rtmdet_keras" / "models"
    for path in package.glob("*.py"):
        text = path.read_text()
        assert "import tensorflow_model_optimization" not in text and "from tensorflow_model_optimization" not in text
