"""Decode + NMS: the one path from network outputs to detections, and the one predictor loop around it.

Training-time evaluation, ``rtmdet evaluate`` (Keras or TFLite), the export self-check and
``rtmdet predict`` all call :func:`decode_and_nms`, so a model scores the same wherever it runs.
Boxes are xyxy pixels of the network input (the letterboxed image); the evaluation pipeline's
``boxes_to_original`` maps them back to the source image.

The predictors: :func:`make_dataset_predictor` (a Keras network, as training evaluates it) and
:func:`make_runner_predictor` (any runner of :mod:`rtmdet_keras.runtime.runners`) both run
:func:`detections_for_dataset`; ``rtmdet predict`` runs :func:`runner_step` image by image. Every
consumer reads one image's detections with :func:`image_detections`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from rtmdet_keras.boxes import decode_predictions, flatten_levels, make_priors
from rtmdet_keras.data.pipeline import boxes_to_original, build_eval_pipeline
from rtmdet_keras.evaluation import Detections


def decode_outputs(outputs: dict, cfg):
    """Network outputs -> ``(scores [B, P, C] in [0, 1], boxes [B, P, 4] xyxy pixels of the input)``."""
    h, w = cfg.imgsz
    priors = make_priors(h, w, cfg.model.strides)
    cls = tf.cast(flatten_levels(outputs, prefix="cls"), tf.float32)
    return tf.sigmoid(cls), decode_predictions(outputs, priors, cfg.model.exp_on_reg)


def multiclass_nms(scores, boxes, test_cfg):
    """Class-aware NMS as mmdetection's test config does it (score threshold, IoU threshold, at most
    ``max_per_img`` per image). Returns ``boxes [B, K, 4]``, ``scores [B, K]``, ``labels [B, K]``,
    ``num_valid [B]`` with K = ``max_per_img``."""
    k = int(test_cfg.max_per_img)
    if test_cfg.nms_pre:
        # nms_pre: only the best nms_pre (prior, class) scores of an image go into NMS.
        flat = tf.reshape(scores, [tf.shape(scores)[0], -1])
        n = tf.minimum(tf.shape(flat)[1], int(test_cfg.nms_pre))
        kth = tf.math.top_k(flat, k=n, sorted=True).values[:, -1]
        scores = tf.where(scores >= kth[:, None, None], scores, tf.zeros_like(scores))
    # Per class, NMS can keep at most max_per_img boxes; combined NMS then keeps the best k overall.
    out_boxes, out_scores, out_labels, valid = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores, max_output_size_per_class=k,
        max_total_size=k, iou_threshold=test_cfg.iou_thr, score_threshold=test_cfg.score_thr,
        pad_per_class=False, clip_boxes=False,
    )
    return out_boxes, out_scores, tf.cast(out_labels, tf.int32), valid


def decode_and_nms(outputs: dict, cfg):
    """Network outputs -> NMS'd detections in input pixels (see :func:`multiclass_nms`)."""
    scores, boxes = decode_outputs(outputs, cfg)
    return multiclass_nms(scores, boxes, cfg.test)


def detections_for_dataset(step, dataset, cfg, batch_size: int = 16, batches=None):
    """Run ``step(images uint8 [B, H, W, 3]) -> (boxes, scores, labels, num_valid)`` (NMS'd, input
    pixels) over the evaluation transform of ``dataset`` and return
    :class:`~rtmdet_keras.evaluation.Detections` in original-image pixels. ``batches``: the
    evaluation pipeline's ``(images, meta)`` batches already at hand (see :class:`EvalBatchCache`)."""
    detections = Detections()
    if batches is None:
        batches = build_eval_pipeline(dataset, cfg, batch_size)
    for images, meta in batches:
        batch = tuple(np.asarray(t) for t in step(images))
        for i in range(len(batch[3])):
            boxes, scores, labels = image_detections(batch, i)
            orig = boxes_to_original(boxes, float(meta["scale"][i]), (int(meta["height"][i]), int(meta["width"][i])))
            detections.add(int(meta["image_id"][i]), orig, scores, labels)
    return detections


def image_detections(batch, i: int, score_thr=None):
    """``(boxes, scores, labels)`` of image ``i`` of NMS'd detections ``(boxes, scores, labels, num_valid)``
    (NumPy): its ``num_valid`` rows, those scoring at least ``score_thr`` when given."""
    boxes, scores, labels, valid = batch
    n = int(valid[i])
    boxes, scores, labels = boxes[i, :n], scores[i, :n], labels[i, :n]
    if score_thr is None:
        return boxes, scores, labels
    keep = scores >= score_thr
    return boxes[keep], scores[keep], labels[keep]


def make_nms(cfg):
    """``nms(outputs) -> (boxes, scores, labels, num_valid)`` as NumPy: :func:`decode_and_nms` of network
    outputs given as NumPy arrays (a runner's), traced once per input shape."""

    @tf.function(reduce_retracing=True, autograph=False)  # plain tensor code: nothing to convert
    def nms(outputs):
        return decode_and_nms(outputs, cfg)

    return lambda outputs: tuple(np.asarray(t) for t in nms({k: tf.constant(v) for k, v in outputs.items()}))


def runner_step(runner, cfg):
    """``step(images uint8 [B, H, W, 3]) -> NMS'd detections`` (NumPy, input pixels) of a runner
    (:func:`rtmdet_keras.runtime.runners.load_model_runner`: images -> network outputs)."""
    nms = make_nms(cfg)
    return lambda images: nms(runner(np.asarray(images)))


def make_runner_predictor(runner, cfg, batch_size: int = 16):
    """``predict(dataset) -> Detections`` for any runner, exactly as :func:`make_dataset_predictor` does
    for a Keras network."""
    step = runner_step(runner, cfg)
    return lambda dataset: detections_for_dataset(step, dataset, cfg, batch_size)


def make_dataset_predictor(network, cfg, batch_size: int = 16):
    """Returns ``predict(dataset) -> Detections`` (original-image pixels) using the evaluation
    transform, the network and :func:`decode_and_nms`. The transformed split is kept in memory
    between calls when it is small (:class:`EvalBatchCache`): training evaluates it many times."""

    h, w = (int(v) for v in cfg.imgsz)

    # One trace for every batch size (the last batch of a split is usually partial).
    @tf.function(input_signature=[tf.TensorSpec([None, h, w, 3], tf.uint8)])
    def step(images):
        outputs = network(tf.cast(images, tf.float32), training=False)
        return decode_and_nms(outputs, cfg)

    cache = EvalBatchCache(cfg, batch_size)
    return lambda dataset: detections_for_dataset(step, dataset, cfg, batch_size, batches=cache(dataset))


class EvalBatchCache:
    """The evaluation pipeline's batches of a data set, decoded and letterboxed once and kept in
    memory when they fit in ``max_bytes`` (a training run evaluates the same split 20 times and more;
    decoding it again each time cost a fifth of an evaluation of the demo set). Larger splits stream."""

    def __init__(self, cfg, batch_size: int = 16, max_bytes: int = 256 << 20):
        self.cfg, self.batch_size, self.max_bytes = cfg, int(batch_size), int(max_bytes)
        self._dataset = self._batches = None

    def fits(self, dataset) -> bool:
        h, w = (int(v) for v in self.cfg.imgsz)
        return len(dataset.records) * h * w * 3 <= self.max_bytes

    def __call__(self, dataset):
        """The batches of ``dataset``: a list when cached, else the streaming pipeline (None)."""
        if self._dataset is dataset:
            return self._batches
        if not self.fits(dataset):
            return None
        batches = [(images.numpy(), {k: v.numpy() for k, v in meta.items()})
                   for images, meta in build_eval_pipeline(dataset, self.cfg, self.batch_size)]
        self._dataset, self._batches = dataset, batches
        return batches
