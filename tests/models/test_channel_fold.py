"""The BGR reversal folded into the stem convolution: same outputs as the GATHER network (Keras, float32
and int8 TFLite), no GATHER left, names and the original network untouched, unfoldable graphs refused."""

import keras
import numpy as np
import pytest

from rtmdet_keras.config import load_config
from rtmdet_keras.models import build_model
from rtmdet_keras.models.channel_fold import find_bgr_normalization, fold_channel_reversal, reversal_targets
from rtmdet_keras.models.layers import InputNormalization
from tests.models.helpers import randomize_weights
from tests.export.export_check import compare_keras_tflite, run_tflite_by_hand, synthetic_images

SIZE = 64


@pytest.fixture(scope="module")
def cfg():
    return load_config("nano_relu", [f"imgsz={SIZE}", "num_classes=2", "class_names=[circle, square]"])


@pytest.fixture(scope="module")
def network(cfg):
    model = build_model(cfg)
    randomize_weights(model, seed=3)  # the init's near-constant head would hide a wrong channel order
    return model


@pytest.fixture(scope="module")
def images():
    return synthetic_images(8, (SIZE, SIZE), seed=1)


def _run(model, images):
    return {k: np.asarray(v) for k, v in model(images.astype("float32"), training=False).items()}


def test_preset_is_bgr_and_the_fold_targets_the_stem_conv(network):
    norm = find_bgr_normalization(network)
    assert norm is not None and norm.name == "normalize"
    assert [c.name for c in reversal_targets(network, norm)] == ["backbone.stem.0.conv"]


def test_folded_keras_network_gives_the_gather_networks_outputs(network, images):
    folded = fold_channel_reversal(network)
    assert [l.name for l in folded.layers] == [l.name for l in network.layers]
    norm = folded.get_layer("normalize")
    assert norm.channel_order == "rgb"
    # mmdetection's BGR mean/std, given in BGR order in the preset, now in RGB order.
    np.testing.assert_allclose(norm.mean, [123.675, 116.28, 103.53])
    np.testing.assert_allclose(norm.std, [58.395, 57.12, 57.375])
    ref, got = _run(network, images), _run(folded, images)
    for k in ref:
        spread = ref[k].std()  # how much the outputs vary over images and positions
        assert spread > 0.01, (k, spread)
        assert np.abs(ref[k] - got[k]).max() <= 1e-4 * spread, (k, np.abs(ref[k] - got[k]).max() / spread)
    # The source network is untouched: still BGR, its stem kernel unchanged.
    assert network.get_layer("normalize").channel_order == "bgr"
    k0 = np.asarray(network.get_layer("backbone.stem.0.conv").kernel)
    k1 = np.asarray(folded.get_layer("backbone.stem.0.conv").kernel)
    np.testing.assert_array_equal(k1, k0[:, :, ::-1, :])


def test_a_wrong_fold_would_be_seen(network, images):
    """The comparison above can fail: the same network without the kernel reversal differs clearly."""
    folded = fold_channel_reversal(network)
    conv = folded.get_layer("backbone.stem.0.conv")
    conv.kernel.assign(np.asarray(conv.kernel)[:, :, ::-1, :].copy())
    ref, got = _run(network, images), _run(folded, images)
    assert max(np.abs(ref[k] - got[k]).max() / ref[k].std() for k in ref) > 1e-2  # 100x the tolerance above


def test_rgb_network_is_returned_as_is():
    cfg = load_config("nano", [f"imgsz={SIZE}", "num_classes=2"])
    model = build_model(cfg)
    assert find_bgr_normalization(model) is None
    assert fold_channel_reversal(model) is model


def test_unfoldable_consumer_is_named():
    inp = keras.Input((16, 16, 3))
    x = InputNormalization("bgr", name="normalize")(inp)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    model = keras.Model(inp, y)
    with pytest.raises(ValueError, match="'dw' \\(DepthwiseConv2D\\)"):
        fold_channel_reversal(model)


@pytest.mark.slow
def test_exported_folded_graph_has_no_gather_and_matches(tmp_path, network, cfg, images):
    """float32 and int8 TFLite of the folded network against the GATHER network (Keras, and its own int8
    export calibrated on the same images)."""
    from rtmdet_keras.export.convert import export_tflite
    from rtmdet_keras.export.mcu import graph_summary

    # TFLite's own calibrator, so both graphs get ranges from the same kernels and only the fold differs
    # (the fast calibrator's float rounding moved single outputs by up to 4 steps between the two graphs).
    kw = dict(calib_dataset=images[:4], check=False, saved_model=False, print_fn=lambda *a: None,
              calibrator="tflite")
    folded = export_tflite(network, cfg, tmp_path / "folded", formats=("float32", "int8"), **kw)
    gather = export_tflite(network, cfg, tmp_path / "gather", formats=("int8",), fold_bgr=False, **kw)
    ops = {fmt: {op["op"] for op in graph_summary(folded[fmt])["ops"]} for fmt in ("float32", "int8")}
    assert "GATHER" not in ops["float32"] and "GATHER" not in ops["int8"]
    assert "GATHER" in {op["op"] for op in graph_summary(gather["int8"])["ops"]}  # what the fold removes

    r = compare_keras_tflite(network, folded["float32"], images[6:])
    assert max(v["max"] for v in r["outputs"].values()) < 1e-3

    # int8: the folded model is as close to the Keras network as the GATHER model is (both calibrated on
    # the same images), and the two agree within a few quantisation steps (the export tests' bound).
    ref = _run(network, images[6:])
    a, qa, _ = run_tflite_by_hand(folded["int8"], images[6:])
    b, qb, _ = run_tflite_by_hand(gather["int8"], images[6:])
    for k in a:
        step = max(qa[k][0], qb[k][0])
        err_folded, err_gather = np.abs(a[k] - ref[k]).mean() / step, np.abs(b[k] - ref[k]).mean() / step
        assert err_folded <= 1.2 * err_gather + 0.05, (k, err_folded, err_gather)
        assert np.abs(a[k] - b[k]).max() / step <= 3.0, k
