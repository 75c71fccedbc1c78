"""tf.data pipelines: training (RTMDet's stage-1 and stage-2 augmentation) and evaluation.

Training batches are ``(images, targets)``: ``images`` ``uint8 [B, H, W, 3]`` RGB with ``(H, W) =
cfg.imgsz``, ``targets = {"boxes": float32 [B, N, 4] xyxy pixels, "labels": int32 [B, N]}`` padded
with label -1 and box 0, ``N = max_boxes`` fixed for the run (static shapes).

Stage 1 follows mmdetection's RTMDet recipe: Mosaic of 4 images on a 2x canvas (each fitted to
``imgsz`` first), random keep-ratio resize to ``ratio x (stage1_scale_factor x imgsz)``, random crop to
``imgsz``, YOLOX HSV jitter, horizontal flip, pad to ``imgsz``, then MixUp when ``cfg.augment.mixup``.
Stage 2 is the same without Mosaic and MixUp. See :mod:`rtmdet_keras.data.transforms` for how the
geometric steps are composed and rendered in one resampling.

Evaluation batches are ``(images, meta)`` after mmdetection's test transform (keep-ratio resize to
fit ``imgsz``, pad bottom/right with 114); predicted boxes map back with :func:`boxes_to_original`.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from rtmdet_keras.data import transforms as T
from rtmdet_keras.data.cache import FileImages, ImageSource, image_source_for
from rtmdet_keras.data.images import load_image
from rtmdet_keras.data.sampler import Sampler, stage_settings
from rtmdet_keras.data.shard import worker_takes
from rtmdet_keras.data.transforms import letterbox

log = logging.getLogger(__name__)

MAX_BOXES_CAP = 256  # default upper bound of targets per image (static N); more are dropped, counted

__all__ = ["TrainPipeline", "build_train_pipeline", "build_stage_pipelines", "build_eval_pipeline",
           "boxes_to_original", "letterbox", "cache_image_size", "MAX_BOXES_CAP"]


@dataclass
class TrainPipeline:
    """A training pipeline and the numbers ``fit`` needs.

    ``dataset`` repeats forever, reshuffled every pass over the images; one epoch is
    ``steps_per_epoch`` full batches, ``ceil(len(images) / batch_size)``: as mmdetection, which keeps
    the last partial batch, no image of a pass is left out of an epoch's count; the extra samples of the
    last batch start the next pass (a pass may straddle two epochs). Pass both to
    ``fit(dataset, steps_per_epoch=...)``.
    """

    dataset: tf.data.Dataset
    steps_per_epoch: int
    max_boxes: int
    stage: int
    batch_size: int
    num_images: int  # images the stream draws from
    cached: bool  # images decoded once and held in memory (else decoded from files at every use)
    cache_bytes: int  # memory the decoded images take (0 when decoded from files)
    empty_images_left_out: int  # images without boxes left out (``filter_empty_gt``)
    _counters: Tuple[tf.Variable, tf.Variable]

    @property
    def dropped_boxes(self) -> int:
        """Boxes left out so far because a sample had more than ``max_boxes`` after augmentation."""
        return int(self._counters[0].numpy())


def cache_image_size(cfg) -> Tuple[int, int]:
    """``(h, w)`` the training images are stored at: the finest either stage ever samples them.

    Mosaic fits each image to ``imgsz`` and then scales the canvas by at most the largest ratio; the
    single-image path (stage 2, or stage 1 when Mosaic is skipped) fits it to ``ratio x scale_factor x
    imgsz``. Storing more pixels than that would only cost memory.
    """
    a = cfg.augment
    need = [max(a.stage2_ratio_range) * a.stage2_scale_factor]
    if a.mosaic and a.mosaic_prob > 0:
        need.append(max(a.resize_ratio_range))
    if not a.mosaic or a.mosaic_prob < 1:
        need.append(max(a.resize_ratio_range) * a.stage1_scale_factor)
    f = max(max(need), 1.0)
    return int(math.ceil(cfg.imgsz[0] * f)), int(math.ceil(cfg.imgsz[1] * f))


def _index_stream(n: int, seed: int, shuffle: bool) -> tf.data.Dataset:
    """Image indices forever: one pass over all ``n`` images after another, each pass in a new
    order drawn from ``(seed, pass number)`` when ``shuffle``."""
    if not shuffle:
        return tf.data.Dataset.range(n).repeat()
    seed = tf.constant(int(seed), tf.int64)

    def one_pass(e):
        u = tf.random.stateless_uniform([n], seed=tf.stack([seed, 2 * e + 1]))
        return tf.data.Dataset.from_tensor_slices(tf.cast(tf.argsort(u), tf.int64))

    return tf.data.Dataset.counter().flat_map(one_pass)


def _derive_max_boxes(records, mosaic: bool, mixup: bool, cap: int) -> Tuple[int, int]:
    """``(per_sample, max_boxes)``: the most boxes one sample can carry before and after MixUp."""
    most = max([len(r.labels) for r in records] + [1])
    per_sample = most * (4 if mosaic else 1)
    total = per_sample * (2 if mixup else 1)
    if total > cap:
        log.info("up to %d boxes per training sample are possible (%d per image%s%s); keeping at most %d, "
                 "dropped boxes are counted and reported", total, most, " x 4 for Mosaic" if mosaic else "",
                 " x 2 for MixUp" if mixup else "", cap)
    return min(per_sample, cap), min(total, cap)


def training_pool(records, cfg) -> List[int]:
    """The images a training stream draws from: indices into ``records``, those with boxes (all of them
    with ``filter_empty_gt=false``)."""
    return [i for i, r in enumerate(records) if len(r.labels) or not cfg.filter_empty_gt]


def build_train_pipeline(dataset, cfg, stage: int = 1, seed: Optional[int] = None, shuffle: bool = True,
                         max_boxes: Optional[int] = None, image_source: Optional[ImageSource] = None,
                         cache_budget_bytes: Optional[int] = None, start_step: int = 0,
                         shard=None) -> TrainPipeline:
    """The training pipeline of ``stage`` 1 (Mosaic, MixUp when configured) or 2 (neither).

    Args:
        dataset: a :class:`~rtmdet_keras.data.records.DetectionDataset` (at least one image). Images
            without boxes are left out when ``cfg.filter_empty_gt`` (mmdetection's ``filter_empty_gt``,
            the default) and kept as negatives otherwise.
        cfg: the run's config (``imgsz``, ``batch_size``, ``augment``, ``seed``).
        seed: seeds shuffling and every random draw (default ``cfg.seed``): the same seed gives the
            same batches.
        shuffle: new image order at every pass (else data set order).
        max_boxes: targets per image ``N`` (default: the most boxes in one image x 4 with Mosaic x 2
            with MixUp, at most :data:`MAX_BOXES_CAP`). Boxes beyond it are dropped, smallest first,
            counted in :attr:`TrainPipeline.dropped_boxes` and reported on stderr.
        image_source: where pixels come from (default: an in-memory cache when
            ``cfg.augment.cache_images`` and it fits ``cache_budget_bytes``, else the files).
        start_step: global batches of the stream to skip (a resumed run continues where it stopped).
        shard: ``(plan, worker)``, a ``ShardPlan`` (:mod:`rtmdet_keras.training.distribute`) and this
            worker's index: the stream keeps only the worker's share of each global batch, in batches of
            ``plan.per_replica`` (see :mod:`rtmdet_keras.training.distribute`); None: one machine.
    Returns:
        :class:`TrainPipeline`; its ``dataset`` yields ``(uint8 [B, H, W, 3], {"boxes": float32
        [B, N, 4], "labels": int32 [B, N]})`` with ``B = cfg.batch_size`` (``plan.per_replica`` with
        ``shard``); ``steps_per_epoch`` counts global batches either way.
    """
    records = list(dataset.records)
    if not records:
        raise ValueError(f"the {getattr(dataset, 'split', 'training')} split from "
                         f"{getattr(dataset, 'source', '?')} has no images: nothing to train on")
    # The images the stream draws from (indices into ``records``, which the image source follows).
    pool = training_pool(records, cfg)
    if not pool:
        raise ValueError(f"none of the {len(records)} images of the {getattr(dataset, 'split', 'training')} "
                         f"split from {getattr(dataset, 'source', '?')} has a box: nothing to learn from (set "
                         "filter_empty_gt=false to train on them as negatives anyway)")
    seed = int(cfg.seed if seed is None else seed)
    global_batch = int(cfg.batch_size)
    plan, worker = shard if shard is not None else (None, 0)
    if plan is not None and plan.global_batch != global_batch:
        raise ValueError(f"the shard plan splits a global batch of {plan.global_batch}, the config's batch_size "
                         f"is {global_batch}")
    batch = plan.per_replica if plan is not None else global_batch
    mosaic, mixup, _, _ = stage_settings(cfg, stage)
    if max_boxes is None:
        per_sample, max_boxes = _derive_max_boxes(records, mosaic, mixup, MAX_BOXES_CAP)
    else:
        max_boxes = int(max_boxes)
        per_sample = max_boxes
    if image_source is None:
        image_source = image_source_for(dataset, cache_image_size(cfg), use_cache=bool(cfg.augment.cache_images),
                                        budget_bytes=cache_budget_bytes)
    sampler = Sampler(records, image_source, cfg, stage, seed, per_sample, pool)
    with tf.init_scope(), tf.device("/CPU:0"):
        counters = (tf.Variable(0, dtype=tf.int64, trainable=False, name="dropped_boxes"),
                    tf.Variable(0, dtype=tf.int64, trainable=False, name="batches_with_dropped_boxes"))
    finish_batch = _batch_finisher(cfg, mixup, seed, start_step, shard, batch, max_boxes, counters)
    ds = _index_stream(len(pool), seed, shuffle).enumerate()
    if start_step:
        ds = ds.skip(int(start_step) * global_batch)
    if plan is not None and plan.workers > 1:
        ds = ds.filter(lambda k, i: worker_takes(k, plan, worker))
    ds = ds.map(lambda k, i: sampler(k, sampler.pool[i]), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True).enumerate().map(finish_batch).prefetch(tf.data.AUTOTUNE)
    if int(cfg.workers) > 0:
        options = tf.data.Options()
        options.threading.private_threadpool_size = int(cfg.workers)
        ds = ds.with_options(options)
    return TrainPipeline(dataset=ds, steps_per_epoch=max(1, math.ceil(len(pool) / global_batch)), max_boxes=max_boxes,
                         stage=stage, batch_size=batch, num_images=len(pool),
                         cached=not isinstance(image_source, FileImages),
                         cache_bytes=int(getattr(image_source, "nbytes", 0)),
                         empty_images_left_out=len(records) - len(pool), _counters=counters)


def _batch_finisher(cfg, mixup: bool, seed: int, start_step: int, shard, batch: int, max_boxes: int, counters):
    """The last step of the training stream, on ``(batch number j, batched samples)``: MixUp within the
    batch (when ``mixup``), then the count and report of the boxes dropped beyond ``max_boxes``."""
    plan, worker = shard if shard is not None else (None, 0)
    # Each batch of the stream gets a number unique over the cluster (MixUp seeds); one machine: 0, 1, 2...
    replicas = plan.workers * plan.replicas_per_worker if plan is not None else 1
    per_worker = plan.replicas_per_worker if plan is not None else 1
    mixup_prob = float(cfg.augment.mixup_prob)

    def finish_batch(j, sample):
        images, boxes, labels, dropped = sample
        dropped = tf.reduce_sum(dropped)
        if mixup:
            step = int(start_step) + j // per_worker
            b = step * replicas + worker * per_worker + j % per_worker
            u = tf.random.stateless_uniform([batch, 3], seed=tf.stack([tf.constant(seed, tf.int64), -(b + 1)]))
            images, boxes, labels = T.mixup_batch(images, boxes, labels, u, mixup_prob)
            boxes, labels, more = T.pack_boxes(boxes, labels, labels >= 0, max_boxes)
            dropped += more
        report = tf.cond(dropped > 0, lambda: _report_dropped(counters, dropped, max_boxes), lambda: tf.constant(0))
        with tf.control_dependencies([report]):
            images = tf.identity(images)
        return images, {"boxes": boxes, "labels": labels}

    return finish_batch


def build_stage_pipelines(dataset, cfg, start_steps: Tuple[int, int] = (0, 0),
                          shard=None) -> Tuple[TrainPipeline, TrainPipeline]:
    """Stage 1 and stage 2 of a training run, seeded ``cfg.seed`` and ``cfg.seed + 1``. Stage 2 pads its
    targets to stage 1's ``max_boxes``: the batches then have one shape, and the second ``fit`` reuses
    the compiled training step instead of tracing it again (about half a minute on 2 cores).
    ``start_steps``: global batches each stream skips (a resumed run); ``shard``: see
    :func:`build_train_pipeline`."""
    stage1 = build_train_pipeline(dataset, cfg, stage=1, seed=cfg.seed, start_step=start_steps[0], shard=shard)
    stage2 = build_train_pipeline(dataset, cfg, stage=2, seed=cfg.seed + 1, max_boxes=stage1.max_boxes,
                                  start_step=start_steps[1], shard=shard)
    return stage1, stage2


def _report_dropped(counters, dropped, max_boxes):
    """Add to the counters; print on the 1st, 2nd, 4th, 8th... batch that dropped boxes."""
    total = counters[0].assign_add(tf.cast(dropped, tf.int64))
    batches = counters[1].assign_add(1)

    def say():
        tf.print("WARNING rtmdet_keras.data.pipeline:", total, "target boxes dropped so far, in", batches,
                 f"batches: samples had more than max_boxes={max_boxes} boxes after augmentation (the smallest "
                 "were dropped). Pass a larger max_boxes to build_train_pipeline to keep them.",
                 output_stream=sys.stderr)
        return tf.constant(0)

    return tf.cond(tf.equal(tf.bitwise.bitwise_and(batches, batches - 1), 0), say, lambda: tf.constant(0))


# ----------------------------------------------------------------------------------------------
# Evaluation


def build_eval_pipeline(dataset, cfg, batch_size: int) -> tf.data.Dataset:
    """Batches of ``(images uint8 [B, H, W, 3], meta)`` in data set order, the last batch partial.

    Each image is resized with its aspect ratio kept to fit ``cfg.imgsz`` and padded bottom/right
    with ``cfg.augment.pad_val`` (:func:`letterbox`). ``meta``: ``image_id`` int64, ``scale`` float32
    (resize factor: original box = box / scale), ``height`` and ``width`` int32 (original image).
    """
    records = list(dataset.records)
    imgsz = (int(cfg.imgsz[0]), int(cfg.imgsz[1]))
    pad_val = int(cfg.augment.pad_val)
    paths = tf.constant([r.path for r in records] or [""], tf.string)
    ids = tf.constant(np.array([r.image_id for r in records], np.int64).reshape(-1))

    def load(i):
        image = tf.numpy_function(lambda p: load_image(p.decode()), [paths[i]], tf.uint8, stateful=False)
        image = tf.ensure_shape(image, [None, None, 3])
        boxed, scale = letterbox(image, imgsz, pad_val)
        hw = tf.shape(image)[:2]
        return boxed, {"image_id": ids[i], "scale": scale, "height": hw[0], "width": hw[1]}

    ds = tf.data.Dataset.range(len(records)).map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(int(batch_size), drop_remainder=False).prefetch(tf.data.AUTOTUNE)


def boxes_to_original(boxes, scale: float, orig_hw: Sequence[int]) -> np.ndarray:
    """Boxes of a letterboxed image (xyxy pixels) -> the original image: ``box / scale``, clipped to
    ``orig_hw = (height, width)``. Returns ``float32 [N, 4]``."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) / np.float32(scale)
    h, w = orig_hw
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    return boxes
