"""Training hooks as Keras callbacks: COCO evaluation (+ best checkpoint), NaN guard, early stopping on
the COCO mAP, and the wrapper that shows callbacks the two stages of a run as one training.

Each is usable in anyone's own ``fit`` call. The EMA callback lives in ``ema.py``, checkpoints in
``checkpoint.py`` and the per-epoch ``results.csv`` in ``results.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from rtmdet_keras.data.draw import draw_detections
from rtmdet_keras.data.images import load_image
from rtmdet_keras.evaluation import evaluate_detections
from rtmdet_keras.files import atomic_write
from rtmdet_keras.training.checkpoint import BEST_NAME, save_inference_model


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class NanGuard(keras.callbacks.Callback):
    """Stop at the first batch whose loss is not finite, naming the epoch and step.

    Raising inside ``fit`` skips the epoch-end callbacks, so no checkpoint of the broken weights is
    written and ``last_checkpoint`` keeps pointing at the last good one.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = {k: v for k, v in logs.items() if k.startswith("loss") and not math.isfinite(float(v))}
        if bad:
            parts = ", ".join(f"{k}={float(v)}" for k, v in bad.items())
            raise TrainingDiverged(
                f"training diverged at epoch {self.epoch + 1}, step {batch + 1} ({parts}); the last good "
                f"checkpoint is kept. Lower the learning rate (lr=...) or check the data (rtmdet check-data)."
            )


class CocoEvalCallback(keras.callbacks.Callback):
    """Evaluate on the validation split every ``interval`` epochs and every epoch from ``dense_from``
    (stage 2), with EMA weights when an EMA callback is given.

    Prints pycocotools' 12-line summary and a per-class table, adds ``val_bbox_mAP`` and
    ``val_bbox_mAP_50`` to the epoch logs (progress bar, Keras' TensorBoard callback), writes the best
    model (by ``bbox_mAP``) to ``work_dir/best_coco_bbox_mAP.keras``, and hands all 12 metrics and the
    detections to ``tensorboard`` (a :class:`TensorBoardWriter`) when given.

    ``predict_fn(dataset) -> Detections`` runs the network and decode + NMS on the whole split.

    Several workers (``--strategy multiworker``): the chief evaluates (``evaluate_here``), the others do
    not, and ``share_fn(bbox_mAP or None) -> bbox_mAP`` gives every worker the chief's value, so that
    ``best_metric``, ``best_epoch`` and the ``val_bbox_mAP`` that early stopping reads agree.
    ``save_network``: the network saved as the best model, given ``network``'s weights first (a float32
    twin of a mixed-precision network); default ``network``.
    """

    def __init__(self, dataset, predict_fn: Callable, network: keras.Model, interval: int = 10,
                 dense_from: Optional[int] = None, max_epochs: Optional[int] = None, ema=None,
                 work_dir=None, best_metric: float = -1.0, tensorboard=None, print_fn=print,
                 evaluate_here: bool = True, share_fn: Optional[Callable] = None,
                 save_network: Optional[keras.Model] = None):
        super().__init__()
        self.dataset = dataset
        self.predict_fn = predict_fn
        self.network = network
        self.interval = max(int(interval), 1)
        self.dense_from = dense_from
        self.max_epochs = max_epochs
        self.ema = ema
        self.work_dir = Path(work_dir) if work_dir else None
        self.best_metric = float(best_metric)
        self.best_epoch = None
        self.tensorboard = tensorboard
        self.print_fn = print_fn
        self.last_result = None
        self.last_epoch = None  # the epoch (1-based) last_result belongs to
        self.evaluate_here = bool(evaluate_here)
        self.save_network = save_network
        self.share_fn = share_fn

    def due(self, epoch_done: int) -> bool:
        return (epoch_done % self.interval == 0 or epoch_done == self.max_epochs
                or (self.dense_from is not None and epoch_done > self.dense_from))

    def _weights(self):
        """The EMA weights in the network for the block (the raw weights without an EMA)."""
        return self.ema.swapped() if self.ema is not None else contextlib.nullcontext()

    def _score(self):
        """``(CocoResult, detections)`` of the network with the weights it holds now."""
        detections = self.predict_fn(self.dataset)
        return evaluate_detections(self.dataset, detections), detections

    def evaluate(self):
        """Evaluate now (EMA weights if any) and return ``(CocoResult, detections)``."""
        with self._weights():
            return self._score()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if not self.due(done):
            return
        if not self.evaluate_here:  # another worker evaluates; take its result
            current = float(self.share_fn(None))
            if current > self.best_metric:
                self.best_metric, self.best_epoch = current, done
            if logs is not None:
                logs["val_bbox_mAP"] = current
            return
        # One swap for the predictions and, when they are the best so far, the saved model.
        with self._weights():
            result, detections = self._score()
            current = result.metrics["bbox_mAP"]
            if self.share_fn is not None:
                self.share_fn(current)  # the other workers wait for it
            is_best = self.work_dir is not None and current > self.best_metric
            if is_best:
                self.best_metric, self.best_epoch = current, done
                self._save_best(done, result)
        self.last_result, self.last_epoch = result, done
        self.print_fn(f"\nEpoch {done}: COCO bbox evaluation on {len(self.dataset)} validation images"
                      f"{' (EMA weights)' if self.ema is not None else ''}")
        self.print_fn(result.report())
        if logs is not None:
            logs["val_bbox_mAP"] = result.metrics["bbox_mAP"]
            logs["val_bbox_mAP_50"] = result.metrics["bbox_mAP_50"]
        if is_best:
            self.print_fn(f"new best bbox_mAP {current:.4f} at epoch {done}: {self.work_dir / BEST_NAME}")
        if self.tensorboard is not None:
            self.tensorboard.write_metrics(done, result.metrics)
            self.tensorboard.write_images(done, detections)

    def _save_best(self, epoch, result):
        """Write the network as it is now (call it with the weights to keep swapped in)."""
        network = self.network
        if self.save_network is not None:
            self.save_network.set_weights(network.get_weights())
            network = self.save_network
        save_inference_model(network, self.work_dir / BEST_NAME)
        info = {"epoch": epoch, "metrics": result.metrics}
        atomic_write(self.work_dir / (BEST_NAME + ".json"),
                     lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate at the end of each epoch to the logs (TensorBoard, progress bar)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            opt = self.model.optimizer
            lr = opt.learning_rate
            logs["lr"] = float(np.asarray(lr(opt.iterations) if callable(lr) else lr))


class CocoEarlyStopping(keras.callbacks.Callback):
    """Stop training once ``patience`` epochs have passed since the best COCO bbox_mAP (``monitor`` in
    the epoch logs, which :class:`CocoEvalCallback` fills on the epochs it evaluates; the others do not
    count as evaluations). Checked at each evaluation: with ``val_interval=10`` and ``patience=5`` the run
    stops at the first evaluation 5 or more epochs after the best.

    It sets ``model.stop_training``, which ends the ``fit`` it runs in; the run (training/run.py) then skips stage 2.
    ``best`` and ``best_epoch`` (1-based) carry a resumed run's record; ``best_epoch`` is also where the
    count starts before any evaluation.
    """

    def __init__(self, patience: int, monitor: str = "val_bbox_mAP", best: float = -math.inf, best_epoch: int = 0,
                 print_fn=print):
        super().__init__()
        self.patience = int(patience)
        self.monitor = monitor
        self.best = float(best)
        self.best_epoch = int(best_epoch)
        self.stopped_epoch = None
        self.print_fn = print_fn

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or self.patience <= 0:
            return
        done = epoch + 1
        if float(value) > self.best:
            self.best, self.best_epoch = float(value), done
            return
        if done - self.best_epoch >= self.patience:
            self.model.stop_training = True
            self.stopped_epoch = done
            self.print_fn(f"early stop after epoch {done}: no better {self.monitor} than {self.best:.4f} (epoch "
                          f"{self.best_epoch}) for {done - self.best_epoch} epochs (patience={self.patience})")


def _is_keras_default(method) -> bool:
    # Keras marks the no-op hooks of Callback this way to tell which ones a subclass overrides.
    return bool(getattr(method, "_is_default", False))


class ContinuousCallbacks(keras.callbacks.Callback):
    """Shows ``callbacks`` a run of several ``fit`` calls (stage 1 and stage 2 of training/run.py) as one training:
    ``on_train_begin`` once, at the start of the first; ``on_train_end`` once, from :meth:`finish`; the
    epoch and batch events as they come (the second ``fit`` starts at ``initial_epoch``, so the epochs
    number on); and ``params["epochs"]`` the run's total, ``epochs``. Keras' ``EarlyStopping`` and
    ``CSVLogger`` so behave as in a single ``fit``, and a ``model.stop_training`` set in stage 1 ends the
    run (training/run.py does not start stage 2).

    Only the events of ``fit`` itself are forwarded: training uses no ``validation_data``, so there are
    no test events. A batch hook that none of ``callbacks`` overrides stays Keras' no-op default here
    too, so forwarding adds no per-step Python call that nobody listens to.
    """

    _BATCH_HOOKS = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}

    def __init__(self, callbacks: Sequence, epochs: int):
        super().__init__()
        self.callbacks = list(callbacks)
        self.epochs = int(epochs)
        self._began = False
        self._end_logs = None
        for hook, old_name in self._BATCH_HOOKS.items():
            if all(_is_keras_default(getattr(cb, hook)) and _is_keras_default(getattr(cb, old_name))
                   for cb in self.callbacks):
                setattr(self, hook, getattr(keras.callbacks.Callback, hook).__get__(self))
        if self.callbacks and all(getattr(cb, "async_safe", False) for cb in self.callbacks):
            self.async_safe = True

    def set_params(self, params):
        super().set_params(params)
        for cb in self.callbacks:
            cb.set_params({**params, "epochs": self.epochs})

    def set_model(self, model):
        super().set_model(model)
        for cb in self.callbacks:
            cb.set_model(model)

    def on_train_begin(self, logs=None):
        if not self._began:
            self._began = True
            for cb in self.callbacks:
                cb.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self._end_logs = logs  # passed on by finish(), once the last stage is over

    def finish(self):
        """End the training for ``callbacks`` (call it once after the last ``fit``)."""
        if self._began:
            self._began = False
            for cb in self.callbacks:
                cb.on_train_end(self._end_logs)

    def on_epoch_begin(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        for cb in self.callbacks:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs)


class TensorBoardWriter:
    """Writes COCO metrics (``coco/bbox_mAP``...) and the first ``num_images`` validation images with
    their predicted boxes drawn (``val_images/N``) under ``log_dir``."""

    def __init__(self, log_dir, dataset, class_names, num_images=4, score_thr=0.3):
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "coco"))
        self.records = dataset.records[:num_images]
        self.class_names = class_names
        self.score_thr = score_thr

    def write_metrics(self, epoch, metrics):
        with self.writer.as_default():
            for k, v in metrics.items():
                tf.summary.scalar(f"coco/{k}", v, step=epoch)
        self.writer.flush()

    def write_images(self, epoch, detections):
        empty_boxes, empty = np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        with self.writer.as_default():
            for i, r in enumerate(self.records):
                boxes = detections.boxes.get(r.image_id, empty_boxes)
                scores = detections.scores.get(r.image_id, empty)
                labels = detections.labels.get(r.image_id, empty.astype(np.int32))
                keep = scores >= self.score_thr
                picture = draw_detections(load_image(r.path), boxes[keep], labels[keep], self.class_names,
                                          scores[keep])
                tf.summary.image(f"val_images/{i}", picture[None], step=epoch)
        self.writer.flush()
