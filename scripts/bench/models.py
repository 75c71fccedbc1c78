"""Parameters, GFLOPs and Keras forward latency of every preset.

``python scripts/benchmark.py models [--presets nano,tiny,...] [--num-classes 80] [--repeats 20]
[--threads 0] [--markdown]``

Per preset: trainable parameters (mmdetection's convention), GFLOPs = conv/dense multiply-accumulates
(mmdetection's published convention) at 192x192 and 640x640, and the latency of one forward pass of
a single 192x192 image through the Keras 3 model (``training=False``) inside a ``tf.function``
(traced once, two warm-up calls, then the median and minimum of ``--repeats`` calls, outputs copied to
NumPy; the presets take turns so that other processes' load hits all alike). Weights are random:
latency does not depend on them.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

PRESETS = ["nano", "nano_relu", "tiny", "s", "m", "l", "x", "mnv4"]  # nano_relu_q = nano_relu


def _forward_fn(model, size):
    import tensorflow as tf

    @tf.function(autograph=False)
    def forward(x):
        return model(x, training=False)

    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32))
    return lambda: tf.nest.map_structure(lambda t: t.numpy(), forward(x))


def measure_static(preset, num_classes):
    """Parameters and GFLOPs at 192 and 640 (models built without running initialisers)."""
    import keras

    from rtmdet_keras import load_config
    from rtmdet_keras.models import build_model
    from rtmdet_keras.models.summary import count_macs, count_parameters

    row = {"preset": preset}
    for size in (192, 640):
        with keras.StatelessScope():  # shapes only: skip the initialisers
            model = build_model(load_config(preset, {"num_classes": num_classes, "imgsz": [size, size]}))
        row[f"gflops_{size}"] = count_macs(model)["total"] / 1e9
        if size == 640:
            row["gflops_640_mmcv"] = count_macs(model, "mmcv")["total"] / 1e9
        params = count_parameters(model)
        row.update(params=params["total"], backbone=params["backbone"], neck=params["neck"], head=params["head"])
        keras.backend.clear_session()
        gc.collect()
    return row


def measure_latency(presets, num_classes, repeats, size=192):
    """{preset: (median ms, min ms)} of one forward pass of a batch of 1. The presets take turns
    (round robin over ``repeats`` rounds) so that load from other processes hits all of them alike."""
    from rtmdet_keras import load_config
    from rtmdet_keras.models import build_model

    forwards = {}
    for preset in presets:
        model = build_model(load_config(preset, {"num_classes": num_classes, "imgsz": [size, size]}))
        forwards[preset] = _forward_fn(model, size)
        for _ in range(3):  # trace + warm-up
            forwards[preset]()
    times = {preset: [] for preset in presets}
    for _ in range(repeats):
        for preset, run in forwards.items():
            t0 = time.perf_counter()
            run()
            times[preset].append((time.perf_counter() - t0) * 1000.0)
    return {p: (statistics.median(t), min(t)) for p, t in times.items()}


def format_table(rows, latency=True):
    head = "| preset | parameters | backbone / neck / head | GFLOPs 192 | GFLOPs 640 | (mmcv-style 640) |"
    rule = "|---|---|---|---|---|---|"
    if latency:
        head += " forward 192, batch 1 (ms, median / min) |"
        rule += "---|"
    lines = [head, rule]
    for r in rows:
        line = (f"| {r['preset']} | {r['params']:,d} | {r['backbone']:,d} / {r['neck']:,d} / {r['head']:,d} | "
                f"{r['gflops_192']:.3f} | {r['gflops_640']:.3f} | {r['gflops_640_mmcv']:.3f} |")
        if latency:
            line += f" {r['median_ms']:.1f} / {r['min_ms']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated preset names")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0 = TF default)")
    parser.add_argument("--no-latency", action="store_true", help="parameters and GFLOPs only")
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one tf.function per preset is intended, not "retracing"
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    rows = [measure_static(preset, args.num_classes) for preset in presets]
    if not args.no_latency:
        latency = measure_latency(presets, args.num_classes, args.repeats)
        for row in rows:
            row["median_ms"], row["min_ms"] = latency[row["preset"]]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.num_classes} classes; GFLOPs = conv/dense multiply-accumulates (x2 for FLOPs); "
          f"latency: Keras 3 tf.function, {args.repeats} round-robin runs after warm-up, "
          f"{os.cpu_count()} CPU cores, load average {load:.1f} at the end")
    print(format_table(rows, latency=not args.no_latency))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
