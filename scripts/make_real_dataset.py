#!/usr/bin/env python
"""Build a small real-photograph data set (tree crowns in aerial RGB) in Roboflow's COCO layout.

    python scripts/make_real_dataset.py --out datasets/aerial [--tile 320] [--overlap 0.5] [--seed 0]
        [--wheel-dir DIR] [--force]

Why: the synthetic demo set is too easy to tell training recipes apart. The recipe comparison harness
``scripts/bench/vs_ultralytics.py`` runs on this set instead: real photographs, many small objects,
crowded scenes and human label noise, yet small enough to train on a CPU.

Source: the annotated images shipped inside the ``deepforest==2.1.0`` wheel on PyPI (MIT licence;
NEON airborne RGB at 10 cm per pixel). The wheel is fetched with ``pip download`` (the only network
used) into ``~/.cache/rtmdet_keras/wheels`` and read with :mod:`zipfile`, never installed. Every Pascal
VOC XML in ``deepforest/data/`` is used: two large Yellowstone crops (2299x2472 px with 574 crowns and
1249x1035 px with 279) and two 400x400 plots (OSBS_029, 61 "Tree"; SOAP_061, 28 "Dead" + 9 "Alive").
The CSV files there repeat boxes of the same images, so they are not read. All labels become the one
class ``tree``: the other images call dead and living trees alike "Tree", so keeping "Dead" and "Alive"
as classes would teach the detector contradictions.

Split, without leakage: a vertical line cuts each image into a training part (left) and a validation
part (right, ``VALID_FRACTION`` of the width but at least one tile); the line is moved by up to a
quarter tile to where it cuts the fewest crowns. Each part is tiled on its own, so no tile, and no
pixel, is in both splits. An image too narrow for two parts of a tile each goes to training whole.

Tiling: square ``--tile`` tiles, evenly spaced and the last one flush with the edge of its part.
Training tiles overlap their neighbours by at least ``--overlap`` (default a half: 182 training tiles,
enough steps for a 30-epoch run from scratch to learn something; with a quarter, 88 tiles left both
YOLO11n and nano near 0 AP after 30 epochs), so a crown cut by one tile is whole in the next;
validation tiles overlap only as much as covering the part needs, since there overlap would just count
the same crowns twice. A box belongs to a tile when at least half of its
area lies inside (``MIN_INSIDE``); it is clipped to the tile and dropped if then narrower or lower than
``MIN_SIDE`` pixels. Less-covered crowns stay in the picture unlabelled, which is the usual price of
tiling. A part no larger than ``WHOLE_LIMIT`` tiles on both sides stays whole rather than being cut
into tiles that share most of their pixels (a 400 px plot with 320 px tiles).

Output, as a Roboflow export (category 0 is the unused super-category, classes start at id 1)::

    out/train/_annotations.coco.json  out/train/*.jpg   (JPEG quality 95)
    out/valid/_annotations.coco.json  out/valid/*.jpg

The same wheel and options give the same files; ``--seed`` only shuffles the order (and so the ids)
of the images in each split, so that taking the first images gives tiles from all over the scenes.
When both annotation files exist the script says so and writes nothing, unless ``--force``. The data
lives under ``datasets/``, which git ignores.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

PACKAGE, VERSION = "deepforest", "2.1.0"
DATA_DIR = "deepforest/data/"
WHEEL_CACHE = Path.home() / ".cache" / "rtmdet_keras" / "wheels"
SUPER_CATEGORY = "trees"
CLASS_NAMES = ("tree",)
LABEL_TO_CLASS = {"tree": "tree", "dead": "tree", "alive": "tree"}  # lower-cased VOC <name> -> class
SPLITS = ("train", "valid")
ANN_FILE = "_annotations.coco.json"
VALID_FRACTION = 0.22  # of each image's width, from the right
MIN_INSIDE = 0.5  # fraction of a box's area that must lie in a tile for the tile to keep it
MIN_SIDE = 2.0  # pixels; thinner clipped boxes are slivers, not objects
WHOLE_LIMIT = 1.5  # parts up to this many tiles per side are kept whole
JPEG_QUALITY = 95


@dataclass
class Source:
    """One annotated image of the wheel: pixels and boxes ``[N, 4]`` x1, y1, x2, y2 in pixels."""

    stem: str
    image: Image.Image
    boxes: np.ndarray
    labels: List[int]


@dataclass
class Tile:
    """A crop of a source image destined for one split, with its boxes in tile coordinates."""

    file_name: str
    source: Source
    window: Tuple[int, int, int, int]  # x1, y1, x2, y2 in the source image
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: List[int] = field(default_factory=list)


# --- the wheel -----------------------------------------------------------------------------------------------


def _find_wheel(folder: Path) -> Optional[Path]:
    found = sorted(Path(folder).glob(f"{PACKAGE}-{VERSION}-*.whl"))
    return found[0] if found else None


def get_wheel(wheel_dir: Optional[str]) -> Path:
    """The deepforest wheel: from ``wheel_dir``, else the cache, else ``pip download`` into the cache."""
    for folder in ([Path(wheel_dir)] if wheel_dir else []) + [WHEEL_CACHE]:
        wheel = _find_wheel(folder)
        if wheel:
            return wheel
        if wheel_dir and folder == Path(wheel_dir):
            print(f"no {PACKAGE}-{VERSION}-*.whl in {folder}; downloading it instead", flush=True)
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", f"{PACKAGE}=={VERSION}",
           "-d", str(WHEEL_CACHE)]
    print("$ " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd)
    wheel = _find_wheel(WHEEL_CACHE)
    if done.returncode != 0 or wheel is None:
        raise SystemExit(
            f"error: could not download {PACKAGE}=={VERSION} from the package index (pip exited with "
            f"{done.returncode}). On a machine that can reach PyPI run `pip download --no-deps "
            f"{PACKAGE}=={VERSION} -d DIR`, copy DIR here and pass --wheel-dir DIR.")
    return wheel


# --- reading the annotated images ----------------------------------------------------------------------------


def _parse_voc(text: bytes, where: str) -> Tuple[str, Tuple[int, int], np.ndarray, List[int]]:
    """File name, (width, height), boxes and class indices of one Pascal VOC file.

    DeepForest writes the corners as pixel edges from 0 (its CSVs hold the same numbers), so they are
    used as they are, without VOC's traditional 1-based shift.
    """
    root = ET.fromstring(text)
    size = root.find("size")
    width, height = int(size.findtext("width")), int(size.findtext("height"))
    boxes, labels = [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name.lower() not in LABEL_TO_CLASS:
            raise SystemExit(f"error: {where}: unknown label {name!r}; add it to LABEL_TO_CLASS")
        bb = obj.find("bndbox")
        boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(CLASS_NAMES.index(LABEL_TO_CLASS[name.lower()]))
    return root.findtext("filename").strip(), (width, height), np.asarray(boxes, np.float64).reshape(-1, 4), labels


def _image_member(names: Sequence[str], file_name: str) -> str:
    """The wheel member holding ``file_name``, or one with the same stem if the XML names a missing file."""
    wanted = DATA_DIR + file_name
    if wanted in names:
        return wanted
    stem = DATA_DIR + Path(file_name).stem
    for ext in (".png", ".tif", ".jpg", ".JPG"):
        if stem + ext in names:
            return stem + ext
    raise SystemExit(f"error: the wheel has no image for {file_name!r}")


def _clip_to_image(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return boxes


def read_sources(wheel: Path) -> List[Source]:
    """Every image of ``deepforest/data/`` that has a VOC XML, in file-name order."""
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise SystemExit(f"error: {wheel} is not a wheel (zip); delete it and run again") from None
    with archive:
        names = archive.namelist()
        xmls = sorted(n for n in names if n.startswith(DATA_DIR) and n.endswith(".xml"))
        if not xmls:
            raise SystemExit(f"error: {wheel} has no Pascal VOC annotations under {DATA_DIR}")
        sources = []
        for xml_name in xmls:
            file_name, (width, height), boxes, labels = _parse_voc(archive.read(xml_name), xml_name)
            image = Image.open(io.BytesIO(archive.read(_image_member(names, file_name)))).convert("RGB")
            if image.size != (width, height):
                raise SystemExit(f"error: {xml_name} says {width}x{height}, the image is {image.width}x{image.height}")
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(xml_name).stem)
            sources.append(Source(stem, image, _clip_to_image(boxes, width, height), labels))
    return sources


# --- splitting and tiling ------------------------------------------------------------------------------------


def split_line(source: Source, tile: int) -> Optional[int]:
    """x of the train/valid boundary, or None when the image is too narrow for a tile on each side.

    Near the nominal line, the column crossing the fewest boxes wins (then the nearest, then the
    leftmost), so few crowns are cut in two with a part in each split.
    """
    width = source.image.width
    nominal = width - max(int(round(VALID_FRACTION * width)), tile)
    if nominal < tile:
        return None
    xs = np.arange(max(tile, nominal - tile // 4), min(width - tile, nominal + tile // 4) + 1)
    x1, x2 = source.boxes[:, 0], source.boxes[:, 2]
    crossed = ((x1[None] < xs[:, None]) & (xs[:, None] < x2[None])).sum(1)
    best = min(range(len(xs)), key=lambda i: (crossed[i], abs(xs[i] - nominal), xs[i]))
    return int(xs[best])


def tile_starts(length: int, tile: int, overlap: float) -> List[int]:
    """Starts of tiles covering ``[0, length)``, evenly spread, overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / (tile * (1.0 - overlap))) + 1
    return [int(round(i * (length - tile) / (count - 1))) for i in range(count)]


def tile_windows(part: Tuple[int, int, int, int], tile: int, overlap: float) -> List[Tuple[int, int, int, int]]:
    """Tile windows (x1, y1, x2, y2) inside ``part``, row by row; the whole part when it is small."""
    px1, py1, px2, py2 = part
    width, height = px2 - px1, py2 - py1
    if width <= WHOLE_LIMIT * tile and height <= WHOLE_LIMIT * tile:
        return [part]
    tw, th = min(tile, width), min(tile, height)
    return [(px1 + x, py1 + y, px1 + x + tw, py1 + y + th)
            for y in tile_starts(height, th, overlap) for x in tile_starts(width, tw, overlap)]


def boxes_in_window(boxes: np.ndarray, window: Tuple[int, int, int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes kept by ``window`` (at least ``MIN_INSIDE`` of the area inside, not slivers), clipped and
    shifted to window coordinates, and the indices of the kept boxes."""
    x1, y1, x2, y2 = window
    clipped = np.stack([boxes[:, 0].clip(x1, x2), boxes[:, 1].clip(y1, y2),
                        boxes[:, 2].clip(x1, x2), boxes[:, 3].clip(y1, y2)], axis=1)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = np.flatnonzero((w * h >= MIN_INSIDE * area) & (w >= MIN_SIDE) & (h >= MIN_SIDE) & (area > 0))
    return clipped[keep] - np.array([x1, y1, x1, y1], np.float64), keep


def make_tiles(sources: Sequence[Source], tile: int, overlap: float) -> Dict[str, List[Tile]]:
    """The tiles of every source, by split, in source then row order."""
    tiles = {split: [] for split in SPLITS}
    for source in sources:
        width, height = source.image.size
        line = split_line(source, tile)
        parts = {"train": (0, 0, width, height)} if line is None else {
            "train": (0, 0, line, height), "valid": (line, 0, width, height)}
        crossed = 0 if line is None else int(((source.boxes[:, 0] < line) & (line < source.boxes[:, 2])).sum())
        print(f"{source.stem}: {width}x{height}, {len(source.boxes)} boxes, "
              + ("all to train" if line is None else f"valid from x={line} (line crosses {crossed} boxes)"))
        for split, part in parts.items():
            windows = tile_windows(part, tile, overlap if split == "train" else 0.0)
            for window in windows:
                boxes, keep = boxes_in_window(source.boxes, window)
                name = f"{source.stem}.jpg" if window == (0, 0, width, height) else \
                    f"{source.stem}_x{window[0]:04d}_y{window[1]:04d}.jpg"
                tiles[split].append(Tile(name, source, window, boxes, [source.labels[i] for i in keep]))
    return tiles


# --- writing -------------------------------------------------------------------------------------------------


def _number(value: float):
    """An int when the value is whole, so pixel-aligned boxes read as in a Roboflow export."""
    value = round(float(value), 2)
    return int(value) if value.is_integer() else value


def coco_json(tiles: Sequence[Tile]) -> dict:
    categories = [{"id": 0, "name": SUPER_CATEGORY, "supercategory": "none"}]
    categories += [{"id": i + 1, "name": n, "supercategory": SUPER_CATEGORY} for i, n in enumerate(CLASS_NAMES)]
    images, annotations = [], []
    for image_id, t in enumerate(tiles):
        x1, y1, x2, y2 = t.window
        images.append({"id": image_id, "license": 1, "file_name": t.file_name, "height": y2 - y1, "width": x2 - x1})
        for (bx1, by1, bx2, by2), label in zip(t.boxes, t.labels):
            w, h = bx2 - bx1, by2 - by1
            annotations.append({"id": len(annotations), "image_id": image_id, "category_id": label + 1,
                                "bbox": [_number(bx1), _number(by1), _number(w), _number(h)],
                                "area": _number(w * h), "segmentation": [], "iscrowd": 0})
    return {
        "info": {"description": f"Tree crowns in NEON aerial RGB, tiled from the {PACKAGE}=={VERSION} wheel's "
                                f"example data", "version": "1", "contributor": "rtmdet_keras"},
        "licenses": [{"id": 1, "url": "https://github.com/weecology/DeepForest/blob/main/LICENSE",
                      "name": "MIT (DeepForest)"}],
        "categories": categories, "images": images, "annotations": annotations,
    }


def write_split(folder: Path, tiles: Sequence[Tile]) -> None:
    """JPEGs first, the annotation file last (atomically), so a half-written split does not look done."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in tiles:
        t.source.image.crop(t.window).save(folder / t.file_name, quality=JPEG_QUALITY)
    tmp = folder / (ANN_FILE + ".tmp")
    tmp.write_text(json.dumps(coco_json(tiles)))
    os.replace(tmp, folder / ANN_FILE)


def clear_split(folder: Path) -> None:
    """Remove what an earlier run wrote (its JPEGs and annotations), so no stale tile lingers."""
    if folder.is_dir():
        for path in list(folder.glob("*.jpg")) + [folder / ANN_FILE]:
            path.unlink(missing_ok=True)


def describe(split: str, tiles: Sequence[Tile]) -> str:
    boxes = np.concatenate([t.boxes for t in tiles]) if tiles else np.zeros((0, 4))
    sizes = sorted({(t.window[2] - t.window[0], t.window[3] - t.window[1]) for t in tiles})
    text = (f"{split}: {len(tiles)} images ({', '.join(f'{w}x{h}' for w, h in sizes)}), {len(boxes)} boxes, "
            f"{sum(len(t.boxes) == 0 for t in tiles)} images without boxes")
    if len(boxes):
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        text += (f"; box width min/median/max {w.min():.0f}/{np.median(w):.0f}/{w.max():.0f} px, "
                 f"height {h.min():.0f}/{np.median(h):.0f}/{h.max():.0f} px")
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="datasets/aerial", help="output folder (default: datasets/aerial)")
    parser.add_argument("--tile", type=int, default=320, help="tile side in pixels (default: 320)")
    parser.add_argument("--overlap", type=float, default=0.5,
                        help="least overlap of neighbouring training tiles (default: 0.25)")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the order of images in each split")
    parser.add_argument("--wheel-dir", help=f"folder holding {PACKAGE}-{VERSION}-*.whl (default: download it)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the output exists")
    args = parser.parse_args(argv)
    if args.tile < 32 or not 0.0 <= args.overlap < 0.9:
        parser.error("--tile must be at least 32 and --overlap in [0, 0.9)")
    out = Path(args.out)
    if not args.force and all((out / split / ANN_FILE).is_file() for split in SPLITS):
        print(f"{out} already has {' and '.join(f'{s}/{ANN_FILE}' for s in SPLITS)}; nothing to do "
              f"(--force rebuilds it)")
        return
    start = time.perf_counter()
    wheel = get_wheel(args.wheel_dir)
    print(f"reading {wheel}", flush=True)
    tiles = make_tiles(read_sources(wheel), args.tile, args.overlap)
    rng = np.random.default_rng(args.seed)
    for split in SPLITS:
        order = rng.permutation(len(tiles[split]))
        tiles[split] = [tiles[split][i] for i in order]
        clear_split(out / split)
        write_split(out / split, tiles[split])
        print(describe(split, tiles[split]))
    print(f"wrote {len(tiles['train'])} train + {len(tiles['valid'])} valid images to {out} "
          f"in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
