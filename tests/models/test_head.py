"""RTMDetSepBNHead: shared convs with per-level BN, separate convs, init, outputs."""

import math

import keras
import numpy as np
import pytest

from rtmdet_keras.models.head import level_name, rtmdet_sep_bn_head
from rtmdet_keras.models.layers import keras3_context
from tests.models.helpers import small_cfg


def _head(cfg, share):
    f = cfg.model.feat_channels
    inputs = [keras.Input((8 // 2 ** i, 8 // 2 ** i, f)) for i in range(3)]
    outs = rtmdet_sep_bn_head(keras3_context(), inputs, cfg.model, cfg.num_classes, share)
    return keras.Model(inputs, outs), outs


def test_shared_convs_keep_a_batchnorm_per_level():
    model, outs = _head(small_cfg("tiny", num_classes=5), share=True)
    conv = model.get_layer("bbox_head.cls_convs.0.1.conv")
    assert len(conv._inbound_nodes) == 3  # one kernel, called on P3, P4, P5
    names = {layer.name for layer in model.layers}
    assert "bbox_head.cls_convs.1.1.conv" not in names and "bbox_head.reg_convs.2.0.conv" not in names
    assert {f"bbox_head.{b}_convs.{lvl}.{i}.bn" for b in ("cls", "reg") for lvl in range(3) for i in range(2)} <= names
    assert [tuple(outs[k].shape) for k in ("cls_p3", "reg_p3", "cls_p5", "reg_p5")] == [
        (None, 8, 8, 5), (None, 8, 8, 4), (None, 2, 2, 5), (None, 2, 2, 4)]


def test_separate_convs_and_init():
    model, _ = _head(small_cfg("nano", num_classes=2), share=False)
    names = {layer.name for layer in model.layers}
    assert {f"bbox_head.{b}_convs.{lvl}.{i}.conv" for b in ("cls", "reg") for lvl in range(3) for i in range(2)} <= names
    cls_kernel, cls_bias = model.get_layer("bbox_head.rtm_cls.1").get_weights()
    np.testing.assert_allclose(cls_bias, -math.log(99.0), rtol=1e-6)  # prior probability 0.01: -4.59512
    assert not model.get_layer("bbox_head.rtm_reg.0").get_weights()[1].any()
    tower = model.get_layer("bbox_head.cls_convs.0.0.conv").get_weights()[0]
    assert abs(float(tower.std()) - 0.01) < 0.001 and abs(float(cls_kernel.std()) - 0.01) < 0.002


def test_level_names():
    assert [level_name(s) for s in (8, 16, 32, 64)] == ["p3", "p4", "p5", "p6"]
    with pytest.raises(ValueError, match="powers of two"):
        level_name(12)
