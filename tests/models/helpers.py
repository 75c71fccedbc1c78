"""Helpers for the model tests: small configs and weights randomised so outputs say something."""

import gc

import keras
import numpy as np

from rtmdet_keras import load_config


def small_cfg(preset, imgsz=64, num_classes=3, **model):
    """A preset at a small size; ``model`` overrides ``cfg.model`` fields."""
    overrides = {"imgsz": [imgsz, imgsz], "num_classes": num_classes}
    if model:
        overrides["model"] = model
    return load_config(preset, overrides)


def randomize_weights(model, seed=0):
    """Give every weight a random value with O(1) activations (kernels ~ N(0, 1/fan_in), BN
    statistics away from 0/1), so that two models agreeing is not an accident of the init."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if type(layer).__name__.endswith("BatchNormalization"):  # FusedBatchNormalization too
            gamma, beta, mean, var = weights
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
            continue
        new = []
        for w in weights:
            if w.ndim >= 2:
                fan_in = int(np.prod(w.shape[:-1])) if type(layer).__name__ != "DepthwiseConv2D" else int(np.prod(w.shape[:2]))
                new.append(rng.normal(0, 1.0 / np.sqrt(fan_in), w.shape))
            else:
                new.append(rng.normal(0, 0.1, w.shape))
        layer.set_weights([v.astype(np.float32) for v in new])


def max_rel_diff(a, b):
    """max |a - b| over all outputs, relative to max(1, max |a|)."""
    worst = 0.0
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        worst = max(worst, float(np.max(np.abs(x - y))) / max(1.0, float(np.max(np.abs(x)))))
    return worst


def free():
    keras.backend.clear_session()
    gc.collect()


def build_symbolic(cfg, **kwargs):
    """``build_model`` for tests that only look at shapes, names and parameter counts: inside a
    ``keras.StatelessScope`` variables are created without running their initialisers (a third of
    the build time of the large presets). Do not call such a model."""
    from rtmdet_keras.models import build_model

    with keras.StatelessScope():
        return build_model(cfg, **kwargs)
