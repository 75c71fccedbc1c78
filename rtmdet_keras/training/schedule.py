"""Learning-rate schedule of RTMDet: warm-up, flat, cosine to a floor, optional flat tail.

All positions are optimiser steps (iterations). mmdetection's recipe: linear warm-up from
``1e-5 x lr`` over 1000 iterations, flat, then cosine from ``max_epochs / 2`` to ``max_epochs`` down
to ``0.05 x lr`` (per iteration). SSCMA's QAT recipe: quadratic warm-up over one epoch, cosine,
constant for the last two epochs.
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rtmdet_keras")
class WarmupCosineSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``lr(step)`` in four pieces.

    - ``[0, warmup_steps)``: ``lr * (r + (1 - r) * (step / warmup_steps) ** warmup_power)``, ``r = warmup_ratio``;
    - ``[warmup_steps, cosine_start)``: ``lr``;
    - ``[cosine_start, cosine_end)``: cosine from ``lr`` to ``min_lr_ratio * lr``;
    - ``[cosine_end, ...)``: ``min_lr_ratio * lr``.
    """

    def __init__(self, lr, warmup_steps, cosine_start, cosine_end, warmup_ratio=1e-5, warmup_power=1.0,
                 min_lr_ratio=0.05):
        self.lr = float(lr)
        self.warmup_steps = int(warmup_steps)
        self.cosine_start = int(cosine_start)
        self.cosine_end = int(max(cosine_end, cosine_start))
        self.warmup_ratio = float(warmup_ratio)
        self.warmup_power = float(warmup_power)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        progress = ops.clip(step / warm, 0.0, 1.0) ** self.warmup_power
        warm_factor = self.warmup_ratio + (1.0 - self.warmup_ratio) * progress
        span = float(max(self.cosine_end - self.cosine_start, 1))
        t = ops.clip((step - float(self.cosine_start)) / span, 0.0, 1.0)
        cos_factor = self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + ops.cos(math.pi * t))
        factor = ops.where(step < float(self.warmup_steps), warm_factor, cos_factor)
        return self.lr * factor

    def get_config(self):
        return {
            "lr": self.lr, "warmup_steps": self.warmup_steps, "cosine_start": self.cosine_start,
            "cosine_end": self.cosine_end, "warmup_ratio": self.warmup_ratio, "warmup_power": self.warmup_power,
            "min_lr_ratio": self.min_lr_ratio,
        }


def lr_key(cfg) -> str:
    """``"finetune_lr"`` when weights are loaded (``load_from`` or ``backbone_weights``) and it is set,
    else ``"lr"``: a network trained from scratch wants a much larger rate than one fine-tuned."""
    pretrained = bool(cfg.load_from or cfg.backbone_weights)
    return "finetune_lr" if pretrained and cfg.finetune_lr is not None else "lr"


def base_lr(cfg) -> float:
    """The rate :func:`lr_key` names, at ``cfg.base_batch_size``."""
    return float(getattr(cfg, lr_key(cfg)))


def scaled_lr(cfg) -> float:
    """Learning rate at ``cfg.batch_size``: :func:`base_lr`, scaled linearly from ``cfg.base_batch_size``."""
    return base_lr(cfg) * cfg.batch_size / cfg.base_batch_size


def training_schedule(cfg, steps_per_epoch: int) -> WarmupCosineSchedule:
    """The RTMDet schedule for a training run of ``cfg.max_epochs`` epochs.

    The warm-up is ``cfg.warmup_iters`` iterations, but never more than a tenth of the run: a short
    run on a small data set would otherwise spend all of it warming up.
    """
    total = cfg.max_epochs * steps_per_epoch
    warmup = min(cfg.warmup_iters, max(1, total // 10))
    return WarmupCosineSchedule(
        lr=scaled_lr(cfg), warmup_steps=warmup, cosine_start=(cfg.max_epochs // 2) * steps_per_epoch,
        cosine_end=total, warmup_ratio=cfg.warmup_ratio, min_lr_ratio=cfg.min_lr_ratio,
    )


def qat_schedule(cfg, steps_per_epoch: int) -> WarmupCosineSchedule:
    """SSCMA's QAT recipe: power warm-up over ``qat.warmup_epochs``, cosine, flat last ``qat.constant_epochs``."""
    q = cfg.qat
    warmup = q.warmup_epochs * steps_per_epoch
    end = max(q.epochs - q.constant_epochs, q.warmup_epochs) * steps_per_epoch
    return WarmupCosineSchedule(
        lr=q.lr, warmup_steps=warmup, cosine_start=warmup, cosine_end=end, warmup_ratio=cfg.warmup_ratio,
        warmup_power=q.warmup_power, min_lr_ratio=cfg.min_lr_ratio,
    )
