"""COCO JSON annotation files -> :class:`DetectionDataset`.

The layout is a Roboflow export, which is also what the SSCMA command line reads::

    data_root/train/_annotations.coco.json   images in data_root/train/
    data_root/valid/_annotations.coco.json   images in data_root/valid/

Roboflow writes the project name as category 0, a super-category that no annotation uses, and the
real classes as ids 1..K. Labels are therefore made from the categories that annotations actually
use, in id order (``category_ids`` keeps the original ids for writing results back).

What is wrong with the file itself (not JSON, a missing section, an annotation naming an unknown image
or category, duplicate image ids) is an error. What is wrong with single items is skipped or repaired
and counted by reason in ``DetectionDataset.skipped``, with one :class:`DatasetWarning` per split:
missing and undecodable image files are skipped (it is an error only when no image is left), boxes
are clipped to the image, boxes with no area left or NaN coordinates are dropped, ``iscrowd=1`` boxes
go to ``crowd_boxes``, and images without annotations stay as negatives.
"""

from __future__ import annotations

import collections
import json
import numbers
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rtmdet_keras.data.images import ImageReadError, image_size
from rtmdet_keras.data.records import (
    BOX_MISSING, MISSING_IMAGE, SIZE_MISMATCH, UNREADABLE_IMAGE, DatasetError, DetectionDataset, ImageRecord,
    SkipLog, clean_boxes, describe_skipped,
)

_SECTIONS = ("images", "annotations", "categories")


def _first(items, n=5) -> str:
    items = list(items)
    text = ", ".join(str(i) for i in items[:n])
    return text + (f" and {len(items) - n} more" if len(items) > n else "")


def _check_ids(ann_file: Path, data: dict) -> None:
    """Every entry has its id and required fields, ids are unique, annotations name known images and categories."""

    def need(entry, key, section, index, kind=None):
        if not isinstance(entry, dict) or key not in entry:
            raise DatasetError(f"{ann_file}: {section}[{index}] has no {key!r} field: {str(entry)[:200]}")
        value = entry[key]
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                if not (isinstance(value, float) and value.is_integer()):
                    raise DatasetError(f"{ann_file}: {section}[{index}] has {key}={value!r}; COCO ids are integers.")
            return int(value)
        return value

    cat_ids = [need(c, "id", "categories", i, int) for i, c in enumerate(data["categories"])]
    for i, c in enumerate(data["categories"]):
        need(c, "name", "categories", i)
    dup = [k for k, n in collections.Counter(cat_ids).items() if n > 1]
    if dup:
        raise DatasetError(f"{ann_file}: category ids {_first(dup)} appear more than once in 'categories'. "
                           f"Each category needs its own id.")
    image_ids = [need(im, "id", "images", i, int) for i, im in enumerate(data["images"])]
    for i, im in enumerate(data["images"]):
        need(im, "file_name", "images", i)
    dup = [k for k, n in collections.Counter(image_ids).items() if n > 1]
    if dup:
        names = {}
        for im in data["images"]:
            if int(im["id"]) in dup:
                names.setdefault(int(im["id"]), []).append(im["file_name"])
        shown = "; ".join(f"id {k}: {', '.join(map(str, names[k]))}" for k in dup[:5])
        raise DatasetError(f"{ann_file}: {len(dup)} image id(s) appear more than once in 'images' ({shown}). "
                           f"Annotations could belong to either image: give each image its own id.")
    known_images, known_cats = set(image_ids), set(cat_ids)
    bad_images, bad_cats = [], []
    for i, a in enumerate(data["annotations"]):
        image_id = need(a, "image_id", "annotations", i, int)
        cat_id = need(a, "category_id", "annotations", i, int)
        if image_id not in known_images:
            bad_images.append(f"annotation id {a.get('id', f'#{i}')} -> image_id {image_id}")
        if cat_id not in known_cats:
            bad_cats.append(f"annotation id {a.get('id', f'#{i}')} -> category_id {cat_id}")
    if bad_images:
        raise DatasetError(
            f"{ann_file}: {len(bad_images)} annotation(s) refer to an image_id that is not in 'images' "
            f"({_first(bad_images, 3)}). The file is inconsistent (hand-edited or merged?): add the images "
            f"or remove these annotations.")
    if bad_cats:
        raise DatasetError(
            f"{ann_file}: {len(bad_cats)} annotation(s) refer to a category_id that is not in 'categories' "
            f"({_first(bad_cats, 3)}; categories are {_first(sorted(known_cats), 20)}). Add the category or "
            f"fix these annotations.")


def load_coco_json(ann_file) -> dict:
    """Parse a COCO annotation file and check its structure (the three sections and their ids).

    Raises:
        DatasetError: the file is missing or not JSON, a section is missing or not a list, an entry
            lacks its id (or ``file_name``, ``name``, ``image_id``, ``category_id``), image or
            category ids repeat, or an annotation names an unknown image or category.
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DatasetError(
            f"{ann_file}: annotation file not found. Check data_root and train_ann_file/val_ann_file "
            f"(the file is looked for at data_root/ann_file).")
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{ann_file}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}). "
                           f"Re-export the annotations.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{ann_file}: cannot read the annotation file ({e}).") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{ann_file}: a COCO annotation file is a JSON object with 'images', 'annotations' "
                           f"and 'categories'; this one is a {type(data).__name__}.")
    missing = [k for k in _SECTIONS if k not in data]
    if missing:
        raise DatasetError(
            f"{ann_file}: not a COCO detection file: missing {', '.join(repr(k) for k in missing)} "
            f"(it has {', '.join(repr(k) for k in data) or 'no keys'}). Export the data set as 'COCO JSON' "
            f"(object detection), or set dataset_format=yolo for YOLO txt labels.")
    for k in _SECTIONS:
        if not isinstance(data[k], list):
            raise DatasetError(f"{ann_file}: {k!r} must be a list, got {type(data[k]).__name__}.")

    _check_ids(ann_file, data)
    return data


def _used_category_ids(data) -> List[int]:
    """Categories that annotations use, in id order; for a file without annotations, every category
    that is not the super-category of another (Roboflow's category 0)."""
    used = sorted({int(a["category_id"]) for a in data["annotations"]})
    if used or not data["categories"]:
        return used
    parents = {c.get("supercategory") for c in data["categories"]}
    return sorted(int(c["id"]) for c in data["categories"] if c["name"] not in parents)


def coco_category_ids(ann_file) -> List[int]:
    """The original ids of the categories :func:`read_coco` makes labels of, in label order."""
    return _used_category_ids(load_coco_json(ann_file))


def _bbox_xyxy(bbox) -> Optional[List[float]]:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in bbox):
        return None
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _label_categories(ann_file: Path, data: dict, category_ids, num_classes) -> Tuple[List[int], List[str]]:
    """``(category ids in label order, class names)``: the given ``category_ids`` (checked to cover every
    category the annotations use) or the used ones; checked against ``num_classes``."""
    cat_names: Dict[int, str] = {int(c["id"]): str(c["name"]) for c in data["categories"]}

    used = _used_category_ids(data)
    if category_ids is None:
        category_ids = used
    else:
        category_ids = [int(c) for c in category_ids]
        extra = sorted(set(used) - set(category_ids))
        if extra:
            raise DatasetError(
                f"{ann_file}: annotations use categor{'y' if len(extra) == 1 else 'ies'} "
                f"{', '.join(f'{cat_names.get(c, c)!r} (id {c})' for c in extra)}, which the training split has "
                f"no box of (its classes: {', '.join(repr(cat_names.get(c, c)) for c in category_ids)}). "
                f"A detector cannot learn a class it never sees: label it in the training split or remove it.")
        unknown = [c for c in category_ids if c not in cat_names]
        if unknown:
            raise DatasetError(f"{ann_file}: category ids {unknown} of the training split are not in this "
                               f"file's 'categories'. Export both splits from the same project.")
    class_names = [cat_names[c] for c in category_ids]
    if num_classes is not None and len(category_ids) != int(num_classes):
        shown = ", ".join(f"{cat_names[c]!r} (id {c})" for c in category_ids) or "none"
        unused = [c for c in sorted(cat_names) if c not in category_ids]
        note = (f" Categories no annotation uses are not classes: "
                f"{', '.join(f'{cat_names[c]!r} (id {c})' for c in unused)}"
                f"{' (Roboflow writes the project name as an unused category 0)' if 0 in unused else ''}."
                if unused else "")
        raise DatasetError(
            f"{ann_file}: the annotations use {len(category_ids)} categories ({shown}) but num_classes is "
            f"{num_classes}.{note} Set num_classes={len(category_ids)} (--cfg-options num_classes="
            f"{len(category_ids)}) or fix the data set.")
    return category_ids, class_names


def _read_images(data: dict, img_prefix: Path, label_of: Dict[int, int], log: SkipLog,
                 verify_images: bool) -> List[ImageRecord]:
    """The records of the file's images that can be read; skips and repairs go to ``log``."""
    anns_of = collections.defaultdict(list)
    for a in data["annotations"]:
        anns_of[int(a["image_id"])].append(a)

    records = []
    for im in data["images"]:
        image_id, file_name = int(im["id"]), str(im["file_name"])
        path = img_prefix / file_name
        name = f"{file_name} (image id {image_id})"
        try:
            width, height = image_size(path, verify=verify_images)
        except ImageReadError as e:
            log.add(MISSING_IMAGE if e.reason == "missing" else UNREADABLE_IMAGE, name)
            continue
        if "width" in im and "height" in im and (im["width"], im["height"]) != (width, height):
            log.add(SIZE_MISMATCH, f"{name}: {im['width']}x{im['height']} in JSON, {width}x{height} in file")

        boxes, labels, crowd, ann_ids = [], [], [], []
        for a in anns_of.get(image_id, ()):
            xyxy = _bbox_xyxy(a.get("bbox"))
            if xyxy is None:
                log.add(BOX_MISSING, f"{name}, annotation id {a.get('id')}: bbox={a.get('bbox')!r}")
                continue
            boxes.append(xyxy)
            labels.append(label_of[int(a["category_id"])])
            crowd.append(bool(a.get("iscrowd", 0)))
            ann_ids.append(a.get("id"))
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        labels = np.asarray(labels, np.int32)
        crowd = np.asarray(crowd, bool)
        kept, keep = clean_boxes(boxes, width, height, log,
                                 lambda i: f"{name}, annotation id {ann_ids[i]}: bbox {_format_bbox(boxes[i])}")
        records.append(ImageRecord(
            image_id=image_id, path=str(path.resolve()), width=width, height=height,
            boxes=kept[~crowd[keep]], labels=labels[keep][~crowd[keep]],
            crowd_boxes=kept[crowd[keep]], crowd_labels=labels[keep][crowd[keep]],
        ))
    return records


def read_coco(ann_file, img_prefix=None, num_classes: Optional[int] = None, split: str = "train",
              category_ids: Optional[Sequence[int]] = None, verify_images: bool = True) -> DetectionDataset:
    """Read a COCO annotation file.

    Args:
        ann_file: path of the JSON file.
        img_prefix: folder the ``file_name`` entries are relative to; default the JSON's folder.
        num_classes: when given, the number of classes found must equal it.
        split: name stored in the result and used in messages ("train", "val").
        category_ids: original category ids in label order, to reuse another split's labels (the
            validation split takes the training split's); default: the categories this file's
            annotations use, in id order.
        verify_images: decode every image once now, so corrupt files are skipped here and not met
            in the middle of training.
    Returns:
        A :class:`DetectionDataset` with boxes xyxy in pixels of the displayed (EXIF-rotated) image.
    Raises:
        DatasetError: see :func:`load_coco_json`; also a ``num_classes`` mismatch, an annotation of
            a category outside ``category_ids``, or no readable image at all.
    """
    ann_file = Path(ann_file)
    img_prefix = Path(img_prefix) if img_prefix is not None else ann_file.parent
    data = load_coco_json(ann_file)
    category_ids, class_names = _label_categories(ann_file, data, category_ids, num_classes)
    label_of = {c: i for i, c in enumerate(category_ids)}

    log = SkipLog()
    records = _read_images(data, img_prefix, label_of, log, verify_images)

    if data["images"] and not records:
        missing = log.counts.get(MISSING_IMAGE, 0)
        example = img_prefix / str(data["images"][0]["file_name"])
        raise DatasetError(
            f"{ann_file}: none of its {len(data['images'])} images could be read ({missing} missing, "
            f"{log.counts.get(UNREADABLE_IMAGE, 0)} corrupt; e.g. {example}). "
            + (f"Images are looked for in {img_prefix}: check data_root and the img_prefix of this split."
               if missing else "Re-export the images."))
    boxes_in = sum(1 for a in data["annotations"] if not a.get("iscrowd", 0))
    if boxes_in and not any(len(r.boxes) for r in records):
        raise DatasetError("\n".join(
            [f"{ann_file}: every one of the {boxes_in} annotated boxes was dropped as invalid. Fix the "
             f"annotations. Reasons:"] + describe_skipped(log.counts, log.examples)))
    log.warn(split, str(ann_file))
    return DetectionDataset(records=records, class_names=class_names, category_ids=list(category_ids),
                            source=str(ann_file), split=split, skipped=log.counts,
                            skipped_examples=log.examples)


def _format_bbox(xyxy) -> str:
    """A box as COCO's ``[x, y, w, h]`` for messages."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return f"[{x1:g}, {y1:g}, {x2 - x1:g}, {y2 - y1:g}]"
