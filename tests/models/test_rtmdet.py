"""build_model: output shapes of every preset, exact parameter counts against mmdetection's
published figures, .keras round trip, metadata."""

import numpy as np
import pytest

from rtmdet_keras import load_config
from rtmdet_keras.models import build_model, model_metadata, output_names
from tests.models.helpers import build_symbolic, free, randomize_weights, small_cfg

PRESETS = ["nano", "nano_relu", "nano_relu_q", "tiny", "s", "m", "l", "x", "mnv4"]


# ---------------------------------------------------------------------------------------------
# Parameter counts, worked out from the layer list alone (not from the model code).
#
# Convention: PyTorch's model.parameters(), which is what mmdetection's published "Params (M)"
# counts: conv kernels, conv biases where present, BatchNorm gamma and beta (2 per channel; the
# running mean/variance are buffers), a module shared by several levels once. Counting BN as 4 per
# channel gives tiny 4,913,976, not the 4,896,168 of the reference; counting the shared head convs
# three times would add 2 * 2 * 9 * feat^2 per extra level (tiny: +663,552).
# ---------------------------------------------------------------------------------------------
def _conv(cin, cout, k, depthwise=False, bias=False):
    return cout * (1 if depthwise else cin) * k * k + (cout if bias else 0)


def _cba(cin, cout, k, depthwise=False):  # ConvModule: conv without bias + BN (gamma, beta)
    return _conv(cin, cout, k, depthwise) + 2 * cout


def _csp(cin, cout, blocks, attention):
    mid = cout // 2
    block = _cba(mid, mid, 3) + _cba(mid, mid, 5, depthwise=True) + _cba(mid, mid, 1)
    total = 2 * _cba(cin, mid, 1) + blocks * block + _cba(2 * mid, cout, 1)
    return total + (_conv(2 * mid, 2 * mid, 1, bias=True) if attention else 0)


def rtmdet_param_count(widen, deepen, neck_blocks, num_classes=80, share_conv=True):
    """(backbone, neck, head) parameters of RTMDet with a CSPNeXt-P5 backbone and channel attention."""
    c = lambda v: int(v * widen)  # noqa: E731
    stem = int(64 * widen // 2)
    backbone = _cba(3, stem, 3) + _cba(stem, stem, 3) + _cba(stem, c(64), 3)
    for cin, cout, n, spp in [(64, 128, 3, False), (128, 256, 6, False), (256, 512, 6, False), (512, 1024, 3, True)]:
        backbone += _cba(c(cin), c(cout), 3)  # stride-2 downsample
        if spp:  # 1x1 to half, three pools (no parameters), concat of 4 halves, 1x1 back
            backbone += _cba(c(cout), c(cout) // 2, 1) + _cba(2 * c(cout), c(cout), 1)
        backbone += _csp(c(cout), c(cout), max(round(n * deepen), 1), attention=True)
    c3, c4, c5 = c(256), c(512), c(1024)
    out = c(256)
    neck = (_cba(c5, c4, 1) + _csp(2 * c4, c4, neck_blocks, False)      # top-down to P4
            + _cba(c4, c3, 1) + _csp(2 * c3, c3, neck_blocks, False)    # top-down to P3
            + _cba(c3, c3, 3) + _csp(2 * c3, c4, neck_blocks, False)    # bottom-up to P4
            + _cba(c4, c4, 3) + _csp(2 * c4, c5, neck_blocks, False)    # bottom-up to P5
            + _cba(c3, out, 3) + _cba(c4, out, 3) + _cba(c5, out, 3))   # out convs
    towers = 2 * 2  # cls and reg, 2 stacked convs each
    head = ((1 if share_conv else 3) * towers * _conv(out, out, 3) + 3 * towers * 2 * out
            + 3 * (_conv(out, num_classes, 1, bias=True) + _conv(out, 4, 1, bias=True)))
    return backbone, neck, head


# preset -> (widen, deepen, neck blocks, exact parameters with 80 classes, published "Params (M)")
PUBLISHED = {
    "tiny": (0.375, 0.167, 1, 4_896_168, 4.8),   # the reference's exact 4,896,168
    "s": (0.5, 0.33, 1, 8_886_924, 8.89),
    "m": (0.75, 0.67, 2, 24_709_188, 24.71),
    "l": (1.0, 1.0, 3, 52_315_804, 52.3),
    "x": (1.25, 1.33, 4, 94_855_572, 94.86),
}


def test_arithmetic_reproduces_the_published_figures():
    for preset, (widen, deepen, blocks, exact, published) in PUBLISHED.items():
        total = sum(rtmdet_param_count(widen, deepen, blocks))
        assert total == exact, preset
        digits = 1 if preset == "tiny" else len(str(published).split(".")[1])
        rounded = round(total / 1e6, digits)
        # tiny is published as "4.8" (truncated); the others round to the published digits.
        assert rounded == published or (preset == "tiny" and int(total / 1e5) / 10 == published), preset
    # tiny split: backbone 2,348,700, neck 2,188,944, head 358,524.
    assert rtmdet_param_count(0.375, 0.167, 1) == (2_348_700, 2_188_944, 358_524)


@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_model_parameter_count_is_exact(preset):
    cfg = load_config(preset, {"num_classes": 80, "imgsz": [64, 64]})
    model = build_symbolic(cfg)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == PUBLISHED[preset][3]
    free()


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_output_shapes_at_192_and_320(preset):
    for size in (192, 320):
        cfg = load_config(preset, {"num_classes": 2, "imgsz": [size, size]})
        model = build_symbolic(cfg)
        shapes = {k: tuple(v.shape) for k, v in model.output.items()}
        want = {}
        for s, level in ((8, "p3"), (16, "p4"), (32, "p5")):
            want[f"cls_{level}"] = (None, size // s, size // s, 2)
            want[f"reg_{level}"] = (None, size // s, size // s, 4)
        assert shapes == want, (preset, size)
        assert model.output_names == sorted(want) and model.input_shape == (None, size, size, 3)
        free()


def test_forward_on_a_non_square_image():
    cfg = small_cfg("nano", num_classes=2)
    cfg.imgsz = [64, 96]
    model = build_model(cfg)
    out = model(np.zeros((1, 64, 96, 3), np.float32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "cls_p3": (1, 8, 12, 2), "reg_p3": (1, 8, 12, 4), "cls_p4": (1, 4, 6, 2), "reg_p4": (1, 4, 6, 4),
        "cls_p5": (1, 2, 3, 2), "reg_p5": (1, 2, 3, 4)}
    # Fresh head: every logit is the prior bias -log(99), box distances near 0.
    np.testing.assert_allclose(np.asarray(out["cls_p4"]), -np.log(99.0), atol=0.05)


def test_normalisation_is_inside_the_model():
    cfg = small_cfg("tiny")
    model = build_model(cfg)
    layer = model.get_layer("normalize")
    assert (layer.channel_order, layer.mean, layer.std) == ("bgr", [103.53, 116.28, 123.675], [57.375, 57.12, 58.395])
    assert model.get_layer("backbone.stem.0.pad").input is layer.output


# ---------------------------------------------------------------------------------------------
# Saving, metadata, errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "nano_relu"])  # shared head convs / ReLU + 3x3 pool chain
def test_keras_file_round_trip_gives_identical_outputs(preset, tmp_path):
    import keras

    model = build_model(small_cfg(preset))
    randomize_weights(model, seed=1)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    before = model(x)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    after = loaded(x)
    for k in before:
        np.testing.assert_array_equal(np.asarray(before[k]), np.asarray(after[k]))
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


def test_metadata_and_output_names_come_from_the_config():
    m = model_metadata(small_cfg("m"))
    assert m["exp_on_reg"] is True and m["strides"] == [8, 16, 32]
    assert model_metadata(small_cfg("tiny"))["exp_on_reg"] is False
    assert output_names(small_cfg("nano")) == ["cls_p3", "reg_p3", "cls_p4", "reg_p4", "cls_p5", "reg_p5"]


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="framework"):
        build_model(small_cfg("nano"), framework="torch")
    cfg = small_cfg("nano")
    cfg.model.widen_factor = 0.5  # neck_in_channels not updated
    with pytest.raises(ValueError, match="neck_in_channels"):
        build_model(cfg)
