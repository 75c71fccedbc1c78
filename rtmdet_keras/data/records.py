"""The in-memory form of a labelled data set, shared by every reader and the tf.data pipeline.

Boxes are ``float32 [N, 4]`` xyxy in pixels of the image *as displayed* (after EXIF rotation),
labels are contiguous ``int32`` in ``[0, num_classes)``.

Also here: what the readers share (the error and warning types, the reasons an item is skipped or
repaired, box clipping). :func:`rtmdet_keras.data.split.load_split` picks the reader a config asks for.
"""

from __future__ import annotations

import collections
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np


@dataclass
class ImageRecord:
    """One image and its training targets."""

    image_id: int
    path: str  # absolute path of the image file
    width: int  # pixels, after EXIF rotation
    height: int
    boxes: np.ndarray  # float32 [N, 4] xyxy pixels, clipped to the image, positive size
    labels: np.ndarray  # int32 [N], contiguous class index
    # iscrowd=1 regions: not training targets, kept so evaluation can ignore detections there.
    crowd_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    crowd_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))  # int32 [M]


@dataclass
class DetectionDataset:
    """A split of a data set: its records, class names and what was skipped while reading it."""

    records: List[ImageRecord]
    class_names: List[str]
    # Original category id (COCO) for each contiguous label, so results can be written back in
    # the source's ids. For YOLO data sets this is simply ``range(num_classes)``.
    category_ids: List[int]
    source: str  # annotation file or data.yaml the split was read from
    split: str = "train"
    # Reason -> count of what was dropped or repaired (e.g. "box with zero or negative size").
    skipped: Dict[str, int] = field(default_factory=collections.Counter)
    # Reason -> a few examples ("a.jpg (image id 3)"), for messages and the check-data report.
    skipped_examples: Dict[str, List[str]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)


class DatasetError(ValueError):
    """A data set cannot be used as it is; the message names the file, the image or annotation id
    or the field, and says what to do."""


class DatasetWarning(UserWarning):
    """Items of a data set were skipped or repaired while reading it. Issued once per split with
    counts by reason (through :func:`warnings.warn`, so it can be filtered or turned into an error)."""


# Reasons for ``DetectionDataset.skipped``. Images that cannot be read are skipped (reading fails only
# when none is left); boxes are clipped to the image or dropped when nothing sensible is left of them.
MISSING_IMAGE = "image file missing (image skipped)"
UNREADABLE_IMAGE = "image file corrupt or truncated (image skipped)"
SIZE_MISMATCH = "width/height in the annotations differ from the file (file's used)"
BOX_CLIPPED = "box partly outside the image (clipped)"
BOX_OUTSIDE = "box entirely outside the image (dropped)"
BOX_EMPTY = "box with zero or negative size (dropped)"
BOX_NAN = "box with NaN or infinite coordinates (dropped)"
BOX_MISSING = "annotation without a valid bbox (dropped)"
LABEL_FILE_MISSING = "image without a label file (kept as a negative)"
LABEL_MALFORMED = "label line malformed (dropped)"
LABEL_DUPLICATE = "duplicate label line (dropped)"

# Labelling tools and exporters round coordinates; a box past the border by less than this many
# pixels is clipped without being counted as a repair.
CLIP_TOLERANCE = 0.5


class SkipLog:
    """Counts what a reader skipped or repaired, by reason, with the first few examples of each."""

    def __init__(self, max_examples: int = 3):
        self.counts: Dict[str, int] = collections.Counter()
        self.examples: Dict[str, List[str]] = {}
        self.max_examples = max_examples

    def add(self, reason: str, example: str = None, n: int = 1) -> None:
        if n <= 0:
            return
        self.counts[reason] += n
        if example is not None:
            ex = self.examples.setdefault(reason, [])
            if len(ex) < self.max_examples:
                ex.append(example)

    def warn(self, split: str, source: str) -> None:
        """One :class:`DatasetWarning` for the whole split (nothing when nothing was skipped), reported
        at the first caller outside ``rtmdet_keras/data``."""
        if not self.counts:
            return
        total = sum(self.counts.values())
        lines = [f"{split} split ({source}): {total} item(s) skipped or repaired while reading:"]
        lines += describe_skipped(self.counts, self.examples)
        warnings.warn("\n".join(lines), DatasetWarning, stacklevel=_stacklevel_outside_this_package())


def _stacklevel_outside_this_package() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        level, frame = level + 1, frame.f_back
    return level


def describe_skipped(counts: Dict[str, int], examples: Dict[str, List[str]] = None) -> List[str]:
    """One indented line per reason: count, reason and the first examples."""
    lines = []
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        ex = (examples or {}).get(reason)
        more = f"  e.g. {'; '.join(ex)}" if ex else ""
        lines.append(f"  {n:6d}  {reason}{more}")
    return lines


def clean_boxes(boxes, width: int, height: int, log: SkipLog, where) -> np.ndarray:
    """Drop or clip xyxy pixel boxes so every kept box lies inside ``width x height`` with positive size.

    Args:
        boxes: float ``[N, 4]`` xyxy pixels.
        log: receives one count per dropped or clipped box.
        where: ``where(i)`` gives the example text of box ``i`` ("a.jpg (image id 3), annotation id 7").
    Returns:
        ``(kept boxes float32 [K, 4], keep bool [N])``.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    keep = np.ones(len(b), bool)
    for i, (x1, y1, x2, y2) in enumerate(b):
        if not np.all(np.isfinite(b[i])):
            log.add(BOX_NAN, where(i))
            keep[i] = False
        elif x2 <= x1 or y2 <= y1:
            log.add(BOX_EMPTY, where(i))
            keep[i] = False
    clipped = b.copy()
    clipped[:, 0::2] = np.clip(b[:, 0::2], 0.0, width)
    clipped[:, 1::2] = np.clip(b[:, 1::2], 0.0, height)
    for i in np.flatnonzero(keep):
        x1, y1, x2, y2 = clipped[i]
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            log.add(BOX_OUTSIDE, where(i))
            keep[i] = False
        elif np.max(np.abs(clipped[i] - b[i])) > CLIP_TOLERANCE:
            log.add(BOX_CLIPPED, where(i))
    return clipped[keep].astype(np.float32), keep


def check_class_names(dataset: "DetectionDataset", num_classes=None, class_names=None) -> None:
    """Raise :class:`DatasetError` when the data set's classes disagree with the config's."""
    names = ", ".join(repr(n) for n in dataset.class_names) or "none"
    if num_classes is not None and dataset.num_classes != int(num_classes):
        raise DatasetError(
            f"{dataset.source}: the data set has {dataset.num_classes} classes ({names}) but num_classes is "
            f"{num_classes}. Set num_classes={dataset.num_classes} (--cfg-options num_classes="
            f"{dataset.num_classes}) or fix the data set.")
    if class_names is not None and list(class_names) != list(dataset.class_names):
        raise DatasetError(
            f"{dataset.source}: the data set's classes are [{names}] but class_names in the config is "
            f"{list(class_names)!r}. Make them match (same names, same order) or leave class_names unset "
            f"to take them from the data set.")
