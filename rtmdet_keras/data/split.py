"""Read a split named by the config: :func:`detect_format` tells COCO from YOLO, :func:`load_split` reads it."""

from __future__ import annotations

from pathlib import Path

from rtmdet_keras.data.coco import coco_category_ids, read_coco
from rtmdet_keras.data.records import DatasetError, DetectionDataset, check_class_names
from rtmdet_keras.data.yolo import find_data_yaml, read_yolo, yolo_source


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


def load_split(cfg, split: str = "train") -> DetectionDataset:
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
        ann_file = cfg.train_ann_file if split == "train" else cfg.val_ann_file
        prefix = cfg.train_img_prefix if split == "train" else cfg.val_img_prefix
        category_ids = None
        train_ann = _resolve(root, cfg.train_ann_file)
        if split == "val" and train_ann.is_file() and train_ann.resolve() != _resolve(root, ann_file).resolve():
            category_ids = coco_category_ids(train_ann)
        dataset = read_coco(_resolve(root, ann_file), _resolve(root, prefix), num_classes=cfg.num_classes,
                            split=split, category_ids=category_ids)
    elif fmt == "yolo":
        dataset = read_yolo(yolo_source(cfg, split), split=split, num_classes=cfg.num_classes,
                            class_names=cfg.class_names)
    else:
        raise DatasetError(f"dataset_format must be coco, yolo or auto, got {fmt!r}")
    check_class_names(dataset, cfg.num_classes, cfg.class_names)
    return dataset
