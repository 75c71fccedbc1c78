"""RTMDetSepBNHead: shared convs with per-level BN, separate convs, init, outputs."""

import math

import keras
import numpy as np
import pytest

from rtmdet_keras.levels import level_name
from rtmdet_keras.models.head import rtmdet_sep_bn_head
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
    np.testing.assert_allclose(model.get_layer("bbox_head.rtm_reg.0").get_weights()[1], 2.0)  # nano's reg_prior
    large, _ = _head(small_cfg("s", num_classes=2), share=True)
    assert not large.get_layer("bbox_head.rtm_reg.0").get_weights()[1].any()  # mmdetection's init
    tower = model.get_layer("bbox_head.cls_convs.0.0.conv").get_weights()[0]
    assert abs(float(tower.std()) - 0.01) < 0.001 and abs(float(cls_kernel.std()) - 0.01) < 0.002


def test_level_names():
    assert [level_name(s) for s in (8, 16, 32, 64)] == ["p3", "p4", "p5", "p6"]
    with pytest.raises(ValueError, match="powers of two"):
        level_name(12)


@pytest.mark.parametrize("exp_on_reg", [False, True])
def test_reg_prior_starts_every_prior_as_a_box_of_that_many_strides(exp_on_reg):
    from rtmdet_keras.boxes import decode_predictions, make_priors

    cfg = small_cfg("nano", num_classes=2)
    cfg.model.reg_prior = 2.0
    cfg.model.exp_on_reg = exp_on_reg
    model, _ = _head(cfg, share=False)
    bias = model.get_layer("bbox_head.rtm_reg.2").get_weights()[1]
    np.testing.assert_allclose(bias, math.log(2.0) if exp_on_reg else 2.0, rtol=1e-6)
    # With all-zero features the towers give 0 after BN, so every box is exactly the prior: a square of
    # 2 x 2 strides around its centre (16 px at stride 8, 64 px at stride 32).
    f = cfg.model.feat_channels
    outs = model([np.zeros((1, 8 // 2 ** i, 8 // 2 ** i, f), np.float32) for i in range(3)])
    priors = make_priors(64, 64, [8, 16, 32])
    boxes = np.asarray(decode_predictions({k: np.asarray(v) for k, v in outs.items()}, priors, exp_on_reg))[0]
    sides = np.concatenate([np.full(64, 32.0), np.full(16, 64.0), np.full(4, 128.0)])
    np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], sides, rtol=1e-4)
    np.testing.assert_allclose(boxes[:, 3] - boxes[:, 1], sides, rtol=1e-4)
    np.testing.assert_allclose((boxes[:, 0] + boxes[:, 2]) / 2, np.asarray(priors)[:, 0], atol=1e-3)
