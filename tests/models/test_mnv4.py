"""MobileNetV4-Conv-S: feature channels/strides and a parameter count derived from the paper's table."""

import keras

from rtmdet_keras.models.layers import keras3_context
from rtmdet_keras.models.mnv4 import make_divisible, mnv4_conv_small_backbone


def _paper_table_params():
    """Trainable parameters of MNv4-Conv-S up to the 960-channel conv, from the paper's table
    (expanded widths written out as published, BN = gamma + beta)."""
    def conv(cin, cout, k):
        return cin * cout * k * k + 2 * cout

    def dw(c, k):
        return c * k * k + 2 * c

    total = conv(3, 32, 3) + conv(32, 32, 3) + conv(32, 32, 1) + conv(32, 96, 3) + conv(96, 64, 1)
    # (in, start dw, expanded, middle dw, out)
    uibs = [(64, 5, 192, 5, 96)] + [(96, 0, 192, 3, 96)] * 4 + [(96, 3, 384, 0, 96),
            (96, 3, 576, 3, 128), (128, 5, 512, 5, 128), (128, 0, 512, 5, 128), (128, 0, 384, 5, 128),
            (128, 0, 512, 3, 128), (128, 0, 512, 3, 128)]
    for cin, k_start, mid, k_mid, cout in uibs:
        total += (dw(cin, k_start) if k_start else 0) + conv(cin, mid, 1) + (dw(mid, k_mid) if k_mid else 0)
        total += conv(mid, cout, 1)
    return total + conv(128, 960, 1)


def test_expansion_widths_follow_make_divisible():
    assert [make_divisible(c * r) for c, r in [(64, 3), (96, 2), (96, 4), (96, 6), (128, 4), (128, 3)]] == [
        192, 192, 384, 576, 512, 384]


def test_features_and_parameters():
    inp = keras.Input((64, 64, 3))
    feats = mnv4_conv_small_backbone(keras3_context(), inp)
    assert [tuple(f.shape) for f in feats] == [(None, 8, 8, 64), (None, 4, 4, 96), (None, 2, 2, 960)]
    model = keras.Model(inp, feats)
    assert sum(int(w.numpy().size) for w in model.trainable_weights) == _paper_table_params() == 1_261_664
    # With the classifier (1x1 conv 960 -> 1280 + BN, fully connected 1280 -> 1000) this is
    # 1,261,664 + 1,228,800 + 2,560 + 1,281,000 = 3,774,024: the published "3.8 M" of MNv4-Conv-S.
    names = {layer.name for layer in model.layers}
    assert {"backbone.layer3.0.start_dw.conv", "backbone.layer3.0.middle_dw.pad", "backbone.layer3.1.add",
            "backbone.layer3.5.start_dw.bn", "backbone.layer4.0.proj_conv.bn", "backbone.layer5.0.conv"} <= names
    assert "backbone.layer3.0.add" not in names and "backbone.layer3.0.start_dw.act" not in names
