"""Images/s of the training pipelines (stage 1 and stage 2) from the in-memory image cache.

``python scripts/benchmark.py data [--batches 20] [--sizes 192 640] [--batch-size 32] [--threads N]``

Generates the demo data set (``rtmdet_keras.data.demo``, 240 training images of 192-320 px) in a
temporary folder, builds each pipeline with the ``nano`` config (Mosaic, HSV, flip; MixUp on as
well with ``--mixup``), lets it warm up (tracing, cache fill, prefetch) for a few batches, then
times a fixed number of batches. ``--threads 1`` runs tf.data on a private pool of one thread, to
see what one core delivers while the other trains.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from rtmdet_keras.config import load_config  # noqa: E402
from rtmdet_keras.data.demo import make_demo_dataset  # noqa: E402
from rtmdet_keras.data.pipeline import build_train_pipeline  # noqa: E402


def _load_demo(root):
    from rtmdet_keras.data import load_split

    cfg = load_config("nano", [f"data_root={root}"])
    return load_split(cfg, "train")


def _time(dataset, warmup: int, batches: int):
    """(wall seconds, CPU seconds of this process, all threads) for ``batches`` batches."""
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
    parser.add_argument("--batches", type=int, default=20, help="timed batches per case")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 640])
    parser.add_argument("--threads", type=int, default=0, help="tf.data private thread pool (0: TensorFlow's default)")
    parser.add_argument("--mixup", action="store_true", help="stage 1 with MixUp too")
    args = parser.parse_args(argv)

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs visible, batch {args.batch_size}, "
          f"{args.batches} batches after {args.warmup} warm-up, threads={args.threads or 'default'}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_demo_dataset(tmp, seed=0)
        train = _load_demo(tmp)
        print(f"demo data set: {len(train)} training images ({time.perf_counter() - t0:.1f} s to generate and read)")
        print(f"{'size':>5} {'stage':>5} | {'images/s':>9} | {'ms/batch':>9} | {'CPU ms/image':>12} | "
              f"{'cache MB':>8} | {'build s':>7}")
        for size in args.sizes:
            overrides = [f"imgsz=({size},{size})", f"batch_size={args.batch_size}"]
            if args.mixup:
                overrides.append("augment.mixup=true")
            cfg = load_config("nano", overrides)
            for stage in (1, 2):
                t0 = time.perf_counter()
                pipe = build_train_pipeline(train, cfg, stage=stage, seed=0)
                build = time.perf_counter() - t0
                ds = pipe.dataset
                if args.threads:
                    opts = tf.data.Options()
                    opts.threading.private_threadpool_size = args.threads
                    ds = ds.with_options(opts)
                seconds, cpu = _time(ds, args.warmup, args.batches)
                n = args.batches * args.batch_size
                print(f"{size:>5} {stage:>5} | {n / seconds:>9.0f} | {1000 * seconds / args.batches:>9.1f} | "
                      f"{1000 * cpu / n:>12.2f} | {pipe.cache_bytes / 2**20:>8.0f} | {build:>7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
