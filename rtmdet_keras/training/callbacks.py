"""Training hooks as Keras callbacks: COCO evaluation (+ best checkpoint), NaN guard, stage logging.

Each is usable in anyone's own ``fit`` call. The EMA callback lives in ``ema.py`` and checkpoints in
``checkpoint.py``.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Callable, Optional

import keras
import numpy as np

from rtmdet_keras.evaluation import evaluate_detections
from rtmdet_keras.training.checkpoint import BEST_NAME, atomic_write, save_inference_model


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
    """

    def __init__(self, dataset, predict_fn: Callable, network: keras.Model, interval: int = 10,
                 dense_from: Optional[int] = None, max_epochs: Optional[int] = None, ema=None,
                 work_dir=None, best_metric: float = -1.0, tensorboard=None, print_fn=print):
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
        # One swap for the predictions and, when they are the best so far, the saved model.
        with self._weights():
            result, detections = self._score()
            current = result.metrics["bbox_mAP"]
            is_best = self.work_dir is not None and current > self.best_metric
            if is_best:
                self.best_metric, self.best_epoch = current, done
                self._save_best(done, result)
        self.last_result = result
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
        import json

        save_inference_model(self.network, self.work_dir / BEST_NAME)
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


class TensorBoardWriter:
    """Writes COCO metrics (``coco/bbox_mAP``...) and the first ``num_images`` validation images with
    their predicted boxes drawn (``val_images/N``) under ``log_dir``."""

    def __init__(self, log_dir, dataset, class_names, num_images=4, score_thr=0.3):
        import tensorflow as tf

        self._tf = tf
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "coco"))
        self.records = dataset.records[:num_images]
        self.class_names = class_names
        self.score_thr = score_thr

    def write_metrics(self, epoch, metrics):
        with self.writer.as_default():
            for k, v in metrics.items():
                self._tf.summary.scalar(f"coco/{k}", v, step=epoch)
        self.writer.flush()

    def write_images(self, epoch, detections):
        from rtmdet_keras.data.browse import draw_detections
        from rtmdet_keras.data.images import load_image

        empty_boxes, empty = np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        with self.writer.as_default():
            for i, r in enumerate(self.records):
                boxes = detections.boxes.get(r.image_id, empty_boxes)
                scores = detections.scores.get(r.image_id, empty)
                labels = detections.labels.get(r.image_id, empty.astype(np.int32))
                keep = scores >= self.score_thr
                picture = draw_detections(load_image(r.path), boxes[keep], labels[keep], self.class_names,
                                          scores[keep])
                self._tf.summary.image(f"val_images/{i}", picture[None], step=epoch)
        self.writer.flush()
