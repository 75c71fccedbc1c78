"""The in-memory form of a labelled data set, shared by every reader and the tf.data pipeline.

Boxes are ``float32 [N, 4]`` xyxy in pixels of the image *as displayed* (after EXIF rotation),
labels are contiguous ``int32`` in ``[0, num_classes)``.
"""

from __future__ import annotations

import collections
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

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)
