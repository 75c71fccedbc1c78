"""Training pipeline throughput when images are decoded from their files (no cache), at 640 px.

``python scripts/benchmark.py files [--images 20000] [--size 640] [--batches 10] [--threads N] [--keep DIR]``

Writes a synthetic COCO data set in plain folders (``--images`` JPEGs of 640x480, quality 90, 1-6
boxes each; about 35 KB per image; no TFRecords) into a temporary folder (or ``--keep DIR``), builds
the stage-1 (Mosaic: four decodes per sample) and stage-2 pipelines of the ``nano`` config with
``augment.cache_images=false`` (:class:`~rtmdet_keras.data.cache.FileImages`), and times a number of
batches after a warm-up. It reports wall images/s, the process's CPU time per image (all threads;
what the other jobs on a shared machine do not change) and, for comparison, the CPU time of one
JPEG decode alone.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from rtmdet_keras.config import load_config  # noqa: E402
from rtmdet_keras.data.pipeline import build_train_pipeline  # noqa: E402


def write_folder_set(root: Path, n: int, seed: int = 0, wh=(640, 480)) -> Path:
    """``root/train/*.jpg`` and ``root/train/_annotations.coco.json`` (classes a, b)."""
    rng = np.random.default_rng(seed)
    split = root / "train"
    split.mkdir(parents=True, exist_ok=True)
    w, h = wh
    base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    images, annotations = [], []
    for i in range(n):
        # A smooth background (a shifted noise field, upscaled) with filled boxes: JPEG sizes of photos.
        canvas = Image.fromarray(np.roll(base, (i * 7) % (h // 8), axis=0)).resize((w, h), Image.BILINEAR)
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(1, 7))):
            bw, bh = rng.integers(20, 200, 2)
            x, y = rng.integers(0, w - bw), rng.integers(0, h - bh)
            draw.rectangle([x, y, x + bw, y + bh], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(rng.integers(1, 3)),
                                "bbox": [int(x), int(y), int(bw), int(bh)], "area": int(bw * bh), "iscrowd": 0})
        name = f"{i:06d}.jpg"
        canvas.save(split / name, quality=90)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    (split / "_annotations.coco.json").write_text(json.dumps(coco))
    return root


def _time(dataset, warmup: int, batches: int):
    it = iter(dataset)
    for _ in range(warmup):
        next(it)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        images, _ = next(it)
    _ = images.numpy()
    return time.perf_counter() - start, time.process_time() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="tf.data private thread pool (0: TensorFlow's default)")
    parser.add_argument("--keep", default=None, help="write the data set here and keep it (reused when present)")
    args = parser.parse_args(argv)
    from rtmdet_keras.data import load_split

    tmp = None if args.keep else tempfile.TemporaryDirectory()
    root = Path(args.keep or tmp.name)
    t0 = time.perf_counter()
    if not (root / "train" / "_annotations.coco.json").exists():
        write_folder_set(root, args.images)
    size_mb = sum(p.stat().st_size for p in (root / "train").glob("*.jpg")) / 2**20
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs visible; {args.images} JPEGs of 640x480 "
          f"({size_mb:.0f} MB, {time.perf_counter() - t0:.0f} s to write), batch {args.batch_size}, "
          f"{args.batches} batches after {args.warmup}, threads={args.threads or 'default'}")
    cfg = load_config("nano", [f"data_root={root}", f"imgsz=({args.size},{args.size})", f"batch_size={args.batch_size}",
                               "augment.cache_images=false", "train_ann_file=train/_annotations.coco.json",
                               "train_img_prefix=train/"])
    train = load_split(cfg, "train")
    # One decode alone, for comparison (PIL, as FileImages does it).
    from rtmdet_keras.data.images import load_image

    paths = [r.path for r in train.records[:50]]
    cpu = time.process_time()
    for p in paths:
        load_image(p)
    decode_ms = 1000 * (time.process_time() - cpu) / len(paths)
    print(f"one 640x480 JPEG decode: {decode_ms:.1f} CPU ms")
    print(f"{'size':>5} {'stage':>5} | {'images/s':>9} | {'CPU ms/image':>12} | {'images per CPU-s':>16}")
    for stage in (1, 2):
        pipe = build_train_pipeline(train, cfg, stage=stage, seed=0)
        assert not pipe.cached
        ds = pipe.dataset
        if args.threads:
            opts = tf.data.Options()
            opts.threading.private_threadpool_size = args.threads
            ds = ds.with_options(opts)
        seconds, cpu = _time(ds, args.warmup, args.batches)
        n = args.batches * args.batch_size
        print(f"{args.size:>5} {stage:>5} | {n / seconds:>9.1f} | {1000 * cpu / n:>12.1f} | {n / cpu:>16.1f}", flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
