"""A small synthetic detection data set in Roboflow's COCO layout, generated deterministically.

Two classes told apart by form, not colour: ``circle`` and ``square`` (squares tilted by up to 20
degrees), drawn anti-aliased in random colours on textured backgrounds (gradients, stripes, blotchy
noise, plus sensor-like noise), 0-6 objects per image from 20 pixels to 0.6 of the shorter side,
at most mildly overlapping, on images of 192-320 pixels per side saved as JPEG::

    out_dir/train/_annotations.coco.json  out_dir/train/*.jpg
    out_dir/valid/_annotations.coco.json  out_dir/valid/*.jpg

As in a Roboflow export, category 0 is the project's super-category, which no annotation uses, and
the classes are ids 1 and 2. Every image is drawn from its own random stream (seed, split, index),
so a smaller set is the first images of a larger one with the same seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES = ("circle", "square")
SUPER_CATEGORY = "shapes"
SPLITS = ("train", "valid")
_SS = 4  # supersampling factor for anti-aliased shapes
_MIN_OBJECT = 20  # pixels, box side
_OBJECT_COUNT_P = (0.08, 0.16, 0.2, 0.2, 0.16, 0.12, 0.08)  # 0..6 objects per image


def _background(rng, height: int, width: int) -> np.ndarray:
    c0 = rng.uniform(30, 225, 3)
    c1 = np.clip(c0 + rng.normal(0, 55, 3), 0, 255)
    kind = rng.integers(3)
    if kind == 0:  # linear gradient at a random angle
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    elif kind == 1:  # soft stripes
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(10, 48)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
        t *= rng.uniform(0.3, 0.8)
    else:  # blotchy low-frequency noise
        cell = int(rng.integers(12, 40))
        grid = rng.uniform(0, 1, (height // cell + 2, width // cell + 2)).astype(np.float32)
        t = np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC))
        t = np.clip(t, 0, 1)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    return img.astype(np.float32)


def _shape_mask(kind: str, size: int, angle: float) -> np.ndarray:
    """Coverage in [0, 1], ``[size, size]``, of a shape touching all four sides of its box."""
    big = size * _SS
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "circle":
        draw.ellipse([0, 0, big - 1, big - 1], fill=255)
    else:
        # A square rotated by `angle` whose bounding box is exactly the canvas.
        c, s = abs(math.cos(angle)), abs(math.sin(angle))
        half = (big - 1) / (c + s) / 2
        centre = (big - 1) / 2
        corners = []
        for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            x, y = dx * half, dy * half
            corners.append((centre + x * math.cos(angle) - y * math.sin(angle),
                            centre + x * math.sin(angle) + y * math.cos(angle)))
        draw.polygon(corners, fill=255)
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, np.float32) / 255.0


def _overlaps(box, boxes, limit: float = 0.15) -> bool:
    """True when ``box`` covers more than ``limit`` of itself or of an earlier box (mild occlusion only)."""
    x1, y1, x2, y2 = box
    for a1, b1, a2, b2 in boxes:
        iw, ih = min(x2, a2) - max(x1, a1), min(y2, b2) - max(y1, b1)
        if iw > 0 and ih > 0:
            inter = iw * ih
            if inter > limit * min((x2 - x1) * (y2 - y1), (a2 - a1) * (b2 - b1)):
                return True
    return False


def make_demo_image(rng) -> Tuple[np.ndarray, List[Tuple[int, List[int]]]]:
    """One image ``uint8 [H, W, 3]`` and its objects ``[(class index, [x1, y1, x2, y2]), ...]`` (pixels)."""
    width, height = (int(v) for v in rng.integers(192, 321, 2))
    img = _background(rng, height, width)
    num = int(rng.choice(len(_OBJECT_COUNT_P), p=_OBJECT_COUNT_P))
    largest = int(0.6 * min(width, height))
    objects = []
    for _ in range(num):
        for _attempt in range(20):
            size = int(round(math.exp(rng.uniform(math.log(_MIN_OBJECT), math.log(largest)))))
            x1, y1 = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
            box = [x1, y1, x1 + size, y1 + size]
            if not _overlaps(box, [b for _, b in objects]):
                break
        else:
            continue
        label = int(rng.integers(len(CLASS_NAMES)))
        angle = math.radians(rng.uniform(-20, 20)) if rng.uniform() < 0.5 else 0.0
        mask = _shape_mask(CLASS_NAMES[label], size, angle)[..., None]
        region = img[y1:y1 + size, x1:x1 + size]
        local = region.reshape(-1, 3).mean(0)
        for _attempt in range(20):  # a colour that stands out from the background under it
            colour = rng.uniform(0, 255, 3)
            if np.linalg.norm(colour - local) > 100:
                break
        else:
            colour = 255.0 - local
        # Gentle shading across the object, so it is not a flat stamp.
        ramp = np.linspace(-1, 1, size, dtype=np.float32)
        shade = rng.uniform(-25, 25) * ramp[None, :, None] + rng.uniform(-25, 25) * ramp[:, None, None]
        fill = np.clip(colour[None, None] + shade, 0, 255)
        img[y1:y1 + size, x1:x1 + size] = region * (1 - mask) + fill * mask
        objects.append((label, box))
    img += rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), objects


def _write_split(out_dir: Path, split: str, split_index: int, count: int, seed: int) -> dict:
    folder = out_dir / split
    folder.mkdir(parents=True, exist_ok=True)
    categories = [{"id": 0, "name": SUPER_CATEGORY, "supercategory": "none"}]
    categories += [{"id": i + 1, "name": n, "supercategory": SUPER_CATEGORY} for i, n in enumerate(CLASS_NAMES)]
    images, annotations = [], []
    for i in range(count):
        rng = np.random.default_rng([seed, split_index, i])
        pixels, objects = make_demo_image(rng)
        file_name = f"{split}_{i:04d}.jpg"
        Image.fromarray(pixels).save(folder / file_name, quality=90)
        h, w = pixels.shape[:2]
        images.append({"id": i, "license": 1, "file_name": file_name, "height": h, "width": w,
                       "date_captured": "2024-01-01T00:00:00+00:00"})
        for label, (x1, y1, x2, y2) in objects:
            annotations.append({"id": len(annotations), "image_id": i, "category_id": label + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "segmentation": [], "iscrowd": 0})
    data = {
        "info": {"description": "rtmdet_keras synthetic demo: circles and squares", "version": "1",
                 "year": 2024, "contributor": "rtmdet_keras", "date_created": "2024-01-01T00:00:00+00:00"},
        "licenses": [{"id": 1, "url": "https://creativecommons.org/publicdomain/zero/1.0/", "name": "CC0 1.0"}],
        "categories": categories, "images": images, "annotations": annotations,
    }
    (folder / "_annotations.coco.json").write_text(json.dumps(data))
    return data


def make_demo_dataset(out_dir, seed: int = 0, num_train: int = 240, num_valid: int = 60) -> Path:
    """Write the demo data set under ``out_dir`` (created if needed; existing files of the same names
    are overwritten) and return ``out_dir`` as a :class:`Path`."""
    out_dir = Path(out_dir)
    for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_valid))):
        _write_split(out_dir, split, split_index, int(count), int(seed))
    return out_dir
