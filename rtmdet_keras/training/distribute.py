"""Training on several workers (``--strategy multiworker``, ``tf.distribute.MultiWorkerMirroredStrategy``).

What a multi-worker run does differently from one machine, and where:

- **Data.** The global batch ``cfg.batch_size`` stays the global batch: the run has the same steps per
  epoch and the same learning rate (scaled by the global batch) as on one machine. Each worker builds
  the same index stream and keeps only its share of every global batch: positions ``k`` of the stream
  with ``(k mod B) // (B / W) == w`` (:func:`rtmdet_keras.data.shard.worker_takes`). Every sample is seeded by its global
  position ``k``, so the workers draw distinct samples and distinct random numbers, and together they
  see exactly the samples one machine would (MixUp, which mixes within a batch, mixes within each
  replica's part). The stream reaches ``fit`` through ``distribute_datasets_from_function``: no
  auto-sharding and no rebatching by tf.distribute.
- **Files.** Only the chief (task ``chief``, else worker 0) writes the run folder: checkpoints,
  ``train.log``, ``results.csv``, TensorBoard, the best model. The others write the same files into a
  temporary folder that is deleted at the end (TensorFlow's multi-worker guide does the same).
- **Evaluation** runs on the chief only; its bbox_mAP reaches every worker through an all-reduce
  (:func:`broadcast_from_chief`), so the best epoch and early stopping agree everywhere.
- **BatchNorm statistics** are averaged over the workers at the end of each epoch
  (:class:`SyncBatchNormStatistics`), so every worker holds the same weights at each checkpoint.
- **Start and resume.** After the model is built (and, on the chief, a checkpoint restored), the
  chief's weights, optimiser state and EMA are copied to every worker (:func:`sync_from_chief`):
  only the chief needs to read the checkpoint or ``load_from``. A run whose worker died is restarted
  on all workers with ``--resume``; it continues from the chief's last checkpoint, and the data
  stream skips the batches of the epochs already done, so no step is lost or repeated.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in the cluster: worker ``index`` of ``count``; ``is_chief`` writes the run folder."""

    index: int = 0
    count: int = 1
    is_chief: bool = True

    @property
    def multi(self) -> bool:
        return self.count > 1


def role_from_tf_config(tf_config: Optional[str] = None) -> WorkerRole:
    """The role ``TF_CONFIG`` (default: the environment's) gives this process; one worker without it.

    Workers are the cluster's ``chief`` (if any) followed by its ``worker`` tasks, in that order, as
    ``MultiWorkerMirroredStrategy`` numbers its input pipelines.
    """
    text = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if not text.strip():
        return WorkerRole()
    try:
        config = json.loads(text)
        cluster, task = config.get("cluster") or {}, config.get("task") or {}
        kind, index = task.get("type"), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"TF_CONFIG is not valid JSON of the form {{\"cluster\": {{\"worker\": [...]}}, "
                         f"\"task\": {{\"type\": \"worker\", \"index\": 0}}}} ({e})") from None
    chiefs = len(cluster.get("chief") or [])
    count = chiefs + len(cluster.get("worker") or [])
    if kind not in ("chief", "worker") or count == 0:
        raise ValueError(f"TF_CONFIG task {task!r}: --strategy multiworker runs tasks of type chief or worker "
                         f"in a cluster that lists them (cluster: {sorted(cluster)})")
    position = index if kind == "chief" else chiefs + index
    return WorkerRole(index=position, count=count, is_chief=position == 0)


def worker_role(strategy) -> WorkerRole:
    """The role of this process under ``strategy`` (one worker for anything but a multi-worker strategy)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return role_from_tf_config()
    return WorkerRole()


@dataclass(frozen=True)
class ShardPlan:
    """How a global batch splits: ``workers`` x ``replicas_per_worker`` replicas of ``per_replica``
    samples; worker ``w`` takes positions ``[w * per_worker, (w + 1) * per_worker)`` of every global batch."""

    global_batch: int
    workers: int
    replicas_per_worker: int
    per_worker: int
    per_replica: int

    def steps_per_epoch(self, num_images: int) -> int:
        """Global steps per epoch: ``ceil(num_images / global_batch)``, as on one machine."""
        return max(1, -(-int(num_images) // self.global_batch))


def shard_plan(global_batch: int, workers: int = 1, replicas_per_worker: int = 1) -> ShardPlan:
    """Split ``global_batch`` over the cluster; raises ValueError (naming ``batch_size``) unless it divides."""
    global_batch, workers, replicas_per_worker = int(global_batch), int(workers), int(replicas_per_worker)
    replicas = workers * replicas_per_worker
    if workers < 1 or replicas_per_worker < 1:
        raise ValueError(f"need at least one worker and one replica per worker, got {workers} and {replicas_per_worker}")
    if global_batch % replicas:
        raise ValueError(f"batch_size {global_batch} (the global batch) is not divisible by the {replicas} replicas "
                         f"({workers} workers x {replicas_per_worker}); set batch_size to a multiple of {replicas}")
    return ShardPlan(global_batch, workers, replicas_per_worker, global_batch // workers, global_batch // replicas)


def distribute_train_dataset(strategy, dataset, role: WorkerRole):
    """``dataset`` (this worker's per-replica batches) as ``fit``'s input under a multi-worker ``strategy``.

    Going through ``distribute_datasets_from_function`` keeps tf.distribute from sharding or rebatching
    it again: the worker's stream is already its share of each global batch.
    """
    def dataset_fn(context: tf.distribute.InputContext):
        if (context.input_pipeline_id, context.num_input_pipelines) != (role.index, role.count):
            raise RuntimeError(f"tf.distribute numbers this input pipeline {context.input_pipeline_id} of "
                               f"{context.num_input_pipelines}, but TF_CONFIG makes it worker {role.index} of "
                               f"{role.count}; check the cluster and task in TF_CONFIG")
        return dataset

    return strategy.distribute_datasets_from_function(dataset_fn)


def broadcast_from_chief(strategy, role: WorkerRole, value) -> np.ndarray:
    """The chief's ``value`` (a numeric array) on every worker: an all-reduce of the sum in which the
    other workers and replicas contribute zeros. Every worker must call it at the same point; on one
    worker it returns ``value``."""
    value = np.asarray(value)
    if not role.multi:
        return value
    dtype = value.dtype if value.dtype.kind == "f" else np.float64  # integers travel exactly as float64
    mine = value.astype(dtype) if role.is_chief else np.zeros(value.shape, dtype)
    return _sum_over_workers(strategy, mine).astype(value.dtype)


def _sum_over_workers(strategy, mine: np.ndarray) -> np.ndarray:
    """The sum of every worker's ``mine`` (each worker's first replica contributes it, the others zeros)."""
    zeros = np.zeros(mine.shape, mine.dtype)
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(mine if ctx.replica_id_in_sync_group % _local_replicas(strategy) == 0 else zeros))
    return np.asarray(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))


def _local_replicas(strategy) -> int:
    return max(len(strategy.extended.worker_devices), 1)


def average_over_workers(strategy, role: WorkerRole, variables: Sequence) -> None:
    """Set float ``variables`` to their mean over the workers (one all-reduce)."""
    if not role.multi or not variables:
        return
    flat = np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in variables])
    _assign_flat(variables, _sum_over_workers(strategy, flat) / np.float32(role.count))


def _assign_flat(variables: Sequence, flat: np.ndarray) -> None:
    """Give ``variables`` consecutive pieces of ``flat`` (their values concatenated in order), each cast
    to the variable's dtype: the scatter after an all-reduce of many variables at once."""
    offset = 0
    for v in variables:
        size = int(np.prod(v.shape))
        v.assign(flat[offset:offset + size].reshape(tuple(v.shape)).astype(np.asarray(v).dtype))
        offset += size


def batch_norm_statistics(model) -> list:
    """The model's non-trainable float weights: BatchNorm's moving means and variances."""
    return [v for v in model.weights if not v.trainable and np.dtype(v.dtype).kind == "f"]


class SyncBatchNormStatistics(keras.callbacks.Callback):
    """At each epoch's end, average the BatchNorm moving statistics (and their EMA copies) over the workers.

    Each worker normalises with its own part of the global batch (as mmdetection without SyncBN), so
    its moving statistics drift from the others'; the gradients, and so the trainable weights, are
    the same everywhere. Averaging once an epoch, before evaluation and the checkpoint (as YOLOX's
    ``all_reduce_norm`` before evaluating) gives every worker the same weights at every checkpoint.
    """

    def __init__(self, strategy, role: WorkerRole, ema=None):
        super().__init__()
        self.strategy, self.role, self.ema = strategy, role, ema

    def on_epoch_end(self, epoch, logs=None):
        stats = batch_norm_statistics(self.model)
        average_over_workers(self.strategy, self.role, stats + (self.ema.shadows_of(stats) if self.ema else []))


def sync_from_chief(strategy, role: WorkerRole, variables: Sequence, header: Sequence[float] = ()) -> np.ndarray:
    """Give ``variables`` (model weights, optimiser and EMA variables, in the same order on every worker)
    the chief's values, and return the chief's ``header`` numbers (epoch, best metric...). One all-reduce
    per dtype."""
    header = broadcast_from_chief(strategy, role, np.asarray(header, np.float64))
    if not role.multi:
        return header
    by_dtype = {}
    for v in variables:
        by_dtype.setdefault(np.dtype(np.asarray(v).dtype), []).append(v)
    for group in by_dtype.values():
        _assign_flat(group, broadcast_from_chief(strategy, role, np.concatenate([np.asarray(v).reshape(-1)
                                                                                for v in group])))
    return header


def temporary_work_dir(role: WorkerRole) -> Path:
    """Where a non-chief worker writes what the chief writes into the run folder (deleted afterwards)."""
    return Path(tempfile.mkdtemp(prefix=f"rtmdet_worker{role.index}_"))


def remove_temporary_work_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def stream_start(initial_epoch: int, stage1_epochs: int, steps_per_epoch: int) -> Tuple[int, int]:
    """Global batches each stage's stream skips when a run resumes after ``initial_epoch`` epochs:
    ``(stage 1, stage 2)``. Stage 1 streams from epoch 0, stage 2 from ``stage1_epochs``."""
    stage1 = min(initial_epoch, stage1_epochs) * steps_per_epoch
    stage2 = max(initial_epoch - stage1_epochs, 0) * steps_per_epoch
    return stage1, stage2
