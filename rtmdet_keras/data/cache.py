"""Decoded training images kept in memory, so the tf.data pipeline decodes every file only once.

Small data sets are the common case here: a few hundred images decode in a second or two and then
fit easily in memory. Each image is stored shrunk (never enlarged) to the largest size the training
pipeline can use (``max_hw``: the augmentation never samples an image finer than that), with a
one-pixel border repeating its edges, which :func:`rtmdet_keras.data.transforms.render` wants. All
images live in one flat ``uint8`` ``tf.Variable`` on the CPU: a variable is captured by reference in
tf.data functions, while a large captured constant would be copied into every serialized graph.

When the images do not fit the memory budget, :class:`FileImages` decodes them from their files on
every use instead (same interface, slower).
"""

from __future__ import annotations

import logging
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from PIL import Image

from rtmdet_keras.data.images import load_image
from rtmdet_keras.data.records import ImageRecord

log = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 4 << 30  # at most 4 GiB, and at most a quarter of the available memory


def default_budget_bytes() -> int:
    """``min(4 GiB, available memory / 4)``; 4 GiB where the available memory cannot be read."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_BUDGET_BYTES
    return int(min(DEFAULT_BUDGET_BYTES, available // 4))


def fitted_size(height: int, width: int, max_hw: Sequence[int]) -> Tuple[int, int]:
    """``(h, w)`` of an image shrunk with its aspect ratio kept to fit ``max_hw``; never enlarged."""
    s = min(1.0, max_hw[0] / height, max_hw[1] / width)
    return max(1, int(round(height * s))), max(1, int(round(width * s)))


def estimate_bytes(records: Sequence[ImageRecord], max_hw: Sequence[int]) -> int:
    """Memory an :class:`ImageCache` of ``records`` would take, from the records' sizes alone."""
    total = 0
    for r in records:
        h, w = fitted_size(r.height, r.width, max_hw)
        total += (h + 2) * (w + 2) * 3
    return total


def _load_fitted(path: str, max_hw) -> Tuple[np.ndarray, int, int]:
    """Decode, shrink to fit ``max_hw`` and add the repeated-edge border; also the decoded size."""
    image = load_image(path)
    h0, w0 = image.shape[:2]
    h, w = fitted_size(h0, w0, max_hw)
    if (h, w) != (h0, w0):
        # Pillow's bilinear filter widens with the shrink factor, so large reductions do not alias.
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    return np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge"), h0, w0


class ImageSource:
    """Random access to a data set's images inside tf.data: :meth:`get` an index, receive the image
    with its border and the factor from record pixels (``ImageRecord.width/height``) to its pixels."""

    def get(self, index):  # pragma: no cover - interface
        raise NotImplementedError


class ImageCache(ImageSource):
    """All images of ``records``, decoded once, shrunk to fit ``max_hw`` and packed in CPU memory.

    Args:
        records: the images, in data set order (``get(i)`` is ``records[i]``).
        max_hw: ``(height, width)`` each image is shrunk to fit (keeping its aspect ratio).
        workers: decoding threads (Pillow releases the GIL while decoding).
    """

    def __init__(self, records: Sequence[ImageRecord], max_hw: Sequence[int], workers: int = 2):
        self.max_hw = (int(max_hw[0]), int(max_hw[1]))
        paths = [r.path for r in records]
        with ThreadPoolExecutor(max(1, workers)) as pool:
            loaded = list(pool.map(lambda p: _load_fitted(p, self.max_hw), paths))
        sizes = np.array([a.shape[0] * a.shape[1] * 3 for a, _, _ in loaded], np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        flat = np.empty(int(sizes.sum()), np.uint8)
        for a, s, n in zip((a for a, _, _ in loaded), starts, sizes):
            flat[s:s + n] = a.reshape(-1)
        hw = np.array([a.shape[:2] for a, _, _ in loaded], np.int32).reshape(-1, 2)
        # Factor from record pixels to stored pixels, per axis (stored size without the border).
        rec = np.array([[r.width, r.height] for r in records], np.float64).reshape(-1, 2)
        stored = hw[:, ::-1].astype(np.float64) - 2.0
        self.nbytes = int(flat.nbytes)
        self.num_images = len(records)
        with tf.init_scope(), tf.device("/CPU:0"):
            self._pixels = tf.Variable(flat, trainable=False, name="image_cache")
            self._starts = tf.constant(starts)
            self._hw = tf.constant(hw)
            self._scale = tf.constant((stored / np.maximum(rec, 1.0)).astype(np.float32))
        del flat, loaded

    def get(self, index):
        """``(uint8 [h + 2, w + 2, 3], float32 [2] (sx, sy))`` for image ``index`` (a scalar tensor)."""
        start = self._starts[index]
        hw = self._hw[index]
        size = tf.cast(hw[0] * hw[1] * 3, tf.int64)
        image = tf.reshape(self._pixels[start:start + size], tf.concat([hw, [3]], 0))
        return image, self._scale[index]


class FileImages(ImageSource):
    """Decode from the files on every :meth:`get` (for data sets larger than the memory budget)."""

    def __init__(self, records: Sequence[ImageRecord]):
        self._paths = tf.constant([r.path for r in records] or [""], tf.string)
        self._rec_wh = tf.constant(np.array([[r.width, r.height] for r in records], np.float32).reshape(-1, 2))
        self.num_images = len(records)

    def get(self, index):
        image = tf.numpy_function(lambda p: load_image(p.decode()), [self._paths[index]], tf.uint8, stateful=False)
        image = tf.ensure_shape(image, [None, None, 3])
        wh = tf.cast(tf.shape(image)[1::-1], tf.float32)
        bordered = tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
        return bordered, wh / tf.maximum(self._rec_wh[index], 1.0)


# One cache per data set object, shared by the stage-1 and stage-2 pipelines (and later calls).
_SHARED: dict = {}


def image_source_for(dataset, max_hw: Sequence[int], use_cache: bool = True,
                     budget_bytes: Optional[int] = None, workers: int = 2) -> ImageSource:
    """An :class:`ImageCache` of ``dataset.records`` when ``use_cache`` and it fits ``budget_bytes``
    (default :func:`default_budget_bytes`), else :class:`FileImages`. Caches are shared: a second
    call for the same data set object and ``max_hw`` returns the first cache."""
    records: List[ImageRecord] = list(dataset.records)
    if not use_cache:
        return FileImages(records)
    budget = default_budget_bytes() if budget_bytes is None else int(budget_bytes)
    need = estimate_bytes(records, max_hw)
    if need > budget:
        log.warning("training images need %.0f MB decoded (at most %dx%d px each), more than the cache budget "
                    "of %.0f MB: decoding them from their files at every step instead (slower)",
                    need / 2**20, max_hw[1], max_hw[0], budget / 2**20)
        return FileImages(records)
    key = (id(dataset), tuple(int(v) for v in max_hw))
    entry = _SHARED.get(key)
    if entry is not None and entry[0]() is dataset and entry[1].num_images == len(records):
        return entry[1]
    cache = ImageCache(records, max_hw, workers=workers)
    log.info("cached %d decoded images in memory (%.0f MB, at most %dx%d px each)",
             len(records), cache.nbytes / 2**20, max_hw[1], max_hw[0])
    try:
        _SHARED[key] = (weakref.ref(dataset), cache)
        weakref.finalize(dataset, _SHARED.pop, key, None)  # free the pixels with the data set
    except TypeError:  # an object without weak references: no sharing
        pass
    return cache
