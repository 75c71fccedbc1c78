"""Exponential moving average of all weights, BatchNorm statistics included (RTMDet's ExpMomentumEMA)."""

from __future__ import annotations

import contextlib
import math

import keras
import numpy as np
import tensorflow as tf


def ema_momentum(updates: int, momentum: float = 0.0002, gamma: float = 2000.0) -> float:
    """Weight of the *new* value at update number ``updates`` (0-based):
    ``(1 - m) * exp(-(1 + updates) / gamma) + m``. Near 1 early (the average follows the weights),
    settling to ``m``."""
    return (1.0 - momentum) * math.exp(-(1.0 + updates) / gamma) + momentum


class ExpMomentumEMA(keras.callbacks.Callback):
    """Keeps ``ema = (1 - m_t) * ema + m_t * w`` for every float weight of the model after each batch.

    Use it in any ``fit`` call. Evaluation, the best checkpoint and export use the averaged weights:
    ``with ema.swapped(): ...`` puts them into the model for the duration of the block.

    On a model with ``attach_step_hook`` (:class:`~rtmdet_keras.training.detector.RTMDetDetector`) and
    one replica, the update runs inside the compiled training step, right after the optimiser: no
    extra graph call and no wait on the host between steps; it stays there until :meth:`detach`.
    Elsewhere it runs from ``on_train_batch_end``. The arithmetic is the same.
    """

    def __init__(self, momentum: float = 0.0002, gamma: float = 2000.0, in_step: bool = True):
        super().__init__()
        self.momentum = float(momentum)
        self.gamma = float(gamma)
        self.allow_in_step = bool(in_step)  # False: always update from on_train_batch_end
        self.updates = None  # tf.Variable, number of updates so far
        self._shadow = None
        self._targets = None
        self._update_fn = None

    def _variables(self):
        return [v for v in self.model.weights if v.dtype in ("float32", "float16", "bfloat16", "float64")]

    def _ensure_built(self):
        if self._shadow is not None:
            return
        self._targets = self._variables()
        with tf.init_scope():
            self._shadow = [tf.Variable(tf.convert_to_tensor(v), trainable=False, name="ema") for v in self._targets]
            if self.updates is None:
                self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_updates")

        m, gamma = self.momentum, self.gamma
        shadow, targets, updates = self._shadow, self._targets, self.updates

        def update():
            step = tf.cast(updates, tf.float32)
            w = (1.0 - m) * tf.exp(-(1.0 + step) / gamma) + m
            for s, v in zip(shadow, targets):
                value = tf.convert_to_tensor(v)
                s.assign(s * tf.cast(1.0 - w, s.dtype) + value * tf.cast(w, s.dtype))
            updates.assign_add(1)

        self._step_update = update  # traced into the model's training step
        self._update_fn = tf.function(update)
        self._in_step = False
        self._swap_in = self._swap_out = None

    def set_model(self, model):
        if self._shadow is not None and model is not self.model:
            self._shadow = None  # a new model: start from its weights
        super().set_model(model)

    def on_train_begin(self, logs=None):
        self._ensure_built()
        attach = getattr(self.model, "attach_step_hook", None)
        self._in_step = (self.allow_in_step and attach is not None
                         and tf.distribute.get_strategy().num_replicas_in_sync == 1)
        if self._in_step:
            attach(self._step_update)

    def detach(self) -> None:
        """Take the update out of the model's training step (it stays in after ``fit`` so that the next
        ``fit``, e.g. the run's stage 2 (training/run.py), reuses the compiled step instead of tracing it again)."""
        if self._in_step:
            self.model.detach_step_hook(self._step_update)
            self._in_step = False

    def on_train_batch_end(self, batch, logs=None):
        if not self._in_step:
            self._update_fn()

    # --- state ---
    def get_state(self):
        self._ensure_built()
        return {"updates": int(self.updates.numpy()), "weights": [s.numpy() for s in self._shadow]}

    def set_state(self, state):
        self._ensure_built()
        if len(state["weights"]) != len(self._shadow):
            raise ValueError(f"EMA state has {len(state['weights'])} tensors, the model {len(self._shadow)}")
        for s, w in zip(self._shadow, state["weights"]):
            s.assign(np.asarray(w))
        self.updates.assign(int(state["updates"]))

    def state_variables(self) -> list:
        """The averaged weights and the update count (what a checkpoint stores), as variables."""
        self._ensure_built()
        return [*self._shadow, self.updates]

    def shadows_of(self, variables) -> list:
        """The averages of ``variables`` (weights of the model), as variables."""
        self._ensure_built()
        index = {id(v): s for v, s in zip(self._targets, self._shadow)}
        return [index[id(v)] for v in variables]

    def averaged_weights(self):
        self._ensure_built()
        return [s.numpy() for s in self._shadow]

    def _build_swap(self):
        # One graph call each way instead of a host round trip per weight (hundreds of them); the
        # raw weights wait in a second set of variables, so the shadow stays the average throughout.
        shadow, targets = self._shadow, self._targets
        with tf.init_scope():
            backup = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="ema_backup") for v in targets]

        @tf.function
        def swap_in():
            for b, v, s in zip(backup, targets, shadow):
                b.assign(tf.convert_to_tensor(v))
                v.assign(tf.convert_to_tensor(s))

        @tf.function
        def swap_out():
            for b, v in zip(backup, targets):
                v.assign(tf.convert_to_tensor(b))

        self._swap_in, self._swap_out = swap_in, swap_out

    @contextlib.contextmanager
    def swapped(self):
        """Temporarily load the averaged weights into the model."""
        self._ensure_built()
        if self._swap_in is None:
            self._build_swap()
        self._swap_in()
        try:
            yield
        finally:
            self._swap_out()
