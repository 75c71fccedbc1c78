"""CSPNeXt-P5: stage plan per preset, feature shapes and strides, mmdetection layer names."""

import keras
import pytest

from rtmdet_keras.models.cspnext import cspnext_backbone, cspnext_out_channels, cspnext_stage_plan
from rtmdet_keras.models.layers import keras3_context
from tests.models.helpers import small_cfg


@pytest.mark.parametrize("preset, stem, channels, blocks", [
    # int(64 * w // 2); int(c * w); max(round(n * d), 1) with n = 3, 6, 6, 3
    ("nano", 8, [32, 64, 128, 256], [1, 2, 2, 1]),       # d 0.33: round(0.99)=1, round(1.98)=2
    ("tiny", 12, [48, 96, 192, 384], [1, 1, 1, 1]),      # d 0.167: round(0.501)=1, round(1.002)=1
    ("s", 16, [64, 128, 256, 512], [1, 2, 2, 1]),
    ("m", 24, [96, 192, 384, 768], [2, 4, 4, 2]),        # d 0.67: round(2.01)=2, round(4.02)=4
    ("l", 32, [128, 256, 512, 1024], [3, 6, 6, 3]),
    ("x", 40, [160, 320, 640, 1280], [4, 8, 8, 4]),      # d 1.33: round(3.99)=4, round(7.98)=8
])
def test_stage_plan_matches_mmdetection_scaling(preset, stem, channels, blocks):
    m = small_cfg(preset).model
    got_stem, stages = cspnext_stage_plan(m.widen_factor, m.deepen_factor)
    assert got_stem == stem
    assert [s[0] for s in stages] == channels
    assert [s[1] for s in stages] == blocks
    assert [s[2] for s in stages] == [True, True, True, False]  # identity add in blocks
    assert [s[3] for s in stages] == [False, False, False, True]  # SPP in stage 4 only
    assert cspnext_out_channels(m.widen_factor) == channels[1:] == m.neck_in_channels


def test_backbone_features_and_names():
    m = small_cfg("tiny").model
    inp = keras.Input((64, 96, 3))
    feats = cspnext_backbone(keras3_context(), inp, m)
    assert [tuple(f.shape) for f in feats] == [(None, 8, 12, 96), (None, 4, 6, 192), (None, 2, 3, 384)]
    names = {layer.name for layer in keras.Model(inp, feats).layers}
    for name in [
        "backbone.stem.0.pad", "backbone.stem.0.conv", "backbone.stem.0.bn", "backbone.stem.2.act",
        "backbone.stage1.0.conv", "backbone.stage1.1.main_conv.conv", "backbone.stage1.1.short_conv.bn",
        "backbone.stage1.1.blocks.0.conv1.conv", "backbone.stage1.1.blocks.0.conv2.depthwise_conv.conv",
        "backbone.stage1.1.blocks.0.conv2.pointwise_conv.bn", "backbone.stage1.1.blocks.0.add",
        "backbone.stage1.1.attention.fc", "backbone.stage1.1.final_conv.conv",
        "backbone.stage4.1.conv1.conv", "backbone.stage4.1.conv2.bn", "backbone.stage4.2.main_conv.conv",
    ]:
        assert name in names, name
    # Stage 4's blocks have no identity add; no channel attention without the setting.
    assert "backbone.stage4.2.blocks.0.add" not in names
    nano_inp = keras.Input((64, 64, 3))
    nano = keras.Model(nano_inp, cspnext_backbone(keras3_context(), nano_inp, small_cfg("nano").model))
    assert not any("attention" in layer.name for layer in nano.layers)
