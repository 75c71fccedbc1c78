"""YOLO txt data sets (Ultralytics layout) -> :class:`DetectionDataset`.

A ``data.yaml`` names the splits and the classes::

    path: .                 # data set root; relative to the yaml's folder (default: that folder)
    train: images/train     # folder of images, .txt file listing images, or a list of these
    val: images/val
    names: [circle, square] # or {0: circle, 1: square}

Each image ``.../images/.../x.jpg`` has its labels in ``.../labels/.../x.txt`` (the last ``images``
folder of the path replaced by ``labels``), one object per line: ``class cx cy w h``, normalised to
0-1 by the image's width and height. A line with more than five values is a polygon
(``class x1 y1 x2 y2 ...``) and becomes its bounding box, as Ultralytics does.

Split paths that do not exist and start with ``../`` are also tried without it: Roboflow's YOLO
exports write ``train: ../train/images`` next to a ``train/`` folder.

Policy, as for COCO: a class index outside ``names``, pixel (not normalised) coordinates, no label
file for any image, or no image at all are errors. Missing or undecodable images are skipped,
malformed and duplicate lines dropped, boxes clipped or dropped, all counted by reason in
``DetectionDataset.skipped`` with one :class:`DatasetWarning` per split; an image without a label
file is kept as a negative (and counted, since a wrong folder would make every image one).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import yaml

from rtmdet_keras.data.images import IMAGE_EXTENSIONS, ImageReadError, image_size, list_images
from rtmdet_keras.data.records import (
    LABEL_DUPLICATE, LABEL_FILE_MISSING, LABEL_MALFORMED, MISSING_IMAGE, UNREADABLE_IMAGE, DatasetError,
    DetectionDataset, ImageRecord, SkipLog, clean_boxes, describe_skipped,
)

_YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
# Normalised coordinates a little above 1 come from rounding; far above it they are pixels.
_MAX_NORMALISED = 2.0


def find_data_yaml(root) -> Optional[Path]:
    """The data set's yaml: ``root`` itself if it is one, else ``root/data.yaml`` (or ``data.yml``,
    ``dataset.yaml``), else the only ``*.yaml`` in ``root``; ``None`` if there is none."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() in (".yaml", ".yml"):
        return root
    if not root.is_dir():
        return None
    for name in _YAML_NAMES:
        if (root / name).is_file():
            return root / name
    found = sorted(list(root.glob("*.yaml")) + list(root.glob("*.yml")))
    return found[0] if len(found) == 1 else None


def yolo_source(cfg, split: str) -> Path:
    """What :func:`read_yolo` should read for ``split`` of the config: a yaml named by
    ``train_ann_file``/``val_ann_file``, else the data set's yaml under ``data_root``, else the image
    folder named by the split's img_prefix (its ``images/`` subfolder if it has one, or
    ``data_root/images/<split>``)."""
    root = Path(cfg.data_root)
    ann = root / (cfg.train_ann_file if split == "train" else cfg.val_ann_file)
    if ann.suffix.lower() in (".yaml", ".yml") and ann.is_file():
        return ann
    found = find_data_yaml(root)
    if found is not None:
        return found
    prefix = root / (cfg.train_img_prefix if split == "train" else cfg.val_img_prefix)
    names = ("train",) if split == "train" else ("val", "valid")
    for candidate in [prefix / "images", prefix] + [root / "images" / n for n in names]:
        if candidate.is_dir():
            return candidate
    raise DatasetError(
        f"{root}: no data.yaml and no image folder for the {split} split (looked for {prefix / 'images'}, "
        f"{prefix} and {root / 'images' / names[0]}). Add a data.yaml or set "
        f"{'train' if split == 'train' else 'val'}_img_prefix.")


def label_path(image_path) -> Path:
    """Ultralytics' rule: the last ``/images/`` of the path becomes ``/labels/``, the suffix ``.txt``."""
    p = str(image_path)
    sa, sb = "/images/", "/labels/"
    p = p.replace("\\", "/")
    if sa in p:
        head, tail = p.rsplit(sa, 1)
        p = head + sb + tail
    return Path(p).with_suffix(".txt")


def _class_names_from_yaml(names, source) -> List[str]:
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    if isinstance(names, dict):
        try:
            index = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DatasetError(f"{source}: 'names' keys must be class indices 0, 1, ...; got {list(names)}") from None
        if sorted(index) != list(range(len(index))):
            raise DatasetError(f"{source}: 'names' must number the classes 0..{len(index) - 1} without gaps; "
                               f"got indices {sorted(index)}")
        return [index[i] for i in range(len(index))]
    raise DatasetError(f"{source}: 'names' must be a list of class names or a mapping index -> name, "
                       f"got {type(names).__name__}")


def _split_images(entry, root: Path, source, split) -> List[Path]:
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    images: List[Path] = []
    for item in entries:
        if not isinstance(item, str):
            raise DatasetError(f"{source}: the {split!r} entry must be a path or a list of paths, got {item!r}")
        p = Path(item) if Path(item).is_absolute() else root / item
        if not p.exists() and item.startswith("../"):
            p = root / item[3:]
        if p.is_dir():
            images += list_images(p)
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text().splitlines():
                line = line.strip()
                if not line:
                    continue
                q = p.parent / line[2:] if line.startswith("./") else Path(line)
                images.append(q if q.is_absolute() else root / q)
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(p)
        else:
            raise DatasetError(f"{source}: the {split!r} split points to {p}, which does not exist. "
                               f"Fix the path in the yaml (relative to {root}).")
    return images


def _parse_label_file(path: Path, num_classes: int, log: SkipLog) -> np.ndarray:
    """``float64 [N, 5]`` rows of ``class, cx, cy, w, h`` (normalised) from one label file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the label file ({e}). Fix or delete it.") from None
    rows, seen = [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        where = f"{path.name} line {lineno}: {line.strip()[:60]!r}"
        try:
            values = [float(w) for w in words]
        except ValueError:
            log.add(LABEL_MALFORMED, where)
            continue
        cls = values[0]
        if len(values) == 5:
            _, cx, cy, w, h = values
        elif len(values) >= 7 and len(values) % 2 == 1:  # polygon -> its bounding box
            xs, ys = values[1::2], values[2::2]
            x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        else:
            log.add(LABEL_MALFORMED, where)
            continue
        if not math.isfinite(cls) or not cls.is_integer():
            log.add(LABEL_MALFORMED, where)
            continue
        if not 0 <= cls < num_classes:
            raise DatasetError(
                f"{path} line {lineno}: class index {int(cls)} is outside 0..{num_classes - 1} "
                f"({num_classes} classes in 'names'). Fix the label or add the class to 'names'.")
        if any(math.isfinite(v) and abs(v) > _MAX_NORMALISED for v in values[1:]):
            raise DatasetError(
                f"{path} line {lineno}: coordinates {values[1:5]} are not normalised to 0-1 (they look like "
                f"pixels). YOLO labels are cx cy w h divided by the image width and height: convert the labels.")
        key = tuple(values)
        if key in seen:
            log.add(LABEL_DUPLICATE, where)
            continue
        seen.add(key)
        rows.append([cls, cx, cy, w, h])
    return np.asarray(rows, np.float64).reshape(-1, 5)


def _split_source(source: Path, split: str):
    """``(image paths, class names from the yaml or None)`` of ``split`` from a data.yaml or an image folder."""
    names: Optional[List[str]] = None
    if source.is_dir():
        images = list_images(source)
        root = source
    else:
        if not source.is_file():
            raise DatasetError(f"{source}: data set yaml not found. Check data_root.")
        try:
            spec = yaml.safe_load(source.read_text())
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"{source}: cannot read the data set yaml ({e}).") from None
        if not isinstance(spec, dict):
            raise DatasetError(f"{source}: a YOLO data.yaml is a mapping with 'train', 'val' and 'names'.")
        base = Path(spec["path"]) if spec.get("path") else Path(".")
        root = base if base.is_absolute() else source.parent / base
        keys = {"val": ("val", "valid"), "valid": ("val", "valid")}.get(split, (split,))
        key = next((k for k in keys if spec.get(k)), None)
        if key is None:
            raise DatasetError(f"{source}: no {keys[0]!r} entry: add '{keys[0]}: <image folder>' to the yaml "
                               f"(it has {', '.join(map(repr, spec))}).")
        images = _split_images(spec[key], root, source, split)
        if spec.get("names") is not None:
            names = _class_names_from_yaml(spec["names"], source)
            if "nc" in spec and spec["nc"] is not None and int(spec["nc"]) != len(names):
                raise DatasetError(f"{source}: nc is {spec['nc']} but 'names' lists {len(names)} classes "
                                   f"({', '.join(map(repr, names))}). Make them agree.")
    return images, names


def _class_names(source: Path, names, class_names, num_classes) -> List[str]:
    """The yaml's ``names``, else the config's ``class_names``, else ``class_i``; checked against ``num_classes``."""
    if names is None:
        if class_names is not None:
            names = [str(n) for n in class_names]
        elif num_classes is not None:
            names = [f"class_{i}" for i in range(int(num_classes))]
        else:
            raise DatasetError(f"{source}: no class names: add 'names' to the data.yaml or set class_names "
                               f"(or num_classes) in the config.")
    if num_classes is not None and len(names) != int(num_classes):
        raise DatasetError(
            f"{source}: the data set has {len(names)} classes ({', '.join(map(repr, names))}) but num_classes "
            f"is {num_classes}. Set num_classes={len(names)} (--cfg-options num_classes={len(names)}) or fix "
            f"'names'.")
    return names


def _read_images(images, num_classes: int, log: SkipLog, verify_images: bool):
    """``(records, label files found, label lines read)`` of ``images``; skips and repairs go to ``log``."""
    records, label_files, lines = [], 0, 0
    for image_id, path in enumerate(images):
        name = f"{path.name} (image id {image_id})"
        try:
            width, height = image_size(path, verify=verify_images)
        except ImageReadError as e:
            log.add(MISSING_IMAGE if e.reason == "missing" else UNREADABLE_IMAGE, str(path))
            continue
        lp = label_path(path)
        if lp.is_file():
            label_files += 1
            rows = _parse_label_file(lp, num_classes, log)
        else:
            log.add(LABEL_FILE_MISSING, str(lp))
            rows = np.zeros((0, 5))
        lines += len(rows)
        cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        boxes, keep = clean_boxes(xyxy, width, height, log, lambda i: f"{name}, {lp.name} box {i + 1}")
        records.append(ImageRecord(image_id=image_id, path=str(path.resolve()), width=width, height=height,
                                   boxes=boxes, labels=rows[keep, 0].astype(np.int32)))
    return records, label_files, lines


def read_yolo(source, split: str = "train", num_classes: Optional[int] = None,
              class_names: Optional[Sequence[str]] = None, verify_images: bool = True) -> DetectionDataset:
    """Read one split of a YOLO txt data set.

    Args:
        source: the ``data.yaml`` (its ``train`` or ``val`` entry is read), or a folder of images
            whose labels follow Ultralytics' images -> labels rule.
        split: ``"train"`` or ``"val"`` (``"valid"``/``"test"`` are taken from the yaml too).
        num_classes: when given, must equal the number of names.
        class_names: used when the yaml has no ``names`` or ``source`` is a folder; otherwise the
            yaml's names are used (and :func:`load_split` checks the two agree).
        verify_images: decode every image once now, so corrupt files are skipped here.
    Returns:
        A :class:`DetectionDataset` with boxes xyxy in pixels; image ids are positions in the sorted
        image list; ``category_ids`` are ``0..num_classes-1``.
    Raises:
        DatasetError: unreadable yaml, missing split or path, class index out of range, pixel
            coordinates, no label files at all, or no readable image.
    """
    source = Path(source)
    images, names = _split_source(source, split)
    names = _class_names(source, names, class_names, num_classes)
    if not images:
        raise DatasetError(f"{source}: no images found for the {split} split (extensions "
                           f"{', '.join(IMAGE_EXTENSIONS)}). Check the paths.")
    log = SkipLog()
    records, label_files, lines = _read_images(images, len(names), log, verify_images)
    if not records:
        raise DatasetError(
            f"{source}: none of the {len(images)} images of the {split} split could be read "
            f"({log.counts.get(MISSING_IMAGE, 0)} missing, {log.counts.get(UNREADABLE_IMAGE, 0)} corrupt; "
            f"e.g. {images[0]}).")
    if label_files == 0:
        raise DatasetError(
            f"{source}: none of the {len(records)} images of the {split} split has a label file (looked for "
            f"e.g. {label_path(Path(records[0].path))}). Labels go in a 'labels' folder beside 'images', "
            f"with the same sub-folders and file names (.txt).")
    if lines and not any(len(r.boxes) for r in records):
        raise DatasetError("\n".join(
            [f"{source}: every one of the {lines} labelled boxes of the {split} split was dropped as invalid. "
             f"Fix the labels. Reasons:"] + describe_skipped(log.counts, log.examples)))
    log.warn(split, str(source))
    return DetectionDataset(records=records, class_names=names, category_ids=list(range(len(names))),
                            source=str(source), split=split, skipped=log.counts, skipped_examples=log.examples)
