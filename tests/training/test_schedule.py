"""The RTMDet learning-rate schedule, against values worked out from the formulas in the reference."""

import math

import numpy as np
import pytest

from rtmdet_keras.config import load_config
from rtmdet_keras.training.schedule import WarmupCosineSchedule, qat_schedule, scaled_lr, training_schedule


def lr_at(schedule, step):
    return float(np.asarray(schedule(step)))


def test_pieces_of_the_schedule():
    s = WarmupCosineSchedule(lr=1.0, warmup_steps=100, cosine_start=300, cosine_end=500, warmup_ratio=1e-5,
                             min_lr_ratio=0.05)
    assert lr_at(s, 0) == pytest.approx(1e-5)
    assert lr_at(s, 50) == pytest.approx(1e-5 + (1 - 1e-5) * 0.5, rel=1e-5)
    assert lr_at(s, 100) == pytest.approx(1.0)
    assert lr_at(s, 299) == pytest.approx(1.0)
    # Half-way through the cosine: 0.05 + 0.95 * (1 + cos(pi/2)) / 2 = 0.525.
    assert lr_at(s, 400) == pytest.approx(0.525, rel=1e-5)
    assert lr_at(s, 500) == pytest.approx(0.05, rel=1e-5)
    assert lr_at(s, 10_000) == pytest.approx(0.05, rel=1e-5)


def test_mmdetection_recipe_for_a_long_run():
    cfg = load_config("s")  # lr 0.004 at batch 256, run at batch 32
    assert scaled_lr(cfg) == pytest.approx(0.0005)
    s = training_schedule(cfg, steps_per_epoch=100)  # 300 epochs: 30000 steps, warm-up stays 1000
    assert s.warmup_steps == 1000 and s.cosine_start == 150 * 100 and s.cosine_end == 300 * 100
    assert lr_at(s, 1000) == pytest.approx(0.0005)
    assert lr_at(s, 30000) == pytest.approx(0.0005 * 0.05, rel=1e-5)


def test_short_run_warms_up_over_a_tenth():
    cfg = load_config("nano", ["max_epochs=50"])
    s = training_schedule(cfg, steps_per_epoch=7)  # 350 steps in all
    assert s.warmup_steps == 35 and s.cosine_start == 25 * 7


def test_qat_recipe_quadratic_warmup_cosine_then_flat():
    cfg = load_config("nano_relu_q")  # 5 epochs, lr 2e-5, 1 warm-up epoch, 2 flat epochs
    s = qat_schedule(cfg, steps_per_epoch=10)
    # Quadratic: at half the warm-up the factor is r + (1 - r) * 0.25.
    assert lr_at(s, 5) == pytest.approx(2e-5 * (1e-5 + (1 - 1e-5) * 0.25), rel=1e-4)
    assert lr_at(s, 10) == pytest.approx(2e-5)
    assert lr_at(s, 20) == pytest.approx(2e-5 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.5))), rel=1e-4)
    assert lr_at(s, 30) == pytest.approx(2e-5 * 0.05, rel=1e-4)
    assert lr_at(s, 49) == pytest.approx(2e-5 * 0.05, rel=1e-4)


def test_schedule_serialises():
    s = WarmupCosineSchedule(lr=0.1, warmup_steps=3, cosine_start=5, cosine_end=9, warmup_power=2.0)
    again = WarmupCosineSchedule.from_config(s.get_config())
    assert [lr_at(again, i) for i in range(12)] == pytest.approx([lr_at(s, i) for i in range(12)])


def test_finetune_lr_applies_only_when_weights_are_loaded():
    scratch = load_config("nano", ["lr=0.01", "finetune_lr=0.0005", "batch_size=16", "base_batch_size=32"])
    assert scaled_lr(scratch) == pytest.approx(0.005)
    tuned = load_config("nano", ["lr=0.01", "finetune_lr=0.0005", "batch_size=16", "base_batch_size=32",
                                 "load_from=weights.npz"])
    assert scaled_lr(tuned) == pytest.approx(0.00025)
    backbone = load_config("nano", ["lr=0.01", "finetune_lr=0.0005", "backbone_weights=b.npz"])
    assert scaled_lr(backbone) == pytest.approx(0.0005 * backbone.batch_size / backbone.base_batch_size)
    unset = load_config("nano", ["lr=0.01", "finetune_lr=null", "load_from=weights.npz"])
    assert scaled_lr(unset) == pytest.approx(0.01 * unset.batch_size / unset.base_batch_size)
