"""The in-memory form of a labelled data set, shared by every reader and the tf.data pipeline.

Boxes are ``float32 [N, 4]`` xyxy in pixels of the image *as displayed* (after EXIF rotation),
labels are contiguous ``int32`` in ``[0, num_classes)``.

Also here: what the readers share (the error and warning types, the reasons an item is skipped or
repaired, box clipping) and :func:`load_split`, which picks the reader a config asks for.
"""

from __future__ import annotations

import collections
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
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


def _resolve(root: Path, rel) -> Path:
    return root / str(rel) if rel is not None else root


def detect_format(cfg) -> str:
    """``"coco"`` or ``"yolo"``: ``cfg.dataset_format`` unless it is ``"auto"``, then from the files
    under ``cfg.data_root`` (a ``.json`` annotation file -> COCO; a data ``.yaml`` or ``labels/``
    folders of ``.txt`` files -> YOLO)."""
    if cfg.dataset_format != "auto":
        return cfg.dataset_format
    root = Path(cfg.data_root)
    if not root.exists():
        raise DatasetError(f"data_root {str(root)!r} does not exist. Set data_root=... to the data set's folder.")
    ann = _resolve(root, cfg.train_ann_file)
    if ann.is_file():
        if ann.suffix.lower() == ".json":
            return "coco"
        if ann.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
    from rtmdet_keras.data.yolo import find_data_yaml

    if find_data_yaml(root) is not None:
        return "yolo"
    if root.is_dir() and any(p.is_dir() and next(p.rglob("*.txt"), None) for p in root.glob("**/labels")):
        return "yolo"
    jsons = sorted(root.glob("**/*.json"))[:3] if root.is_dir() else []
    hint = (f" Found {', '.join(str(p.relative_to(root)) for p in jsons)}: for COCO set train_ann_file and "
            f"val_ann_file to these (relative to data_root).") if jsons else ""
    raise DatasetError(
        f"cannot tell the format of the data set in {str(root)!r}: there is no COCO annotation file "
        f"{cfg.train_ann_file!r} and no YOLO data.yaml or labels/ folder.{hint} Set dataset_format=coco or "
        f"dataset_format=yolo and the paths.")


def load_split(cfg, split: str = "train") -> "DetectionDataset":
    """Read the ``"train"`` or ``"val"`` split named by the config, paths relative to ``cfg.data_root``.

    The reader is chosen by :func:`detect_format`. Class names come from the data set and are checked
    against ``cfg.num_classes`` and, when set, ``cfg.class_names``. For COCO, the validation split uses
    the training split's class list, so labels mean the same in both even if a class has no box in one.

    Raises:
        DatasetError: with the file, the id or field and what to do.
    """
    if split in ("valid", "validation"):
        split = "val"
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    fmt = detect_format(cfg)
    root = Path(cfg.data_root)
    if fmt == "coco":
        from rtmdet_keras.data.coco import coco_category_ids, read_coco

        ann_file = cfg.train_ann_file if split == "train" else cfg.val_ann_file
        prefix = cfg.train_img_prefix if split == "train" else cfg.val_img_prefix
        category_ids = None
        train_ann = _resolve(root, cfg.train_ann_file)
        if split == "val" and train_ann.is_file() and train_ann.resolve() != _resolve(root, ann_file).resolve():
            category_ids = coco_category_ids(train_ann)
        dataset = read_coco(_resolve(root, ann_file), _resolve(root, prefix), num_classes=cfg.num_classes,
                            split=split, category_ids=category_ids)
    elif fmt == "yolo":
        from rtmdet_keras.data.yolo import read_yolo, yolo_source

        dataset = read_yolo(yolo_source(cfg, split), split=split, num_classes=cfg.num_classes,
                            class_names=cfg.class_names)
    else:
        raise DatasetError(f"dataset_format must be coco, yolo or auto, got {fmt!r}")
    check_class_names(dataset, cfg.num_classes, cfg.class_names)
    return dataset
