"""The run's ``results.csv``: a row per epoch (losses, learning rate, COCO metrics, speed, times), with the
clock that times each epoch's training steps."""

from __future__ import annotations

import contextlib
import csv
import io
import time
from pathlib import Path
from typing import Callable, Optional

import keras

from rtmdet_keras.evaluation import METRIC_NAMES
from rtmdet_keras.files import atomic_write


class EpochClock(keras.callbacks.Callback):
    """Times the training steps of each epoch (``perf_counter`` seconds). Put it first among the
    callbacks: its ``on_epoch_end`` then runs right after the last step, before evaluation and checkpoints."""

    def __init__(self):
        super().__init__()
        self.begin = self.end = None

    def on_epoch_begin(self, epoch, logs=None):
        self.begin = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.end = time.perf_counter()


RESULTS_COLUMNS = ("epoch", "stage", "loss", "loss_cls", "loss_bbox", "lr", *METRIC_NAMES,
                   "images_per_second", "epoch_seconds", "wall_seconds")


def _cell(value) -> str:
    return "" if value is None else f"{float(value):.6g}"


class ResultsCSV(keras.callbacks.Callback):
    """Appends one row per epoch to ``path`` (``results.csv``, columns :data:`RESULTS_COLUMNS`): the epoch
    (1-based), the stage (1 up to ``stage1_epochs``, then 2), the epoch's mean losses, the learning rate
    at its end, the 12 COCO metrics when it was evaluated (empty otherwise), training images per second
    of its steps (timed by ``clock``, an :class:`EpochClock`), its wall time with evaluation and
    checkpoint, and the wall time since the run began (resumed sessions add up); times in seconds.
    Put it after the callbacks that add to the logs (evaluation, learning rate).

    The file is written when the callback is made: a header, and with ``resume_after`` (a resumed run)
    the rows up to that epoch; rows of later epochs, which run again, are dropped.
    ``coco_metrics(epoch)`` returns that epoch's COCO metrics or None.
    ``log_fn`` gets a one-line summary of each epoch (training/run.py: ``train.log``, where the progress bar
    does not go).
    """

    def __init__(self, path, clock: EpochClock, images_per_epoch: int, stage1_epochs: int,
                 coco_metrics: Callable = lambda epoch: None, max_epochs: Optional[int] = None,
                 resume_after: Optional[int] = None, log_fn: Optional[Callable] = None):
        super().__init__()
        self.path = Path(path)
        self.clock = clock
        self.images_per_epoch = int(images_per_epoch)
        self.stage1_epochs = int(stage1_epochs)
        self.coco_metrics = coco_metrics
        self.max_epochs = max_epochs
        self.log_fn = log_fn
        self.last_epoch = resume_after
        kept, self.offset = self._kept_rows(resume_after), 0.0
        if kept and kept[-1].get("wall_seconds"):
            with contextlib.suppress(ValueError):
                self.offset = float(kept[-1]["wall_seconds"])
        text = io.StringIO()
        writer = csv.DictWriter(text, RESULTS_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text.getvalue()))
        self.start = time.perf_counter()

    def _kept_rows(self, resume_after):
        if resume_after is None or not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = []
        for row in rows:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                if int(row["epoch"]) <= resume_after:
                    kept.append(row)
        return kept

    def on_epoch_end(self, epoch, logs=None):
        logs, done, now = logs or {}, epoch + 1, time.perf_counter()
        begin = self.clock.begin if self.clock.begin is not None else now
        steps_seconds = (self.clock.end or now) - begin
        values = {k: logs.get(k) for k in ("loss", "loss_cls", "loss_bbox", "lr")}
        values.update((self.coco_metrics(done) or {}).items())
        values.update(images_per_second=self.images_per_epoch / steps_seconds if steps_seconds > 0 else None,
                      epoch_seconds=now - begin, wall_seconds=self.offset + now - self.start)
        row = {"epoch": done, "stage": 1 if done <= self.stage1_epochs else 2,
               **{k: _cell(values.get(k)) for k in RESULTS_COLUMNS[2:]}}
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, RESULTS_COLUMNS, lineterminator="\n").writerow(row)
        self.last_epoch = done
        if self.log_fn is not None:
            of = f"/{self.max_epochs}" if self.max_epochs else ""
            parts = [f"{k} {values[k]:.4f}" for k in ("loss", "loss_cls", "loss_bbox") if values.get(k) is not None]
            parts += [f"lr {values['lr']:.3g}"] if values.get("lr") is not None else []
            parts += [f"{k} {values[k]:.4f}" for k in ("bbox_mAP", "bbox_mAP_50") if values.get(k) is not None]
            speed = values["images_per_second"]
            self.log_fn(f"epoch {done}{of} (stage {row['stage']}): {', '.join(parts)}; "
                        f"{f'{speed:.1f} images/s, ' if speed else ''}{values['epoch_seconds']:.1f} s")
