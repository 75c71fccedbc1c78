"""What a data set holds and what was skipped while reading it (``rtmdet check-data`` prints it).

    python -m rtmdet_keras.data.check --config nano --cfg-options data_root=datasets/demo/

Training prints the same report (:func:`format_report`) before it starts.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from rtmdet_keras.data.records import DetectionDataset, describe_skipped

# COCO's object size ranges, by box area in pixels.
SMALL_AREA = 32 ** 2
MEDIUM_AREA = 96 ** 2


def size_histogram(areas) -> dict:
    """Counts of ``small`` (area < 32²), ``medium`` (< 96²) and ``large`` boxes, by COCO's ranges."""
    a = np.asarray(areas, np.float64)
    return {"small": int(np.sum(a < SMALL_AREA)),
            "medium": int(np.sum((a >= SMALL_AREA) & (a < MEDIUM_AREA))),
            "large": int(np.sum(a >= MEDIUM_AREA))}


def dataset_stats(dataset: DetectionDataset, imgsz: Optional[Sequence[int]] = None) -> dict:
    """The numbers :func:`format_report` prints, as a dict.

    With ``imgsz`` (height, width), box sizes are also given after the keep-ratio resize to it, which
    is what the network sees (a 40-pixel box in a 640-pixel photo is small at 192 pixels).
    """
    n = dataset.num_classes
    boxes_per_class = np.zeros(n, np.int64)
    images_per_class = np.zeros(n, np.int64)
    areas, scaled_areas = [], []
    with_boxes = crowd = 0
    for r in dataset.records:
        labels = np.asarray(r.labels, np.int64)
        if len(labels):
            with_boxes += 1
            boxes_per_class += np.bincount(labels, minlength=n)[:n]
            images_per_class[np.unique(labels)] += 1
        b = np.asarray(r.boxes, np.float64).reshape(-1, 4)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        areas.append(area)
        if imgsz is not None:
            scale = min(imgsz[0] / r.height, imgsz[1] / r.width)
            scaled_areas.append(area * scale * scale)
        crowd += len(r.crowd_boxes)
    areas = np.concatenate(areas) if areas else np.zeros(0)
    sizes = np.array([(r.width, r.height) for r in dataset.records]).reshape(-1, 2)
    stats = {
        "images": len(dataset.records), "with_boxes": with_boxes, "without_boxes": len(dataset.records) - with_boxes,
        "boxes": int(boxes_per_class.sum()), "crowd": crowd,
        "boxes_per_class": dict(zip(dataset.class_names, boxes_per_class.tolist())),
        "images_per_class": dict(zip(dataset.class_names, images_per_class.tolist())),
        "sizes": size_histogram(areas),
        "image_sizes": (sizes.min(0).tolist(), sizes.max(0).tolist()) if len(sizes) else None,
        "skipped": dict(dataset.skipped),
    }
    if imgsz is not None:
        stats["sizes_at_imgsz"] = size_histogram(np.concatenate(scaled_areas) if scaled_areas else np.zeros(0))
    return stats


def format_report(dataset: DetectionDataset, imgsz: Optional[Sequence[int]] = None) -> str:
    """A table a person can read: images (with and without boxes), boxes per class, box sizes by
    COCO's ranges (also at ``imgsz`` when given), and what was skipped or repaired, by reason."""
    s = dataset_stats(dataset, imgsz)
    pct = lambda k, total: f"{100.0 * k / total:5.1f}%" if total else "    -"  # noqa: E731
    lines = [f"{dataset.split} split: {dataset.source}"]
    lines.append(f"  images  {s['images']:7d}   with boxes {s['with_boxes']}, without (negatives) {s['without_boxes']}")
    if s["image_sizes"]:
        (w0, h0), (w1, h1) = s["image_sizes"]
        lines.append(f"  image sizes   width {w0}-{w1}, height {h0}-{h1} pixels")
    crowd = f"   (+ {s['crowd']} iscrowd regions, not targets)" if s["crowd"] else ""
    lines.append(f"  boxes   {s['boxes']:7d}{crowd}")
    width = max([len("class")] + [len(n) for n in dataset.class_names])
    lines.append(f"  {'class':<{width}}  {'boxes':>7}  {'share':>6}  {'images':>7}")
    for name in dataset.class_names:
        k = s["boxes_per_class"][name]
        lines.append(f"  {name:<{width}}  {k:7d}  {pct(k, s['boxes'])}  {s['images_per_class'][name]:7d}")
    rows = [("original pixels", s["sizes"])]
    if imgsz is not None:
        rows.append((f"at imgsz {imgsz[0]}x{imgsz[1]}", s["sizes_at_imgsz"]))
    lines.append(f"  box sizes (COCO areas)  {'small <32²':>11}  {'medium <96²':>11}  {'large':>11}")
    for label, h in rows:
        cells = "  ".join(f"{h[k]:5d} {pct(h[k], s['boxes'])}" for k in ("small", "medium", "large"))
        lines.append(f"  {label:<22}  {cells}")
    if dataset.skipped:
        lines.append(f"  skipped or repaired: {sum(dataset.skipped.values())}")
        lines += ["  " + line for line in describe_skipped(dataset.skipped, dataset.skipped_examples)]
    else:
        lines.append("  skipped or repaired: nothing")
    empty = [n for n in dataset.class_names if s["boxes_per_class"][n] == 0]
    if empty and dataset.split == "train":
        lines.append(f"  WARNING: no training box of {', '.join(map(repr, empty))}: the model cannot learn it")
    return "\n".join(lines)


if __name__ == "__main__":
    from rtmdet_keras.cli import run_standalone
    from rtmdet_keras.commands.check_data import check_data_command

    run_standalone(check_data_command, "python -m rtmdet_keras.data.check")
