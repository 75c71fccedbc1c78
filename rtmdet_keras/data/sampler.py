"""One augmented training sample, in TensorFlow: Mosaic or a single image, resize, crop, flip, HSV jitter.

:class:`Sampler` draws every random number of a sample from its position in the stream, so the same
seed gives the same samples; :mod:`rtmdet_keras.data.pipeline` batches them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from rtmdet_keras.data import transforms as T
from rtmdet_keras.data.cache import ImageSource

_U = 16  # uniforms drawn per sample


def stage_settings(cfg, stage: int):
    """``(mosaic, mixup, ratio_range, scale_factor)`` of training ``stage`` 1 or 2."""
    a = cfg.augment
    if stage == 1:
        mosaic = bool(a.mosaic) and a.mosaic_prob > 0
        mixup = bool(a.mixup) and a.mixup_prob > 0
        return mosaic, mixup, a.resize_ratio_range, a.stage1_scale_factor
    if stage == 2:
        return False, False, a.stage2_ratio_range, a.stage2_scale_factor
    raise ValueError(f"stage must be 1 or 2, got {stage!r}")


class Sampler:
    """Makes one augmented sample from ``(k, index)``: ``k`` is the sample's position in the stream
    (it seeds the sample's random numbers), ``index`` the image."""

    def __init__(self, records, source: ImageSource, cfg, stage: int, seed: int, per_sample_boxes: int,
                 pool: Sequence[int]):
        self.source = source
        # The images the stream draws (indices into records); Mosaic partners come from them too.
        self.pool = tf.constant(np.asarray(pool, np.int64))
        self.n = len(pool)
        self.out_hw = (int(cfg.imgsz[0]), int(cfg.imgsz[1]))
        self.seed = int(seed)
        a = cfg.augment
        self.mosaic, _, self.ratio_range, self.scale_factor = stage_settings(cfg, stage)
        self.mosaic_prob = float(a.mosaic_prob)
        self.flip_prob = float(a.flip_prob)
        self.hsv_gains = [float(g) for g in a.hsv_gains]
        self.pad_val = int(a.pad_val)
        self.min_size = float(a.min_box_size)
        self.max_boxes = int(per_sample_boxes)
        self.crop_tries = 1 if a.allow_negative_crop else max(1, int(a.negative_crop_retries) + 1)
        counts = np.array([len(r.labels) for r in records], np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        boxes = np.concatenate([np.zeros((0, 4), np.float32)]
                               + [np.asarray(r.boxes, np.float32).reshape(-1, 4) for r in records])
        labels = np.concatenate([np.zeros((0,), np.int32)]
                                + [np.asarray(r.labels, np.int32).reshape(-1) for r in records])
        self.boxes, self.labels = tf.constant(boxes), tf.constant(labels)
        self.starts, self.counts = tf.constant(starts), tf.constant(counts)
        self.rec_wh = tf.constant(np.array([[r.width, r.height] for r in records], np.float32).reshape(-1, 2))

    def _boxes_of(self, index):
        s, c = self.starts[index], self.counts[index]
        return self.boxes[s:s + c], self.labels[s:s + c]

    def _crop_flip(self, p, canvas_hw, u):
        h, w = self.out_hw
        p, (crop_h, crop_w) = T.random_crop_placements(p, canvas_hw, (h, w), u[7:9])
        p = tf.where(u[9] < self.flip_prob, T.hflip_placement(p, crop_w), p)
        return p, (crop_h, crop_w)

    def _draw(self, indices, p):
        """Render the images ``indices`` by placements ``p`` (record pixels -> output) and map their boxes."""
        sources, render_p, all_boxes, all_labels, valid = [], [], [], [], []
        for k, index in enumerate(indices):
            image, scale = self.source.get(index)
            sources.append(image)
            render_p.append(T.resize_source(p[k], scale[0], scale[1]))
            b, lab = self._boxes_of(index)
            b, v = T.transform_boxes(b, p[k], self.min_size)
            all_boxes.append(b)
            all_labels.append(lab)
            valid.append(v)
        image = T.render(sources, tf.stack(render_p), self.out_hw, self.pad_val)
        return image, tf.concat(all_boxes, 0), tf.concat(all_labels, 0), tf.concat(valid, 0)

    def _mosaic(self, index, u):
        h, w = self.out_hw
        partners = tf.gather(self.pool, tf.minimum(tf.cast(u[1:4] * self.n, tf.int64), self.n - 1))
        indices = [index] + [partners[i] for i in range(3)]
        wh = tf.gather(self.rec_wh, tf.stack(indices))
        fit_h, fit_w = T.keep_ratio_size(wh[:, 1], wh[:, 0], h, w, rounding="floor")
        center = (tf.floor((0.5 + u[4]) * w), tf.floor((0.5 + u[5]) * h))
        p = T.mosaic_placements(wh, tf.stack([fit_w, fit_h], -1), center, (h, w))
        ratio = self.ratio_range[0] + u[6] * (self.ratio_range[1] - self.ratio_range[0])
        new_w, new_h = tf.floor(2.0 * w * ratio + 0.5), tf.floor(2.0 * h * ratio + 0.5)
        p = T.scale_placement(p, new_w / (2.0 * w), new_h / (2.0 * h))
        p, crop = self._crop_flip(p, (new_h, new_w), u)
        return self._draw(indices, p) + crop

    def _single(self, index, u):
        h, w = self.out_hw
        wh = self.rec_wh[index]
        ratio = self.ratio_range[0] + u[6] * (self.ratio_range[1] - self.ratio_range[0])
        target_w = tf.floor(self.scale_factor * w * ratio)
        target_h = tf.floor(self.scale_factor * h * ratio)
        new_h, new_w = T.keep_ratio_size(wh[1], wh[0], target_h, target_w, rounding="round")
        p = T.place(wh[0], wh[1], new_w / wh[0], new_h / wh[1], 0.0, 0.0)[None]
        p, crop = self._crop_flip(p, (new_h, new_w), u)
        return self._draw([index], p) + crop

    def _sample(self, k, index, attempt):
        # Attempt 0 uses the stream position's own numbers; a retry draws new ones from (k, attempt).
        u = tf.random.stateless_uniform([_U], seed=tf.stack([tf.constant(self.seed, tf.int64),
                                                             2 * k + attempt * (1 << 40)]))
        if self.mosaic:
            if self.mosaic_prob >= 1.0:
                image, boxes, labels, valid, crop_h, crop_w = self._mosaic(index, u)
            else:
                image, boxes, labels, valid, crop_h, crop_w = tf.cond(
                    u[0] <= self.mosaic_prob, lambda: self._mosaic(index, u), lambda: self._single(index, u))
        else:
            image, boxes, labels, valid, crop_h, crop_w = self._single(index, u)
        crop_hi, crop_wi = tf.cast(crop_h, tf.int32), tf.cast(crop_w, tf.int32)
        region = image[:crop_hi, :crop_wi]
        if any(self.hsv_gains):
            region = T.hsv_jitter(region, T.sample_hsv_gains(u[10:16], self.hsv_gains))
        image = T.to_uint8(T.pad_to(region, (crop_hi, crop_wi), self.out_hw, self.pad_val))
        boxes, labels, dropped = T.pack_boxes(boxes, labels, valid, self.max_boxes)
        return image, boxes, labels, dropped

    def __call__(self, k, index):
        """One sample. Unless ``allow_negative_crop``, a sample whose image had boxes but whose crop kept
        none is drawn again with new random numbers (mmdetection's RandomCrop returns nothing then and the
        loader takes another image), up to ``negative_crop_retries`` times; the last draw is kept."""
        sample = self._sample(k, index, tf.constant(0, tf.int64))
        if self.crop_tries == 1:
            return sample
        had_boxes = self.counts[index] > 0

        def retry(attempt, *sample):
            return (attempt + 1, *self._sample(k, index, attempt + 1))

        def empty(attempt, image, boxes, labels, dropped):
            return tf.logical_and(attempt < self.crop_tries - 1,
                                  tf.logical_and(had_boxes, tf.reduce_all(labels < 0)))

        out = tf.while_loop(empty, retry, (tf.constant(0, tf.int64), *sample), maximum_iterations=self.crop_tries)
        return out[1:]
